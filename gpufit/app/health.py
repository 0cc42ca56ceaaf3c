"""Health checks over a Snapshot: pure functions, no I/O.

Each check is a `Check` {name, status, value, threshold, unit, message}. status is ok | warn | crit, or
"unknown" when the value is unsupported (None) — an unknown is never flagged and never raises the
overall status. `threshold` is always {"warn": x, "crit": y} (either may be null).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import Thresholds
from ..estimator.types import TextEnum
from ..probe.snapshot import GpuState, HostInfo, Snapshot



class Status(TextEnum):
    """A check's, a GPU's, a model's or a whole report's status (DESIGN.md: ok | warn | crit, and unknown
    for a reading the GPU does not give)."""
    OK = "ok"
    WARN = "warn"
    CRIT = "crit"
    UNKNOWN = "unknown"


OK, WARN, CRIT, UNKNOWN = Status.OK, Status.WARN, Status.CRIT, Status.UNKNOWN
STATUSES = tuple(Status)
_RANK = {UNKNOWN: -1, OK: 0, WARN: 1, CRIT: 2}
STATUS_VALUE = {OK: 0, WARN: 1, CRIT: 2}  # gpufit_*_health_status

# Throttle (clock event) reasons as the probe names them: NVML's nvmlClocksEventReason* / nvidia-smi's
# <clocks_event_reasons> children, lower snake case. hw_* reasons mean the board protected itself.
THERMAL_REASONS = {"sw_thermal_slowdown": WARN, "hw_thermal_slowdown": CRIT}
POWER_REASONS = {"sw_power_cap": WARN, "hw_power_brake_slowdown": CRIT, "hw_slowdown": CRIT}


@dataclass(frozen=True)
class Check:
    """One health check. `text` is its words where they hold no figure to format; a check whose words
    carry sizes gives them as `data` instead, and render/words.py words it (`message`)."""
    name: str
    status: Status
    value: object = None
    threshold: dict[str, Any] = field(default_factory=lambda: {"warn": None, "crit": None})
    unit: str | None = None
    text: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        from ..render.words import check_words

        return check_words(self)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": str(self.status), "value": self.value,
                "threshold": dict(self.threshold), "unit": self.unit, "message": self.message}


def worst(statuses: Iterable[Status]) -> Status:
    """The overall status of several checks; unknowns do not count, no checks at all is ok."""
    best = OK
    for s in statuses:
        if _RANK[s] > _RANK[best]:
            best = s
    return best


def _th(warn: object = None, crit: object = None) -> dict[str, Any]:
    return {"warn": warn, "crit": crit}


def _unknown(name: str, what: str, gpu: GpuState | None = None, key: str | None = None, unit: str | None = None,
             threshold: dict[str, Any] | None = None) -> Check:
    why = gpu.errors.get(key) if gpu is not None and key else None
    return Check(name, UNKNOWN, None, threshold or _th(), unit,
                 f"{what} not reported" + (f" ({why})" if why else " (unsupported on this GPU or driver)"))


def _level(value: float, warn: float | None, crit: float | None) -> Status:
    if crit is not None and value >= crit:
        return CRIT
    if warn is not None and value >= warn:
        return WARN
    return OK


# ---- per-GPU checks --------------------------------------------------------------------------------


def check_available(g: GpuState, t: Thresholds, live: bool = True) -> Check:
    if g.available:
        return Check("available", OK, True, _th(crit=False), None,
                     "GPU answers NVML" if live else "GPU was answering when the capture was taken")
    errs = "; ".join(f"{k}: {v}" for k, v in sorted(g.errors.items())) or "no detail"
    return Check("available", CRIT, False, _th(crit=False), None, f"GPU lost or erroring ({errs})")


def check_temperature(g: GpuState, t: Thresholds) -> Check:
    th = _th(t.temperature_warn_c, t.temperature_crit_c)
    if g.temperature_c is None:
        return _unknown("temperature", "temperature", g, "temperature_c", "celsius", th)
    s = _level(g.temperature_c, t.temperature_warn_c, t.temperature_crit_c)
    return Check("temperature", s, g.temperature_c, th, "celsius",
                 f"{g.temperature_c} C (warn at {t.temperature_warn_c:g}, crit at {t.temperature_crit_c:g})")


# reasons that only mean something under load: an idle GPU sits below its power cap's clocks on purpose
# (NVML nvmlClocksEventReasonSwPowerCap is set on idle boards whose clocks are parked; nvidia-smi shows
# sw_power_cap Active at P8 and 0 % utilisation in tests/fixtures/nvidia-smi/influxdata_telegraf__3090-v13.xml)
BUSY_ONLY_REASONS = {"sw_power_cap"}


def _throttle(name: str, what: str, table: dict[str, Status], g: GpuState, t: Thresholds) -> Check:
    if "throttle_reasons" in g.errors:
        return _unknown(name, "clock throttle reasons", g, "throttle_reasons")
    active = [r for r in g.throttle_reasons if r in table]
    busy = _busy(g, t)
    idle_only = [r for r in active if r in BUSY_ONLY_REASONS and not busy]
    judged = [r for r in active if r not in idle_only]
    s = worst(table[r] for r in judged)
    th = _th([r for r, v in table.items() if v == WARN], [r for r, v in table.items() if v == CRIT])
    msg = f"{what} throttling: {', '.join(judged)}" if judged else f"no {what} throttling"
    if idle_only:
        util = "unknown" if g.utilization.gpu is None else f"{g.utilization.gpu} %"
        msg += (f"; {', '.join(idle_only)} while not busy (utilization {util}, busy from "
                f"{t.busy_utilization_percent:g} %): not flagged")
    return Check(name, s, judged, th, None, msg)


def check_thermal_throttling(g: GpuState, t: Thresholds) -> Check:
    return _throttle("thermal_throttling", "thermal", THERMAL_REASONS, g, t)


def check_power_throttling(g: GpuState, t: Thresholds) -> Check:
    return _throttle("power_throttling", "power", POWER_REASONS, g, t)


def check_power_near_limit(g: GpuState, t: Thresholds) -> Check:
    th = _th(t.power_near_limit_ratio)
    if g.power_w is None or not g.power_limit_w:
        key = "power_w" if g.power_w is None else "power_limit_w"
        return _unknown("power_near_limit", "power draw or limit", g, key, "ratio", th)
    ratio = g.power_w / g.power_limit_w
    s = WARN if ratio >= t.power_near_limit_ratio else OK
    return Check("power_near_limit", s, round(ratio, 4), th, "ratio",
                 f"drawing {g.power_w:.0f} W of a {g.power_limit_w:.0f} W limit ({ratio:.0%})")


def _ecc(name: str, value: int | None, warn: int | None, crit: int | None, what: str, g: GpuState,
         key: str) -> Check:
    th = _th(warn, crit)
    if g.ecc.enabled is False:
        return Check(name, UNKNOWN, None, th, "count", "ECC is disabled on this GPU")
    if value is None:
        return _unknown(name, "ECC error count", g, key, "count", th)
    s = _level(value, warn, crit)
    return Check(name, s, value, th, "count", f"{value} {what}")


def check_ecc(g: GpuState, t: Thresholds) -> list[Check]:
    e = g.ecc
    return [
        _ecc("ecc_volatile_uncorrected", e.volatile.uncorrected, None, t.ecc_volatile_uncorrected_crit or None,
             "uncorrectable ECC errors since the driver loaded", g, "ecc"),
        _ecc("ecc_aggregate_uncorrected", e.aggregate.uncorrected, t.ecc_aggregate_uncorrected_warn or None, None,
             "uncorrectable ECC errors over the board's life", g, "ecc"),
        _ecc("ecc_volatile_corrected", e.volatile.corrected, t.ecc_volatile_corrected_warn or None, None,
             "corrected ECC errors since the driver loaded", g, "ecc"),
        _ecc("ecc_aggregate_corrected", e.aggregate.corrected, t.ecc_aggregate_corrected_warn or None, None,
             "corrected ECC errors over the board's life", g, "ecc"),
    ]


def _flag(name: str, value: bool | None, status_if_true: Status, yes: str, no: str, what: str) -> Check | None:
    if value is None:
        return None  # not supported on this generation (page retirement is pre-Ampere, row remap Ampere+)
    th = _th(True, None) if status_if_true == WARN else _th(None, True)
    return Check(name, status_if_true if value else OK, value, th, None, yes if value else no)


def check_memory_repair(g: GpuState, t: Thresholds) -> list[Check]:
    """Retired pages (pre-Ampere) and remapped rows (Ampere+): only the mechanism the GPU has is reported."""
    e = g.ecc
    out = [
        _flag("retired_pages_pending", e.retired_pages_pending, WARN,
              "pages are pending retirement: reset the GPU (or reboot) to retire them", "no pages pending retirement",
              "retired pages"),
        _flag("remapped_rows_pending", e.remapped_rows_pending, WARN,
              "row remapping is pending: reset the GPU to apply it", "no row remapping pending", "remapped rows"),
        _flag("remapped_rows_failure", e.remapped_rows_failure, CRIT,
              "row remapping failed: the GPU has run out of spare rows and needs service",
              "row remapping healthy", "remapped rows"),
    ]
    return [c for c in out if c is not None]


def _busy(g: GpuState, t: Thresholds) -> bool | None:
    u = g.utilization.gpu
    return None if u is None else u >= t.busy_utilization_percent


def check_pcie_link(g: GpuState, t: Thresholds) -> Check:
    p = g.pcie
    th = _th({"gen": p.gen_max, "width": p.width_max})
    if p.gen is None or p.width is None or p.gen_max is None or p.width_max is None:
        return _unknown("pcie_link", "PCIe link generation/width", g, "pcie", None, th)
    value = {"gen": p.gen, "width": p.width}
    link = f"PCIe gen{p.gen} x{p.width} (max gen{p.gen_max} x{p.width_max})"
    if p.gen >= p.gen_max and p.width >= p.width_max:
        return Check("pcie_link", OK, value, th, None, f"{link}: full speed")
    busy = _busy(g, t)
    if busy is None:
        return Check("pcie_link", UNKNOWN, value, th, None,
                     f"{link}: below max, but utilization is unknown, so idle power saving cannot be ruled out")
    if not busy:
        return Check("pcie_link", OK, value, th, None,
                     f"{link}: below max while idle (utilization {g.utilization.gpu} % < "
                     f"{t.busy_utilization_percent:g} %); idle links downshift to save power, not flagged")
    return Check("pcie_link", WARN, value, th, None,
                 f"{link}: below max while busy (utilization {g.utilization.gpu} %): check the slot, riser or "
                 f"BIOS link settings")


def check_clocks(g: GpuState, t: Thresholds) -> Check:
    c = g.clocks_mhz
    th = _th(t.clocks_low_ratio)
    if c.sm is None or not c.sm_max:
        return _unknown("clocks", "SM clock or its max", g, "clocks_mhz", "ratio", th)
    ratio = c.sm / c.sm_max
    busy = _busy(g, t)
    if ratio >= t.clocks_low_ratio:
        return Check("clocks", OK, round(ratio, 4), th, "ratio", f"SM clock {c.sm} of {c.sm_max} MHz")
    if busy is None:
        return Check("clocks", UNKNOWN, round(ratio, 4), th, "ratio",
                     f"SM clock {c.sm} of {c.sm_max} MHz, utilization unknown")
    if not busy:
        return Check("clocks", OK, round(ratio, 4), th, "ratio",
                     f"SM clock {c.sm} of {c.sm_max} MHz while idle (clocks drop when idle, not flagged)")
    why = ", ".join(g.throttle_reasons) or "no throttle reason reported"
    return Check("clocks", WARN, round(ratio, 4), th, "ratio",
                 f"SM clock stuck low under load: {c.sm} of {c.sm_max} MHz at {g.utilization.gpu} % "
                 f"utilization ({why})")


def check_memory_held(g: GpuState, t: Thresholds) -> Check:
    m = g.memory
    th = _th(t.memory_held_warn_ratio)
    if m.used is None or not m.total:
        return _unknown("memory_held", "memory in use", g, "memory", "bytes", th)
    ratio = m.used / m.total
    procs = sorted(g.processes, key=lambda p: -(p.used_bytes or 0))
    data = {"used_bytes": m.used, "total_bytes": m.total, "ratio": ratio,
            "processes": [{"name": p.name, "pid": p.pid, "used_bytes": p.used_bytes} for p in procs]}
    return Check("memory_held", WARN if ratio >= t.memory_held_warn_ratio else OK, m.used, th, "bytes", data=data)


GPU_CHECKS = (
    check_temperature,
    check_thermal_throttling,
    check_power_throttling,
    check_power_near_limit,
    check_ecc,
    check_memory_repair,
    check_pcie_link,
    check_clocks,
    check_memory_held,
)


def gpu_checks(g: GpuState, t: Thresholds, live: bool = True) -> list[Check]:
    """All checks for one GPU. A lost GPU gets only `available` (crit): its other values are stale.
    `live` False: the GPU comes from a capture, so no check claims it answers NVML now."""
    out = [check_available(g, t, live)]
    if not g.available:
        return out
    for fn in GPU_CHECKS:
        r = fn(g, t)
        out.extend(r if isinstance(r, list) else [r])
    return out


# ---- host checks -----------------------------------------------------------------------------------


def check_host_ram(h: HostInfo, t: Thresholds) -> Check:
    th = _th(t.host_ram_available_warn_ratio, t.host_ram_available_crit_ratio)
    if h.ram_available_bytes is None or not h.ram_total_bytes:
        return Check("host_ram", UNKNOWN, None, th, "ratio", "host RAM not reported")
    ratio = h.ram_available_bytes / h.ram_total_bytes
    s = CRIT if ratio < t.host_ram_available_crit_ratio else WARN if ratio < t.host_ram_available_warn_ratio else OK
    return Check("host_ram", s, round(ratio, 4), th, "ratio",
                 data={"available_bytes": h.ram_available_bytes, "total_bytes": h.ram_total_bytes, "ratio": ratio,
                       "warn_ratio": t.host_ram_available_warn_ratio})


def check_gpus_present(s: Snapshot, t: Thresholds) -> Check:
    n = len(s.gpus)
    if n == 0:
        return Check("gpus_present", CRIT, 0, _th(crit=0), "count", "no NVIDIA GPU visible")
    lost = sum(1 for g in s.gpus if not g.available)
    return Check("gpus_present", OK, n, _th(crit=0), "count",
                 f"{n} GPU(s) visible" + (f", {lost} of them lost" if lost else ""))


def host_checks(s: Snapshot, t: Thresholds) -> list[Check]:
    return [check_gpus_present(s, t), check_host_ram(s.host, t)]
