"""What is in this box now: NVML + psutil -> Snapshot, and saved snapshots / nvidia-smi captures back.

`take_snapshot()` probes live (bounded by a timeout); `load_snapshot(path)` reads a gpufit snapshot JSON, an
`nvidia-smi -q -x` XML capture, an `nvidia-smi --query-gpu --format=csv` table or an nvidia_gpu_exporter
capture bundle, detected by content; `save_snapshot()` writes JSON atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from ..errors import SnapshotError
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


def load_snapshot(path) -> Snapshot:
    """Read a snapshot file, detecting its kind by content. Anything else -> SnapshotError (exit 6)."""
    p = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise SnapshotError(p, f"cannot read: {e.strerror or e}") from None
    text = raw.decode("utf-8", "replace").lstrip("\ufeff")
    head = text.lstrip()[:4096]
    if head.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SnapshotError(p, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
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


def save_snapshot(snapshot: Snapshot, path) -> None:
    """Write the snapshot JSON atomically: a temp file in the same folder, fsync, os.replace."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    data = (snapshot.to_json() + "\n").encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise SnapshotError(str(path), f"cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise SnapshotError(str(path), f"cannot write: {e.strerror or e}") from None
        raise
    try:  # make the rename itself durable where the platform allows opening a folder
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
