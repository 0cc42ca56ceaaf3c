"""Read text captures of nvidia-smi: a bare `--query-gpu ... --format=csv` table, or a capture bundle.

A bundle (the layout of utkuozdemir/nvidia_gpu_exporter's `internal/captures/*.txt`) is a series of
sections, each headed by a `####` rule, a `# <phase> :: <what>` title, an optional `# $ command` line and
another rule. From it gpufit reads: the first `query-gpu (csv...)` section (the idle one) for the GPU fields;
`list (-L)` for MIG device profiles and UUIDs; the MIG Device blocks of the matching `query (-q)` section
for MIG memory and instance ids; `query-compute-apps` for processes; `version` for CUDA / NVML versions.
"""

from __future__ import annotations

import csv
import io
import re

from ..errors import SnapshotError
from .nvml import THROTTLE_REASON_BITS
from .smi_xml import Reader, pci_device_id
from .snapshot import (
    Clocks,
    Ecc,
    EccCounts,
    GpuState,
    HostInfo,
    Memory,
    Mig,
    MigDevice,
    Pcie,
    Process,
    Snapshot,
    Utilization,
)

_RULE = re.compile(r"^#{20,}\s*$")
BUNDLE_MARK = "# nvidia_gpu_exporter GPU capture"


def looks_like_query_csv(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    cols = [c.strip().split(" [")[0] for c in first.split(",")]
    return "name" in cols and ("uuid" in cols or "pci.bus_id" in cols) and len(cols) >= 3


def sections(text: str) -> list[tuple[str, str]]:
    """[(title, body)] of a bundle, in order; title without the leading '# '."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        if _RULE.match(lines[i]) and i + 1 < len(lines) and lines[i + 1].startswith("# "):
            j = i + 1
            header = []
            while j < len(lines) and not _RULE.match(lines[j]):
                header.append(lines[j])
                j += 1
            title = header[0][2:].strip()
            out.append((title, []))
            i = j + 1
            continue
        if out:
            out[-1][1].append(lines[i])
        i += 1
    return [(t, "\n".join(b)) for t, b in out]


def _section(secs, *needles) -> str | None:
    for title, body in secs:
        if all(n in title for n in needles):
            return body
    return None


def _rows(body: str, path: str = "<csv>") -> list[dict[str, str]]:
    """CSV with a header line; header names lose their ' [unit]'; values keep their units."""
    lines = [ln for ln in body.strip().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return []
    reader = csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True)
    try:
        rows = list(reader)
    except csv.Error as e:  # a field past csv's size limit, a NUL byte
        raise SnapshotError(path, f"not a readable nvidia-smi CSV table: {e}") from None
    header = [h.strip().split(" [")[0] for h in rows[0]]
    return [dict(zip(header, (v.strip() for v in row))) for row in rows[1:] if len(row) == len(header)]


def parse_query_csv(text: str, path: str) -> Snapshot:
    rows = _rows(text, path)
    if not rows:
        raise SnapshotError(path, "nvidia-smi --query-gpu CSV has a header but no GPU rows")
    gpus = tuple(_gpu_from_row(i, row) for i, row in enumerate(rows))
    host = HostInfo(driver_version=_opt(rows[0].get("driver_version")),
                    taken_at=csv_timestamp(rows[0].get("timestamp")))
    return Snapshot(host=host, gpus=gpus, source=f"nvidia-smi-csv:{path}")


def parse_bundle(text: str, path: str) -> Snapshot:
    secs = sections(text)
    body = _section(secs, "idle ::", "query-gpu") or _section(secs, "query-gpu (csv")
    if body is None:
        raise SnapshotError(path, "capture bundle has no `nvidia-smi --query-gpu --format=csv` section")
    rows = _rows(body, path)
    if not rows:
        raise SnapshotError(path, "the --query-gpu section of the capture bundle holds no GPU row")
    mig_names = _mig_list(_section(secs, "list (-L)") or "")
    mig_blocks = _mig_blocks(_section(secs, "idle ::", "query (-q)") or _section(secs, "query (-q)") or "")
    procs = _rows(_section(secs, "idle ::", "query-compute-apps") or "", path)
    gpus = []
    for i, row in enumerate(rows):
        g = _gpu_from_row(i, row)
        if g.mig.enabled:
            g = _with_mig(g, mig_names.get(g.index, []), mig_blocks.get((g.pci_bus_id or "").upper(), []))
        mine = [p for p in procs if p.get("gpu_bus_id") == g.pci_bus_id or p.get("gpu_uuid") == g.uuid]
        if mine:
            g = _replace(g, processes=tuple(_proc(p) for p in mine))
        gpus.append(g)
    version = _section(secs, "version") or ""
    host = HostInfo(
        driver_version=_opt(rows[0].get("driver_version")),
        cuda_driver_version=_kv(version, "CUDA UMD version") or _kv(version, "CUDA Version"),
        nvml_version=_kv(version, "NVML version"),
        taken_at=_kv(text[:2000], "collected_at") or csv_timestamp(rows[0].get("timestamp")),
    )
    return Snapshot(host=host, gpus=tuple(gpus), source=f"nvidia-smi-bundle:{path}")


def _replace(g, **kw):
    import dataclasses

    return dataclasses.replace(g, **kw)


def _kv(text: str, key: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(key)}\s*:\s*(\S.*?)\s*$", text, re.M | re.I)
    value = m.group(1).split(" [")[0] if m else None
    return None if value is None or value.lower().startswith("deprecated") else value


def csv_timestamp(raw) -> str | None:
    """nvidia-smi's `timestamp` query field, '2024/05/14 10:21:33.123' -> '2024-05-14T10:21:33.123' (the
    captured box's local time: no zone). Anything else is kept as written; absent or N/A -> None."""
    v = _opt(raw)
    if v is None:
        return None
    m = re.fullmatch(r"(\d{4})/(\d{2})/(\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)", v)
    return f"{m[1]}-{m[2]}-{m[3]}T{m[4]}" if m else v


def _opt(v):
    r = Reader()
    return r.text("x", v)


def _gpu_from_row(i: int, row: dict[str, str]) -> GpuState:
    r = Reader()
    get = row.get
    idx = r.number("index", get("index"), int) if "index" in row else None
    mask = get("clocks_event_reasons.active") or get("clocks_throttle_reasons.active")
    throttle = ()
    if mask and re.fullmatch(r"0x[0-9A-Fa-f]+", mask.strip()):
        m = int(mask, 16)
        throttle = tuple(n for bit, n in THROTTLE_REASON_BITS if m & bit)
    mem_total = r.bytes("memory.total", get("memory.total"))
    mem_free = r.bytes("memory.free", get("memory.free"))
    mem_used = r.bytes("memory.used", get("memory.used"))
    reserved = get("memory.reserved")
    mem_reserved = r.bytes("memory.reserved", reserved)
    if mem_total is None and None not in (mem_free, mem_used, mem_reserved):
        # NVML's v2 memory info splits total into free + used + reserved (nvmlMemory_v2_t); each is printed
        # rounded to MiB, so the sum is within 2 MiB of the total (checked on every XML capture in
        # tests/fixtures/nvidia-smi that prints all four, e.g. A100-SXM4 81920 vs 81918, RTX 3090 24576 vs 24577)
        mem_total = mem_free + mem_used + mem_reserved
        r.errors.pop("memory.total", None)
    draw = get("power.draw.average") or get("power.draw")
    if draw is None or "N/A" in draw:
        draw = get("power.draw") or get("power.draw.instant")
    ecc_mode = get("ecc.mode.current")
    e = Reader()
    ecc = Ecc(
        enabled=r.flag("ecc", ecc_mode) if ecc_mode is not None else None,
        volatile=EccCounts(
            corrected=e.number("x", get("ecc.errors.corrected.volatile.total"), int),
            uncorrected=e.number("x", get("ecc.errors.uncorrected.volatile.total"), int),
        ),
        aggregate=EccCounts(
            corrected=e.number("x", get("ecc.errors.corrected.aggregate.total"), int),
            uncorrected=e.number("x", get("ecc.errors.uncorrected.aggregate.total"), int),
        ),
        retired_pages_single=e.number("x", get("retired_pages.single_bit_ecc.count"), int),
        retired_pages_double=e.number("x", get("retired_pages.double_bit.count"), int),
        retired_pages_pending=e.flag("x", get("retired_pages.pending")),
        remapped_rows_correctable=e.number("x", get("remapped_rows.correctable"), int),
        remapped_rows_uncorrectable=e.number("x", get("remapped_rows.uncorrectable"), int),
        remapped_rows_pending=e.flag("x", get("remapped_rows.pending")),
        remapped_rows_failure=e.flag("x", get("remapped_rows.failure")),
    )
    mig = get("mig.mode.current")
    return GpuState(
        index=idx if idx is not None else i,
        name=r.text("name", get("name")),
        uuid=r.text("uuid", get("uuid")),
        serial=r.text("serial", get("serial")),
        pci_bus_id=r.text("pci_bus_id", get("pci.bus_id")),
        pci_device_id=pci_device_id(r, get("pci.device_id")),
        memory=Memory(total=mem_total, free=mem_free, used=mem_used, reserved=mem_reserved),
        clocks_mhz=Clocks(
            sm=r.number("clocks_mhz.sm", get("clocks.current.sm") or get("clocks.sm"), int),
            mem=r.number("clocks_mhz.mem", get("clocks.current.memory") or get("clocks.mem"), int),
            sm_max=r.number("clocks_mhz.sm_max", get("clocks.max.sm"), int),
            mem_max=r.number("clocks_mhz.mem_max", get("clocks.max.memory"), int),
        ),
        temperature_c=r.number("temperature_c", get("temperature.gpu"), int),
        power_w=r.number("power_w", draw),
        power_limit_w=r.number("power_limit_w", get("enforced.power.limit") or get("power.limit")),
        utilization=Utilization(
            gpu=r.number("utilization.gpu", get("utilization.gpu"), int),
            memory=r.number("utilization.memory", get("utilization.memory"), int),
        ),
        compute_capability=r.text("compute_capability", get("compute_cap")),
        pcie=Pcie(
            gen=r.number("pcie.gen", get("pcie.link.gen.gpucurrent") or get("pcie.link.gen.current"), int),
            width=r.number("pcie.width", get("pcie.link.width.current"), int),
            gen_max=r.number("pcie.gen_max", get("pcie.link.gen.max"), int),
            width_max=r.number("pcie.width_max", get("pcie.link.width.max"), int),
        ),
        mig=Mig(enabled=r.flag("mig", mig)) if mig is not None and "N/A" not in mig else Mig(),
        ecc=ecc,
        throttle_reasons=throttle,
        fan_percent=r.number("fan_percent", get("fan.speed"), int),
        performance_state=r.text("performance_state", get("pstate")),
        errors=r.errors,
    )


def _proc(p: dict[str, str]) -> Process:
    r = Reader()
    return Process(
        pid=r.number("pid", p.get("pid"), int) or 0,
        name=r.text("name", p.get("process_name")),
        used_bytes=r.bytes("used", p.get("used_gpu_memory")),
        kind="compute",
    )


_L_GPU = re.compile(r"^GPU (\d+):")
_L_MIG = re.compile(r"^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s*\(UUID:\s*(MIG-[^)\s]+)\)")


def _mig_list(body: str) -> dict[int, list[tuple[int, str, str]]]:
    """`nvidia-smi -L` -> {gpu index: [(mig index, profile, uuid)]}."""
    out: dict[int, list] = {}
    gpu = None
    for line in body.splitlines():
        m = _L_GPU.match(line)
        if m:
            gpu = int(m.group(1))
            out[gpu] = []
            continue
        m = _L_MIG.match(line)
        if m and gpu is not None:
            out[gpu].append((int(m.group(2)), m.group(1), m.group(3)))
    return out


def _mig_blocks(body: str) -> dict[str, list[dict[str, str]]]:
    """The 'MIG Device' blocks of `nvidia-smi -q` text per GPU bus id, flattened to {key: value}
    (the FB memory keys prefixed 'fb.')."""
    out: dict[str, list[dict[str, str]]] = {}
    blocks: list[dict[str, str]] = []
    cur = None
    sub = ""
    for line in body.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 0 and stripped.startswith("GPU "):
            blocks = out.setdefault(stripped[4:].strip().upper(), [])
            cur = None
            continue
        if stripped == "MIG Device" and indent == 4:
            cur = {}
            blocks.append(cur)
            continue
        if cur is None:
            continue
        if indent <= 4 and stripped:
            cur = None  # the next section of this GPU
            continue
        key, sep, value = stripped.partition(":")
        if not sep:
            sub = stripped  # a sub-block title: "Shared FB Memory Usage", "Device Attributes", ...
            continue
        name = key.strip()
        if sub.endswith("FB Memory Usage"):
            name = "fb." + name
        cur.setdefault(name, value.strip())
    return out


def _with_mig(g: GpuState, listed, blocks) -> GpuState:
    devices = []
    for b in blocks:
        r = Reader()
        idx = r.number("index", b.get("Index"), int)
        if idx is None:
            continue
        name = next(((p, u) for i, p, u in listed if i == idx), (None, None))
        devices.append(MigDevice(
            index=idx,
            uuid=name[1],
            profile=name[0],
            gpu_instance_id=r.number("gi", b.get("GPU Instance ID"), int),
            compute_instance_id=r.number("ci", b.get("Compute Instance ID"), int),
            multiprocessor_count=r.number("sm", b.get("Multiprocessor count"), int),
            memory=Memory(
                total=r.bytes("t", b.get("fb.Total")),
                free=r.bytes("f", b.get("fb.Free")),
                used=r.bytes("u", b.get("fb.Used")),
                reserved=r.bytes("r", b.get("fb.Reserved")) if "fb.Reserved" in b else None,
            ),
        ))
    if not devices:  # no -q blocks: at least the -L list
        devices = [MigDevice(index=i, uuid=u, profile=p) for i, p, u in listed]
    return _replace(g, mig=Mig(enabled=True, devices=tuple(devices)))


__all__ = ["parse_bundle", "parse_query_csv", "looks_like_query_csv", "sections", "BUNDLE_MARK"]
