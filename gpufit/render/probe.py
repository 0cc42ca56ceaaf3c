"""`gpufit probe` as text: one block per GPU, then the host. Sizes in GiB (2^30 bytes); '-' = not reported."""

from __future__ import annotations

from ..probe.snapshot import GpuState, Memory, Snapshot
from ..units import GIB

NA = "-"


def _gib(b) -> str:
    return NA if b is None else f"{b / GIB:.1f}"


def _v(x, unit="", fmt="{}") -> str:
    return NA if x is None else fmt.format(x) + unit


def _mem(m: Memory) -> str:
    s = f"{_gib(m.total)} total, {_gib(m.used)} used, {_gib(m.free)} free GiB"
    if m.reserved is not None:
        s += f" ({_gib(m.reserved)} reserved)"
    return s


def _gpu_block(g: GpuState, catalog) -> list[str]:
    spec = catalog.match_gpu(g.name, g.pci_device_id, g.memory.total) if catalog is not None else None
    match = spec.key if spec else "not in catalog"
    head = f"GPU {g.index}  {g.name or '?'}  [{match}]"
    if not g.available:
        head += "  UNAVAILABLE"
    lines = [head]
    row = lines.append
    if g.uuid or g.pci_bus_id:
        row(f"  id          {g.uuid or NA}  pci {g.pci_bus_id or NA}  device {g.pci_device_id or NA}")
    mem = _mem(g.memory)
    if g.unified_memory:
        mem += "  (unified memory: host RAM)"
    row(f"  memory      {mem}")
    c = g.clocks_mhz
    row(f"  clocks      sm {_v(c.sm)}/{_v(c.sm_max)} MHz, mem {_v(c.mem)}/{_v(c.mem_max)} MHz (now/max)")
    power = f"{_v(g.power_w, ' W', '{:.0f}')} / {_v(g.power_limit_w, ' W', '{:.0f}')}"
    row(f"  state       {_v(g.temperature_c, ' C')}, power {power}, util gpu {_v(g.utilization.gpu, '%')} "
        f"mem {_v(g.utilization.memory, '%')}, fan {_v(g.fan_percent, '%')}, {g.performance_state or NA}")
    p = g.pcie
    row(f"  pcie        gen {_v(p.gen)}/{_v(p.gen_max)} x{_v(p.width)}/x{_v(p.width_max)} (now/max), "
        f"compute capability {g.compute_capability or NA}")
    if g.mig.enabled is not None:
        row(f"  mig         {'enabled' if g.mig.enabled else 'disabled'}"
            + (f", {len(g.mig.devices)} devices" if g.mig.enabled else ""))
        for m in g.mig.devices:
            ids = f"gi {_v(m.gpu_instance_id)} ci {_v(m.compute_instance_id)}"
            row(f"    {g.index}/{m.index}  {m.profile or '?':<12} {ids}  {_mem(m.memory)}  {m.uuid or ''}".rstrip())
    if g.nvlink:
        up = sum(1 for link in g.nvlink if link.up)
        row(f"  nvlink      {up}/{len(g.nvlink)} links up")
    if g.processes:
        row(f"  processes   {len(g.processes)}")
        for pr in g.processes:
            row(f"    {pr.pid:>8}  {pr.kind:<8}  {_gib(pr.used_bytes):>6} GiB  {pr.name or ''}".rstrip())
    e = g.ecc
    if e.enabled is not None:
        ecc = (f"{'on' if e.enabled else 'off'}; volatile {_v(e.volatile.corrected)} corrected / "
               f"{_v(e.volatile.uncorrected)} uncorrected, aggregate {_v(e.aggregate.corrected)} / "
               f"{_v(e.aggregate.uncorrected)}")
        if e.remapped_rows_correctable is not None or e.remapped_rows_uncorrectable is not None:
            ecc += f"; remapped rows {_v(e.remapped_rows_correctable)}/{_v(e.remapped_rows_uncorrectable)}"
            if e.remapped_rows_pending:
                ecc += " (remap pending: reset the GPU)"
        if e.retired_pages_single is not None or e.retired_pages_double is not None:
            ecc += f"; retired pages {_v(e.retired_pages_single)} sbe / {_v(e.retired_pages_double)} dbe"
        row(f"  ecc         {ecc}")
    if g.throttle_reasons:
        row(f"  throttle    {', '.join(g.throttle_reasons)}")
    if g.errors:
        shown = sorted(g.errors.items())
        row("  notes       " + "; ".join(f"{k}: {v}" for k, v in shown[:6])
            + (f"; … {len(shown) - 6} more (--json)" if len(shown) > 6 else ""))
    return lines


def snapshot_table(snapshot: Snapshot, catalog=None) -> str:
    """A readable report of the snapshot: one block per GPU, then the host."""
    out: list[str] = []
    for g in snapshot.gpus:
        out.extend(_gpu_block(g, catalog))
        out.append("")
    h = snapshot.host
    out.append(f"host        {h.hostname or NA}  {h.os or NA}")
    out.append(f"  cpu       {_v(h.cpu_count)} threads  {h.cpu_model or NA}")
    out.append(f"  ram       {_gib(h.ram_total_bytes)} total, {_gib(h.ram_available_bytes)} available GiB")
    out.append(f"  driver    {h.driver_version or NA}  cuda {h.cuda_driver_version or NA}  nvml {h.nvml_version or NA}")
    out.append(f"  source    {snapshot.source}  taken {h.taken_at or NA}")
    return "\n".join(out) + "\n"
