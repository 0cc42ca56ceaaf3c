"""What is in this box now: NVML + psutil -> Snapshot, and saved snapshots / nvidia-smi captures back.

`take_snapshot()` probes live (bounded by a timeout); `load_snapshot(path)` reads a gpufit snapshot JSON, an
`nvidia-smi -q -x` XML capture, an `nvidia-smi --query-gpu --format=csv` table or an nvidia_gpu_exporter
capture bundle, detected by content; `save_snapshot()` writes JSON atomically.
"""

from __future__ import annotations

import dataclasses
import json

from ..errors import SnapshotError
from ..units import MIB
from .snapshot import SCHEMA, GpuState, HostInfo, Snapshot

__all__ = ["take_snapshot", "load_snapshot", "save_snapshot", "Snapshot", "GpuState", "HostInfo", "SCHEMA"]


def take_snapshot(lib=None, timeout_s: float = 10.0) -> Snapshot:
    """Probe this machine now. Raises ProbeError (exit 5) when NVML cannot be used, sees no GPU, or does
    not answer within `timeout_s`. `lib` is the pynvml module (tests pass a fake)."""
    from . import host as host_mod
    from .nvml import collect

    host = host_mod.host_info()
    read = collect(lib, timeout_s, host.ram_total_bytes, host.ram_available_bytes, host_mod.process_name)
    host = dataclasses.replace(
        host,
        driver_version=read.driver_version,
        cuda_driver_version=read.cuda_driver_version,
        nvml_version=read.nvml_version,
    )
    return Snapshot(host=host, gpus=read.gpus, source="nvml")


# the largest real capture we know (8 x V100, nvidia-smi -q -x) is 228 kB; a bundle with load phases ~180 kB
MAX_SNAPSHOT_BYTES = 64 * MIB


def load_snapshot(path) -> Snapshot:
    """Read a snapshot file, detecting its kind by content. Anything else -> SnapshotError (exit 6): a
    missing, unreadable or oversized file, a folder, a device, a FIFO, malformed content, or impossible
    memory figures (negative, free above total)."""
    from ..fsutil import read_data_file

    p = str(path)
    raw = read_data_file(path, MAX_SNAPSHOT_BYTES, SnapshotError, "snapshot")
    snap = _parse_snapshot(raw, p)
    check_memory(snap, p)
    return snap


def _parse_snapshot(raw: bytes, p: str) -> Snapshot:
    text = raw.decode("utf-8", "replace").lstrip("\ufeff")
    head = text.lstrip()[:4096]
    if head.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SnapshotError(p, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:
            raise SnapshotError(p, "invalid JSON: nested too deep for a snapshot") from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise SnapshotError(p, f"invalid JSON: {e}") from None
        snap = Snapshot.from_dict(data, p)
        return dataclasses.replace(snap, source=f"snapshot:{p}")
    if head.startswith("<") and "nvidia_smi_log" in head:
        from .smi_xml import parse_xml

        return parse_xml(raw, p)
    from . import smi_text

    if smi_text.BUNDLE_MARK in head:
        return smi_text.parse_bundle(text, p)
    if smi_text.looks_like_query_csv(head):
        return smi_text.parse_query_csv(text, p)
    if head.startswith("<"):
        from .smi_xml import parse_xml

        return parse_xml(raw, p)  # names what is wrong (invalid XML, another root element)
    raise SnapshotError(p, "is neither a gpufit snapshot nor nvidia-smi -q -x output")


def check_memory(snap: Snapshot, path: str) -> None:
    """Memory figures a GPU cannot have mean a corrupt or hand-edited file: say which GPU and field."""
    for i, g in enumerate(snap.gpus):
        mems = [(f"gpus[{i}].memory", g.memory)]
        mems += [(f"gpus[{i}].mig.devices[{j}].memory", m.memory) for j, m in enumerate(g.mig.devices)]
        for where, m in mems:
            for name in ("total", "free", "used", "reserved"):
                v = getattr(m, name)
                if v is not None and v < 0:
                    raise SnapshotError(path, f"negative memory ({v} bytes)", f"{where}.{name}")
            if m.total and m.free is not None and m.free > m.total:
                raise SnapshotError(path, f"free memory ({m.free} bytes) exceeds total ({m.total} bytes)",
                                    f"{where}.free")
            if m.total and m.used is not None and m.used > m.total:
                raise SnapshotError(path, f"used memory ({m.used} bytes) exceeds total ({m.total} bytes)",
                                    f"{where}.used")


def save_snapshot(snapshot: Snapshot, path) -> None:
    """Write the snapshot JSON atomically (fsutil.write_atomic: WriteError, exit 2, if it cannot be)."""
    from ..fsutil import write_atomic

    write_atomic(path, snapshot.to_json() + "\n")
