"""Prometheus text exposition of a report, for node_exporter's textfile collector.

Metric names are `gpufit_*` in base units. Per-GPU series carry the label `uuid` only (plus the dimension
that names the series, e.g. `check`); `gpufit_gpu_info` carries name, index, catalog_key and driver. A value
NVML does not support is left out, never written as 0. prometheus_client (a base dependency) does the
formatting, imported lazily so `gpufit plan` does not pay for it. Files are written by `fsutil.write_atomic`
(temp file in the target folder, fsync, rename), so a scrape never sees half a file even with two runs
overlapping.
"""

from __future__ import annotations


from ..app.health import STATUS_VALUE as _STATUS_VALUE


def _uuid_labels(gpus: list) -> list[str]:
    """One distinct `uuid` label per GPU. A lost GPU may have no UUID: use something stable that cannot
    clash with a real one. Two GPUs with one UUID (anonymised captures do this) would make duplicate series,
    and node_exporter rejects a whole textfile for that; the repeats get their index appended."""
    out, seen = [], set()
    for g in gpus:
        label = g.get("uuid") or f"unknown-{g.get('pci_bus_id') or g.get('index')}"
        if label in seen:
            label = f"{label}/{g.get('index')}"
        seen.add(label)
        out.append(label)
    return out


def render(report: dict) -> str:
    """The report object (report.build_report / failure_report) as Prometheus text format 0.0.4."""
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
        1 if report.get("success") else 0)
    put(gauge("gpufit_report_timestamp_seconds", "Unix time the report was made"), [], report.get("timestamp"))
    put(gauge("gpufit_report_duration_seconds", "Seconds the report took (probe + checks + estimates)"), [],
        report.get("duration_s"))
    if report.get("status") in _STATUS_VALUE:
        put(gauge("gpufit_report_status", "Overall status: 0 ok, 1 warn, 2 crit"), [],
            _STATUS_VALUE[report["status"]])

    host = report.get("host") or {}
    put(gauge("gpufit_host_memory_total_bytes", "Host RAM total"), [], host.get("ram_total_bytes"))
    put(gauge("gpufit_host_memory_available_bytes", "Host RAM available"), [], host.get("ram_available_bytes"))
    for c in report.get("host_checks", []):
        if c["status"] in _STATUS_VALUE:
            put(gauge("gpufit_host_health_status", "Host health check: 0 ok, 1 warn, 2 crit", ["check"]),
                [c["name"]], _STATUS_VALUE[c["status"]])

    driver = host.get("driver_version") or ""
    gpus = report.get("gpus", [])
    for g, label in zip(gpus, _uuid_labels(gpus)):
        u = [label]
        put(gauge("gpufit_gpu_info", "GPU identity; always 1",
                  ["uuid", "name", "index", "catalog_key", "driver", "pci_device_id"]),
            [u[0], g.get("name") or "", g.get("index"), g.get("catalog_key") or "", driver,
             _pci_label(g.get("pci_device_id"))], 1)
        put(gauge("gpufit_gpu_available", "1 if the GPU answers NVML, 0 if it is lost or erroring", ["uuid"]),
            u, 1 if g.get("available") else 0)
        if g.get("status") in _STATUS_VALUE:
            put(gauge("gpufit_gpu_status", "Worst health check of the GPU: 0 ok, 1 warn, 2 crit", ["uuid"]),
                u, _STATUS_VALUE[g["status"]])
        for c in g.get("checks", []):
            if c["status"] in _STATUS_VALUE:
                put(gauge("gpufit_gpu_health_status", "GPU health check: 0 ok, 1 warn, 2 crit", ["uuid", "check"]),
                    u + [c["name"]], _STATUS_VALUE[c["status"]])
        if not g.get("available"):
            continue  # a lost GPU's readings are stale or absent
        m = g.get("memory") or {}
        put(gauge("gpufit_gpu_memory_total_bytes", "GPU memory total", ["uuid"]), u, m.get("total"))
        put(gauge("gpufit_gpu_memory_free_bytes", "GPU memory free", ["uuid"]), u, m.get("free"))
        put(gauge("gpufit_gpu_memory_used_bytes", "GPU memory used", ["uuid"]), u, m.get("used"))
        put(gauge("gpufit_gpu_memory_reserved_bytes", "GPU memory reserved by driver/firmware", ["uuid"]),
            u, m.get("reserved"))
        _fleet_series(gauge, put, g, u)
        put(gauge("gpufit_gpu_temperature_celsius", "GPU core temperature", ["uuid"]), u, g.get("temperature_c"))
        put(gauge("gpufit_gpu_power_watts", "GPU power draw", ["uuid"]), u, g.get("power_w"))
        put(gauge("gpufit_gpu_power_limit_watts", "GPU enforced power limit", ["uuid"]), u, g.get("power_limit_w"))
        ut = g.get("utilization") or {}
        put(gauge("gpufit_gpu_utilization_ratio", "GPU (SM) busy fraction over NVML's sample period", ["uuid"]),
            u, None if ut.get("gpu") is None else ut["gpu"] / 100)
        put(gauge("gpufit_gpu_memory_utilization_ratio", "Memory controller busy fraction", ["uuid"]),
            u, None if ut.get("memory") is None else ut["memory"] / 100)
        ck = g.get("clocks_mhz") or {}
        for key, metric, doc in (("sm", "gpufit_gpu_clock_sm_hertz", "SM clock"),
                                 ("sm_max", "gpufit_gpu_clock_sm_max_hertz", "SM clock max"),
                                 ("mem", "gpufit_gpu_clock_memory_hertz", "Memory clock"),
                                 ("mem_max", "gpufit_gpu_clock_memory_max_hertz", "Memory clock max")):
            put(gauge(metric, doc, ["uuid"]), u, None if ck.get(key) is None else ck[key] * 1_000_000)
        pc = g.get("pcie") or {}
        put(gauge("gpufit_gpu_pcie_link_gen", "PCIe link generation now", ["uuid"]), u, pc.get("gen"))
        put(gauge("gpufit_gpu_pcie_link_gen_max", "PCIe link generation max", ["uuid"]), u, pc.get("gen_max"))
        put(gauge("gpufit_gpu_pcie_link_width", "PCIe link width (lanes) now", ["uuid"]), u, pc.get("width"))
        put(gauge("gpufit_gpu_pcie_link_width_max", "PCIe link width max", ["uuid"]), u, pc.get("width_max"))
        put(gauge("gpufit_gpu_fan_ratio", "Fan speed as a fraction of max", ["uuid"]),
            u, None if g.get("fan_percent") is None else g["fan_percent"] / 100)
        procs = g.get("processes")
        if procs is not None and "processes" not in (g.get("errors") or {}):
            put(gauge("gpufit_gpu_processes", "Processes holding GPU memory", ["uuid"]), u, len(procs))
        ecc = g.get("ecc") or {}
        if ecc.get("enabled") is not None:
            put(gauge("gpufit_gpu_ecc_enabled", "1 if ECC is enabled", ["uuid"]), u, 1 if ecc["enabled"] else 0)
        for counter_name in ("volatile", "aggregate"):
            for kind in ("corrected", "uncorrected"):
                put(counter("gpufit_gpu_ecc_errors",
                            "ECC errors; counter=volatile resets when the driver reloads",
                            ["uuid", "kind", "counter"]),
                    u + [kind, counter_name], (ecc.get(counter_name) or {}).get(kind))
        put(gauge("gpufit_gpu_retired_pages", "Retired memory pages (pre-Ampere)", ["uuid", "cause"]),
            u + ["single_bit"], ecc.get("retired_pages_single"))
        put(gauge("gpufit_gpu_retired_pages", "", ["uuid", "cause"]), u + ["double_bit"],
            ecc.get("retired_pages_double"))
        put(gauge("gpufit_gpu_retired_pages_pending", "1 if pages wait for retirement (needs reset)", ["uuid"]),
            u, _bool(ecc.get("retired_pages_pending")))
        put(gauge("gpufit_gpu_remapped_rows", "Remapped memory rows (Ampere+)", ["uuid", "kind"]),
            u + ["correctable"], ecc.get("remapped_rows_correctable"))
        put(gauge("gpufit_gpu_remapped_rows", "", ["uuid", "kind"]), u + ["uncorrectable"],
            ecc.get("remapped_rows_uncorrectable"))
        put(gauge("gpufit_gpu_remapped_rows_pending", "1 if a row remap waits for a GPU reset", ["uuid"]),
            u, _bool(ecc.get("remapped_rows_pending")))
        put(gauge("gpufit_gpu_remapped_rows_failure", "1 if row remapping failed (needs service)", ["uuid"]),
            u, _bool(ecc.get("remapped_rows_failure")))
        if "throttle_reasons" not in (g.get("errors") or {}):
            for r in g.get("throttle_reasons") or ():
                put(gauge("gpufit_gpu_throttle_reason", "1 for each active clock throttle reason",
                          ["uuid", "reason"]), u + [r], 1)

    for m in report.get("models", []):
        lab = [m["name"], m.get("quant") or ""]
        put(gauge("gpufit_model_check_success", "1 if the fit estimate for the watched model ran",
                  ["model", "quant"]), lab, 0 if m.get("error") else 1)
        if m.get("verdict") is None:
            continue
        put(gauge("gpufit_model_fits", "1 if the watched model fits on the GPUs now (verdict fits or tight)",
                  ["model", "quant"]), lab, 1 if m["verdict"] in ("fits", "tight") else 0)
        put(gauge("gpufit_model_headroom_bytes", "Smallest headroom over the GPUs the model would use",
                  ["model", "quant"]), lab, m.get("headroom_bytes"))
        put(gauge("gpufit_model_needed_bytes", "Memory the watched model needs", ["model", "quant"]),
            lab, m.get("needed_bytes"))

    class _Fixed:
        def collect(self):
            # a family whose every value was unsupported is left out whole, not written as HELP/TYPE only
            return [f for f in fams.values() if f.samples]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return generate_latest(registry).decode("utf-8")


def _pci_label(pci_device_id) -> str:
    """The PCI device id as NVML gives it ("0x220410DE"), only where it names an NVIDIA device: a zero
    or masked id (virtual GPUs, captures without one) says no more than an empty label, and is written
    as one, so the same box gives the same series whichever way it was read."""
    from ..catalog import pci_device_key

    return str(pci_device_id) if pci_device_key(pci_device_id) else ""


def _fleet_series(gauge, put, g: dict, u: list) -> None:
    """What `gpufit fleet` needs besides memory to rebuild the probe's view of a GPU from Prometheus
    (gpufit/fleet/sources.py reads these): MIG mode and each MIG device with its parent, and the NVLink
    links that are up (tensor-parallel speed). A MIG device's `uuid` label is its own MIG UUID, or
    PARENT/mig/INDEX where NVML gave none; `parent_uuid` is the GPU's `uuid` label."""
    mig = g.get("mig") or {}
    if mig.get("enabled") is not None:
        put(gauge("gpufit_gpu_mig_enabled", "1 if MIG mode is enabled (its MIG devices are the units)", ["uuid"]),
            u, 1 if mig["enabled"] else 0)
    if g.get("unified_memory"):
        put(gauge("gpufit_gpu_unified_memory", "1 if GPU memory is host memory (GH200 / GB10 class)", ["uuid"]), u, 1)
    links = g.get("nvlink") or []
    if links:
        put(gauge("gpufit_gpu_nvlink_links_up", "NVLink links that are up", ["uuid"]), u,
            sum(1 for link in links if link.get("up")))
    seen = set()
    for m in mig.get("devices") or []:
        label = m.get("uuid") or f"{u[0]}/mig/{m.get('index')}"
        if label in seen:
            label = f"{label}/{m.get('index')}"
        seen.add(label)
        put(gauge("gpufit_mig_info", "MIG device identity; always 1",
                  ["uuid", "parent_uuid", "index", "profile", "gpu_instance_id", "compute_instance_id"]),
            [label, u[0], m.get("index"), m.get("profile") or "",
             "" if m.get("gpu_instance_id") is None else m["gpu_instance_id"],
             "" if m.get("compute_instance_id") is None else m["compute_instance_id"]], 1)
        mm = m.get("memory") or {}
        put(gauge("gpufit_mig_memory_total_bytes", "MIG device memory total", ["uuid"]), [label], mm.get("total"))
        put(gauge("gpufit_mig_memory_free_bytes", "MIG device memory free", ["uuid"]), [label], mm.get("free"))


def _bool(v):
    return None if v is None else (1 if v else 0)


RENDERERS = {"report": render}
