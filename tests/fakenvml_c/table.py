"""Turn an nvidia-smi capture (or a gpufit snapshot) into the device table the fake libnvidia-ml.so.1 serves.

The values come from gpufit's own snapshot readers (`gpufit.probe.load_snapshot`), so a capture reaches the
real pynvml as what the driver would have answered for that box. The rule: a value that is None in the
snapshot is left out of the table, and the fake answers NVML_ERROR_NOT_SUPPORTED for it; a GPU with
`available=False` is served as lost (NVML_ERROR_GPU_IS_LOST from every device call).

Why a data file read at nvmlInit (FAKENVML_TABLE) and not a generated C header: one compile of the library
serves every capture (and every fault case, by editing a few lines of the table), so the test session builds
the library twice (current and old driver) instead of once per capture.

    python tests/fakenvml_c/table.py CAPTURE [OUT]      # prints or writes the table
"""

from __future__ import annotations

import sys
from pathlib import Path

# nvml.h nvmlClocksEventReason* bits, by the names gpufit uses (gpufit.probe.nvml.THROTTLE_REASON_BITS is
# the reader's copy; kept apart so a wrong bit in one is caught by the other)
THROTTLE_BITS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clocks_setting": 0x100,
}
MAX_MIG_DEVICES = 7  # nvmlDeviceGetMaxMigDeviceCount on A100 / H100 / H200 (seven 1g slices)


def cuda_version_int(text: str | None) -> int | None:
    """'12.2' -> 12020, NVML's CUDA_VERSION encoding (major * 1000 + minor * 10)."""
    if not text:
        return None
    major, _, minor = text.partition(".")
    return int(major) * 1000 + int(minor or 0) * 10


def _line(out: list[str], key: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        value = int(value)
    text = str(value)
    if "\t" in text or "\n" in text:
        raise ValueError(f"{key}: a TAB or newline cannot be served: {text!r}")
    out.append(f"{key}\t{text}")


def _memory(out, m) -> None:
    _line(out, "memory.total", m.total)
    _line(out, "memory.free", m.free)
    _line(out, "memory.used", m.used)
    _line(out, "memory.reserved", m.reserved)


def table_for(snapshot) -> str:
    """The table text for a `gpufit.probe.Snapshot`."""
    h = snapshot.host
    out = [f"# fake NVML device table from {snapshot.source}"]
    _line(out, "driver_version", h.driver_version)
    _line(out, "nvml_version", h.nvml_version)
    _line(out, "cuda_driver_version", cuda_version_int(h.cuda_driver_version))
    for g in snapshot.gpus:
        out.append(f"gpu\t{g.index}")
        if not g.available:
            out.append("lost\t1")
        _line(out, "name", g.name)
        _line(out, "uuid", g.uuid)
        _line(out, "serial", g.serial)
        _line(out, "pci.bus_id", g.pci_bus_id)
        _line(out, "pci.device_id", int(g.pci_device_id, 16) if g.pci_device_id else None)
        _memory(out, g.memory)
        c = g.clocks_mhz
        _line(out, "clock.sm", c.sm)
        _line(out, "clock.mem", c.mem)
        _line(out, "clock_max.sm", c.sm_max)
        _line(out, "clock_max.mem", c.mem_max)
        _line(out, "temperature", g.temperature_c)
        _line(out, "power_mw", round(g.power_w * 1000) if g.power_w is not None else None)
        _line(out, "power_limit_mw", round(g.power_limit_w * 1000) if g.power_limit_w is not None else None)
        _line(out, "util.gpu", g.utilization.gpu)
        _line(out, "util.memory", g.utilization.memory)
        if g.compute_capability:
            major, minor = g.compute_capability.split(".")
            _line(out, "cc.major", int(major))
            _line(out, "cc.minor", int(minor))
        _line(out, "pcie.gen", g.pcie.gen)
        _line(out, "pcie.width", g.pcie.width)
        _line(out, "pcie.gen_max", g.pcie.gen_max)
        _line(out, "pcie.width_max", g.pcie.width_max)
        mask = 0
        for name in g.throttle_reasons:
            mask |= THROTTLE_BITS[name]
        _line(out, "throttle", f"0x{mask:x}")
        _line(out, "fan", g.fan_percent)
        _line(out, "pstate", int(g.performance_state[1:]) if g.performance_state else None)
        if g.nvlink:
            _line(out, "nvlink.count", len(g.nvlink))
            for link in g.nvlink:
                _line(out, f"nvlink.{link.link}.up", link.up)
                _line(out, f"nvlink.{link.link}.version", link.version)
        for p in g.processes:
            out.append(f"process.{p.kind}\t{p.pid} {p.used_bytes if p.used_bytes is not None else 'N/A'}")
        e = g.ecc
        _line(out, "ecc.mode", e.enabled)
        for scope in ("volatile", "aggregate"):
            counts = getattr(e, scope)
            _line(out, f"ecc.{scope}.corrected", counts.corrected)
            _line(out, f"ecc.{scope}.uncorrected", counts.uncorrected)
        _line(out, "remapped.correctable", e.remapped_rows_correctable)
        _line(out, "remapped.uncorrectable", e.remapped_rows_uncorrectable)
        _line(out, "remapped.pending", e.remapped_rows_pending)
        _line(out, "remapped.failure", e.remapped_rows_failure)
        _line(out, "retired.single", e.retired_pages_single)
        _line(out, "retired.double", e.retired_pages_double)
        _line(out, "retired.pending", e.retired_pages_pending)
        if g.mig.enabled is not None:
            _line(out, "mig.mode", g.mig.enabled)
            _line(out, "mig.max_count", max(MAX_MIG_DEVICES, len(g.mig.devices)))
        for d in g.mig.devices:
            out.append(f"mig\t{d.index}")
            # NVML names a MIG device "<parent> MIG <profile>"; gpufit reads the profile back from the name
            name = f"{g.name} MIG {d.profile}" if g.name and d.profile else g.name
            _line(out, "name", name)
            _line(out, "uuid", d.uuid)
            _memory(out, d.memory)
            _line(out, "gpu_instance_id", d.gpu_instance_id)
            _line(out, "compute_instance_id", d.compute_instance_id)
            _line(out, "multiprocessor_count", d.multiprocessor_count)
    return "\n".join(out) + "\n"


def table_for_capture(path) -> str:
    from gpufit.probe import load_snapshot

    return table_for(load_snapshot(path))


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    text = table_for_capture(argv[0])
    if len(argv) == 2:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
