"""Prometheus text exposition of a report, for node_exporter's textfile collector.

Metric names are `gpufit_*` in base units. Per-GPU series carry the label `uuid` only (plus the dimension
that names the series, e.g. `check`); `gpufit_gpu_info` carries name, index, catalog_key and driver. A value
NVML does not support is left out, never written as 0. prometheus_client (a base dependency) does the
formatting, imported lazily so `gpufit plan` does not pay for it. Files are written by `fsutil.write_atomic`
(temp file in the target folder, fsync, rename), so a scrape never sees half a file even with two runs
overlapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..app.health import STATUS_VALUE as _STATUS_VALUE

if TYPE_CHECKING:
    from ..app.report import GpuReport, Report
    from ..probe.snapshot import GpuState


def _uuid_labels(gpus: list[GpuState]) -> list[str]:
    """One distinct `uuid` label per GPU. A lost GPU may have no UUID: use something stable that cannot
    clash with a real one. Two GPUs with one UUID (anonymised captures do this) would make duplicate series,
    and node_exporter rejects a whole textfile for that; the repeats get their index appended."""
    out, seen = [], set()
    for g in gpus:
        label = g.uuid or f"unknown-{g.pci_bus_id or g.index}"
        if label in seen:
            label = f"{label}/{g.index}"
        seen.add(label)
        out.append(label)
    return out


def render(report: Report) -> str:
    """The report (app.report.build_report / failure_report) as Prometheus text format 0.0.4."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    fams: dict[str, object] = {}

    def gauge(name, doc, labels=(), unit=None):
        if name not in fams:
            fams[name] = GaugeMetricFamily(name, doc, labels=list(labels))
        return fams[name]

    def counter(name, doc, labels=()):
        if name not in fams:
            fams[name] = CounterMetricFamily(name, doc, labels=list(labels))
        return fams[name]

    def put(fam, labels, value):
        if value is None:  # unsupported: leave the series out
            return
        fam.add_metric([str(x) for x in labels], float(value))

    # -- the run itself: always present, even when the probe failed
    put(gauge("gpufit_report_success", "1 if gpufit probed the GPUs and wrote a report, 0 if it failed"), [],
        1 if report.success else 0)
    put(gauge("gpufit_report_timestamp_seconds", "Unix time the report was made"), [], report.timestamp)
    put(gauge("gpufit_report_duration_seconds", "Seconds the report took (probe + checks + estimates)"), [],
        report.duration_s)
    if report.status in _STATUS_VALUE:
        put(gauge("gpufit_report_status", "Overall status: 0 ok, 1 warn, 2 crit"), [], _STATUS_VALUE[report.status])

    host = report.host
    if host is not None:
        put(gauge("gpufit_host_memory_total_bytes", "Host RAM total"), [], host.ram_total_bytes)
        put(gauge("gpufit_host_memory_available_bytes", "Host RAM available"), [], host.ram_available_bytes)
    for c in report.host_checks:
        if c.status in _STATUS_VALUE:
            put(gauge("gpufit_host_health_status", "Host health check: 0 ok, 1 warn, 2 crit", ["check"]),
                [c.name], _STATUS_VALUE[c.status])

    driver = (host.driver_version if host is not None else None) or ""
    for gr, label in zip(report.gpus, _uuid_labels([gr.gpu for gr in report.gpus])):
        _gpu_series(gauge, counter, put, gr, [label], driver)

    for m in report.models:
        lab = [m.name, m.quant or ""]
        put(gauge("gpufit_model_check_success", "1 if the fit estimate for the watched model ran",
                  ["model", "quant"]), lab, 0 if m.error else 1)
        if m.verdict is None:
            continue
        put(gauge("gpufit_model_fits", "1 if the watched model fits on the GPUs now (verdict fits or tight)",
                  ["model", "quant"]), lab, 1 if m.verdict.fits else 0)
        put(gauge("gpufit_model_headroom_bytes", "Smallest headroom over the GPUs the model would use",
                  ["model", "quant"]), lab, m.headroom_bytes)
        put(gauge("gpufit_model_needed_bytes", "Memory the watched model needs", ["model", "quant"]),
            lab, m.needed_bytes)

    class _Fixed:
        def collect(self):
            # a family whose every value was unsupported is left out whole, not written as HELP/TYPE only
            return [f for f in fams.values() if f.samples]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return generate_latest(registry).decode("utf-8")


def _gpu_series(gauge, counter, put, gr: GpuReport, u: list[str], driver: str) -> None:
    """One GPU's series: identity, health, then (while it answers NVML) its readings."""
    g = gr.gpu
    put(gauge("gpufit_gpu_info", "GPU identity; always 1",
              ["uuid", "name", "index", "catalog_key", "driver", "pci_device_id"]),
        [u[0], g.name or "", g.index, gr.catalog_key or "", driver, _pci_label(g.pci_device_id)], 1)
    put(gauge("gpufit_gpu_available", "1 if the GPU answers NVML, 0 if it is lost or erroring", ["uuid"]),
        u, 1 if g.available else 0)
    if gr.status in _STATUS_VALUE:
        put(gauge("gpufit_gpu_status", "Worst health check of the GPU: 0 ok, 1 warn, 2 crit", ["uuid"]),
            u, _STATUS_VALUE[gr.status])
    for c in gr.checks:
        if c.status in _STATUS_VALUE:
            put(gauge("gpufit_gpu_health_status", "GPU health check: 0 ok, 1 warn, 2 crit", ["uuid", "check"]),
                u + [c.name], _STATUS_VALUE[c.status])
    if not g.available:
        return  # a lost GPU's readings are stale or absent
    m = g.memory
    put(gauge("gpufit_gpu_memory_total_bytes", "GPU memory total", ["uuid"]), u, m.total)
    put(gauge("gpufit_gpu_memory_free_bytes", "GPU memory free", ["uuid"]), u, m.free)
    put(gauge("gpufit_gpu_memory_used_bytes", "GPU memory used", ["uuid"]), u, m.used)
    put(gauge("gpufit_gpu_memory_reserved_bytes", "GPU memory reserved by driver/firmware", ["uuid"]), u, m.reserved)
    _fleet_series(gauge, put, g, u)
    put(gauge("gpufit_gpu_temperature_celsius", "GPU core temperature", ["uuid"]), u, g.temperature_c)
    put(gauge("gpufit_gpu_power_watts", "GPU power draw", ["uuid"]), u, g.power_w)
    put(gauge("gpufit_gpu_power_limit_watts", "GPU enforced power limit", ["uuid"]), u, g.power_limit_w)
    ut = g.utilization
    put(gauge("gpufit_gpu_utilization_ratio", "GPU (SM) busy fraction over NVML's sample period", ["uuid"]),
        u, _ratio(ut.gpu))
    put(gauge("gpufit_gpu_memory_utilization_ratio", "Memory controller busy fraction", ["uuid"]), u, _ratio(ut.memory))
    ck = g.clocks_mhz
    for mhz, metric, doc in ((ck.sm, "gpufit_gpu_clock_sm_hertz", "SM clock"),
                             (ck.sm_max, "gpufit_gpu_clock_sm_max_hertz", "SM clock max"),
                             (ck.mem, "gpufit_gpu_clock_memory_hertz", "Memory clock"),
                             (ck.mem_max, "gpufit_gpu_clock_memory_max_hertz", "Memory clock max")):
        put(gauge(metric, doc, ["uuid"]), u, None if mhz is None else mhz * 1_000_000)
    pc = g.pcie
    put(gauge("gpufit_gpu_pcie_link_gen", "PCIe link generation now", ["uuid"]), u, pc.gen)
    put(gauge("gpufit_gpu_pcie_link_gen_max", "PCIe link generation max", ["uuid"]), u, pc.gen_max)
    put(gauge("gpufit_gpu_pcie_link_width", "PCIe link width (lanes) now", ["uuid"]), u, pc.width)
    put(gauge("gpufit_gpu_pcie_link_width_max", "PCIe link width max", ["uuid"]), u, pc.width_max)
    put(gauge("gpufit_gpu_fan_ratio", "Fan speed as a fraction of max", ["uuid"]), u, _ratio(g.fan_percent))
    if "processes" not in g.errors:
        put(gauge("gpufit_gpu_processes", "Processes holding GPU memory", ["uuid"]), u, len(g.processes))
    ecc = g.ecc
    if ecc.enabled is not None:
        put(gauge("gpufit_gpu_ecc_enabled", "1 if ECC is enabled", ["uuid"]), u, 1 if ecc.enabled else 0)
    for counter_name, counts in (("volatile", ecc.volatile), ("aggregate", ecc.aggregate)):
        for kind, value in (("corrected", counts.corrected), ("uncorrected", counts.uncorrected)):
            put(counter("gpufit_gpu_ecc_errors", "ECC errors; counter=volatile resets when the driver reloads",
                        ["uuid", "kind", "counter"]), u + [kind, counter_name], value)
    put(gauge("gpufit_gpu_retired_pages", "Retired memory pages (pre-Ampere)", ["uuid", "cause"]),
        u + ["single_bit"], ecc.retired_pages_single)
    put(gauge("gpufit_gpu_retired_pages", "", ["uuid", "cause"]), u + ["double_bit"], ecc.retired_pages_double)
    put(gauge("gpufit_gpu_retired_pages_pending", "1 if pages wait for retirement (needs reset)", ["uuid"]),
        u, _bool(ecc.retired_pages_pending))
    put(gauge("gpufit_gpu_remapped_rows", "Remapped memory rows (Ampere+)", ["uuid", "kind"]),
        u + ["correctable"], ecc.remapped_rows_correctable)
    put(gauge("gpufit_gpu_remapped_rows", "", ["uuid", "kind"]), u + ["uncorrectable"], ecc.remapped_rows_uncorrectable)
    put(gauge("gpufit_gpu_remapped_rows_pending", "1 if a row remap waits for a GPU reset", ["uuid"]),
        u, _bool(ecc.remapped_rows_pending))
    put(gauge("gpufit_gpu_remapped_rows_failure", "1 if row remapping failed (needs service)", ["uuid"]),
        u, _bool(ecc.remapped_rows_failure))
    if "throttle_reasons" not in g.errors:
        for r in g.throttle_reasons:
            put(gauge("gpufit_gpu_throttle_reason", "1 for each active clock throttle reason", ["uuid", "reason"]),
                u + [r], 1)


def _ratio(percent: int | None) -> float | None:
    return None if percent is None else percent / 100


def _pci_label(pci_device_id: str | None) -> str:
    """The PCI device id as NVML gives it ("0x220410DE"), only where it names an NVIDIA device: a zero
    or masked id (virtual GPUs, captures without one) says no more than an empty label, and is written
    as one, so the same box gives the same series whichever way it was read."""
    from ..catalog import pci_device_key

    return str(pci_device_id) if pci_device_key(pci_device_id) else ""


def _fleet_series(gauge, put, g: GpuState, u: list[str]) -> None:
    """What `gpufit fleet` needs besides memory to rebuild the probe's view of a GPU from Prometheus
    (gpufit/app/fleet/sources.py reads these): MIG mode and each MIG device with its parent, and the NVLink
    links that are up (tensor-parallel speed). A MIG device's `uuid` label is its own MIG UUID, or
    PARENT/mig/INDEX where NVML gave none; `parent_uuid` is the GPU's `uuid` label."""
    mig = g.mig
    if mig.enabled is not None:
        put(gauge("gpufit_gpu_mig_enabled", "1 if MIG mode is enabled (its MIG devices are the units)", ["uuid"]),
            u, 1 if mig.enabled else 0)
    if g.unified_memory:
        put(gauge("gpufit_gpu_unified_memory", "1 if GPU memory is host memory (GH200 / GB10 class)", ["uuid"]), u, 1)
    if g.nvlink:
        put(gauge("gpufit_gpu_nvlink_links_up", "NVLink links that are up", ["uuid"]), u,
            sum(1 for link in g.nvlink if link.up))
    seen = set()
    for m in mig.devices:
        label = m.uuid or f"{u[0]}/mig/{m.index}"
        if label in seen:
            label = f"{label}/{m.index}"
        seen.add(label)
        put(gauge("gpufit_mig_info", "MIG device identity; always 1",
                  ["uuid", "parent_uuid", "index", "profile", "gpu_instance_id", "compute_instance_id"]),
            [label, u[0], m.index, m.profile or "",
             "" if m.gpu_instance_id is None else m.gpu_instance_id,
             "" if m.compute_instance_id is None else m.compute_instance_id], 1)
        put(gauge("gpufit_mig_memory_total_bytes", "MIG device memory total", ["uuid"]), [label], m.memory.total)
        put(gauge("gpufit_mig_memory_free_bytes", "MIG device memory free", ["uuid"]), [label], m.memory.free)


def _bool(v):
    return None if v is None else (1 if v else 0)


RENDERERS = {"report": render}
