"""What NVML is asked about one GPU, field by field: the reads behind `NvmlSession._read_gpu`.

Each function takes the session `s` (whose `_field` applies the error policy and counts the call), the
device handle, the dict of GpuState fields being built and the errors dict. No pynvml import here: the
library is reached only through the session.
"""

from __future__ import annotations

from .nvml import (
    MEMORY_V2_FALLBACK,
    NVML_AGGREGATE_ECC,
    NVML_CLOCK_MEM,
    NVML_CLOCK_SM,
    NVML_MEMORY_ERROR_TYPE_CORRECTED,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_NVLINK_MAX_LINKS,
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
    NVML_PSTATE_UNKNOWN,
    NVML_TEMPERATURE_GPU,
    NVML_VALUE_NOT_AVAILABLE,
    NVML_VOLATILE_ECC,
    GpuFailed,
    MissingBinding,
    decode,
    mig_profile_from_name,
    reason,
    throttle_names,
)
from .snapshot import Clocks, Ecc, EccCounts, Memory, Mig, MigDevice, NvLink, Pcie, Process, Utilization


def read_identity(s, h, g, errors):
    f = s._field
    g["name"] = f(errors, "name", "nvmlDeviceGetName", h)
    g["uuid"] = f(errors, "uuid", "nvmlDeviceGetUUID", h)
    g["serial"] = f(errors, "serial", "nvmlDeviceGetSerial", h)
    pci = f(errors, "pci_bus_id", "nvmlDeviceGetPciInfo", h)
    if pci is not None:
        bus = decode(getattr(pci, "busId", None))
        g["pci_bus_id"] = bus or None
        dev_id = getattr(pci, "pciDeviceId", None)
        g["pci_device_id"] = f"0x{dev_id:08X}" if isinstance(dev_id, int) else None
    else:
        errors["pci_device_id"] = errors["pci_bus_id"]

def memory_v2(s, h):
    """nvmlMemory_v2_t (with `reserved`) for a GPU or MIG handle, or None where the driver or pynvml has no
    v2 (the caller then asks v1). A device-level error -> GpuFailed."""
    try:
        return s._call("nvmlDeviceGetMemoryInfo", h, version=getattr(s._lib, "nvmlMemory_v2", 0x02000028))
    except (MissingBinding, TypeError):
        return None  # an old pynvml without `version=`: use v1
    except s._exc("NVMLError") as e:
        if not any(isinstance(e, s._exc(n)) for n in MEMORY_V2_FALLBACK):
            if not s._soft(e):
                raise GpuFailed(f"nvmlDeviceGetMemoryInfo: {reason(e)}") from None
    return None


def read_memory(s, h, g, errors, ram_total, ram_available):
    mem = memory_v2(s, h)
    reserved_known = mem is not None
    if mem is None:
        mem = s._field(errors, "memory", "nvmlDeviceGetMemoryInfo", h)
    total = getattr(mem, "total", None) if mem is not None else None
    if not total:
        # GH200 / GB10 class: no dedicated framebuffer; the GPU allocates from host memory
        why = errors.pop("memory", None) or "total is 0"
        g["unified_memory"] = True
        used = ram_total - ram_available if ram_total is not None and ram_available is not None else None
        g["memory"] = Memory(total=ram_total, free=ram_available, used=used, reserved=None)
        errors["memory"] = (
            f"NVML reports no framebuffer ({why}): unified-memory part, memory sized from host RAM (psutil)"
        )
        return
    reserved = getattr(mem, "reserved", None) if reserved_known else None
    if not reserved_known:
        errors["memory.reserved"] = "NVML v2 memory info not available (old driver); reserved unknown"
    g["memory"] = Memory(total=total, free=mem.free, used=mem.used, reserved=reserved)

def read_state(s, h, g, errors):
    f = s._field
    g["clocks_mhz"] = Clocks(
        sm=f(errors, "clocks_mhz.sm", "nvmlDeviceGetClockInfo", h, NVML_CLOCK_SM),
        mem=f(errors, "clocks_mhz.mem", "nvmlDeviceGetClockInfo", h, NVML_CLOCK_MEM),
        sm_max=f(errors, "clocks_mhz.sm_max", "nvmlDeviceGetMaxClockInfo", h, NVML_CLOCK_SM),
        mem_max=f(errors, "clocks_mhz.mem_max", "nvmlDeviceGetMaxClockInfo", h, NVML_CLOCK_MEM),
    )
    g["temperature_c"] = f(errors, "temperature_c", "nvmlDeviceGetTemperature", h, NVML_TEMPERATURE_GPU)
    mw = f(errors, "power_w", "nvmlDeviceGetPowerUsage", h)
    g["power_w"] = mw / 1000.0 if mw is not None else None
    mw = f(errors, "power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", h)
    g["power_limit_w"] = mw / 1000.0 if mw is not None else None
    util = f(errors, "utilization", "nvmlDeviceGetUtilizationRates", h)
    g["utilization"] = Utilization(gpu=util.gpu, memory=util.memory) if util is not None else Utilization()
    cc = f(errors, "compute_capability", "nvmlDeviceGetCudaComputeCapability", h)
    g["compute_capability"] = f"{cc[0]}.{cc[1]}" if cc is not None else None
    g["pcie"] = Pcie(
        gen=f(errors, "pcie.gen", "nvmlDeviceGetCurrPcieLinkGeneration", h),
        width=f(errors, "pcie.width", "nvmlDeviceGetCurrPcieLinkWidth", h),
        gen_max=f(errors, "pcie.gen_max", "nvmlDeviceGetMaxPcieLinkGeneration", h),
        width_max=f(errors, "pcie.width_max", "nvmlDeviceGetMaxPcieLinkWidth", h),
    )
    mask = f(errors, "throttle_reasons", "nvmlDeviceGetCurrentClocksEventReasons", h)
    why = errors.get("throttle_reasons", "")
    if mask is None and ("FunctionNotFound" in why or "Function Not Found" in why or "pynvml" in why):
        # drivers / bindings before 535 only have the older name of the same call
        errors.pop("throttle_reasons")
        mask = f(errors, "throttle_reasons", "nvmlDeviceGetCurrentClocksThrottleReasons", h)
    g["throttle_reasons"] = throttle_names(mask) if mask is not None else ()
    g["fan_percent"] = f(errors, "fan_percent", "nvmlDeviceGetFanSpeed", h)
    ps = f(errors, "performance_state", "nvmlDeviceGetPerformanceState", h)
    g["performance_state"] = f"P{ps}" if isinstance(ps, int) and ps != NVML_PSTATE_UNKNOWN else None

def read_mig(s, h, g, errors):
    mode = s._field(errors, "mig", "nvmlDeviceGetMigMode", h)
    if mode is None:
        return  # Mig(enabled=None): not a MIG-capable card
    enabled = bool(mode[0])
    if not enabled:
        g["mig"] = Mig(enabled=False)
        return
    devices = []
    n = s._field(errors, "mig.devices", "nvmlDeviceGetMaxMigDeviceCount", h) or 0
    for i in range(n):
        try:
            mh = s._call("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
        except s._exc("NVMLError_NotFound"):
            continue  # an empty slot
        except (MissingBinding, s._exc("NVMLError")) as e:
            errors[f"mig.devices[{i}]"] = reason(e) if not isinstance(e, MissingBinding) else str(e)
            continue
        devices.append(read_mig_device(s, i, mh, errors))
    g["mig"] = Mig(enabled=True, devices=tuple(devices))

def read_mig_device(s, i, mh, errors) -> MigDevice:
    e: dict[str, str] = {}
    f = s._field
    name = f(e, "name", "nvmlDeviceGetName", mh)
    mem = memory_v2(s, mh)  # v2 answers on MIG handles too, with the slice's reserved memory
    reserved = getattr(mem, "reserved", None) if mem is not None else None
    if mem is None:
        mem = f(e, "memory", "nvmlDeviceGetMemoryInfo", mh)
    attrs = f(e, "multiprocessor_count", "nvmlDeviceGetAttributes", mh)
    dev = MigDevice(
        index=i,
        uuid=f(e, "uuid", "nvmlDeviceGetUUID", mh),
        profile=mig_profile_from_name(name),
        gpu_instance_id=f(e, "gpu_instance_id", "nvmlDeviceGetGpuInstanceId", mh),
        compute_instance_id=f(e, "compute_instance_id", "nvmlDeviceGetComputeInstanceId", mh),
        multiprocessor_count=getattr(attrs, "multiprocessorCount", None) if attrs is not None else None,
        memory=Memory(total=mem.total, free=mem.free, used=mem.used, reserved=reserved) if mem is not None else Memory(),
    )
    for k, v in e.items():
        errors[f"mig.devices[{i}].{k}"] = v
    return dev

def read_nvlink(s, h, g, errors):
    max_links = getattr(s._lib, "NVML_NVLINK_MAX_LINKS", NVML_NVLINK_MAX_LINKS)
    links = []
    for link in range(max_links):
        e: dict[str, str] = {}
        state = s._field(e, "nvlink", "nvmlDeviceGetNvLinkState", h, link)
        if state is None:
            if link == 0:
                errors.update(e)  # no NVLink at all: say why the list is empty
            break  # past the card's last link
        links.append([link, bool(state)])
    version = None
    up = [l for l in links if l[1]]
    if up:  # every link of a card runs the same NVLink generation: one call, not one per link
        version = s._field({}, "nvlink", "nvmlDeviceGetNvLinkVersion", h, up[0][0])
    g["nvlink"] = tuple(NvLink(link=l, up=u, version=version if u else None) for l, u in links)

def read_processes(s, h, g, errors, process_name):
    procs = []
    for fn, kind in (("nvmlDeviceGetComputeRunningProcesses", "compute"),
                     ("nvmlDeviceGetGraphicsRunningProcesses", "graphics")):
        # pynvml's unversioned name calls the _v3 symbol (R510+); older drivers have _v2 only
        got = s._field_versions(errors, f"processes.{kind}", (fn, fn + "_v2"), h)
        for p in got or ():
            used = getattr(p, "usedGpuMemory", None)
            if used is None or used == NVML_VALUE_NOT_AVAILABLE or used < 0:
                used = None  # Windows WDDM and vGPU guests do not report per-process memory
            name = process_name(p.pid) if process_name else None
            procs.append(Process(pid=int(p.pid), name=name, used_bytes=used, kind=kind))
    g["processes"] = tuple(procs)

def read_ecc(s, h, g, errors):
    f = s._field
    mode = f(errors, "ecc", "nvmlDeviceGetEccMode", h)
    if mode is None:
        g["ecc"] = Ecc()  # no ECC on this card (GeForce): counters and retirement are not asked
        return
    enabled = bool(mode[0])
    counts = {}
    for scope, counter in (("volatile", NVML_VOLATILE_ECC), ("aggregate", NVML_AGGREGATE_ECC)):
        if not enabled:
            errors[f"ecc.{scope}"] = "ECC is disabled"
            counts[scope] = EccCounts()
            continue
        counts[scope] = EccCounts(
            corrected=f(errors, f"ecc.{scope}.corrected", "nvmlDeviceGetTotalEccErrors", h,
                        NVML_MEMORY_ERROR_TYPE_CORRECTED, counter),
            uncorrected=f(errors, f"ecc.{scope}.uncorrected", "nvmlDeviceGetTotalEccErrors", h,
                          NVML_MEMORY_ERROR_TYPE_UNCORRECTED, counter),
        )
    ecc = dict(enabled=enabled, volatile=counts["volatile"], aggregate=counts["aggregate"])
    # Ampere and later remap rows; earlier ECC cards retire pages. Ask the second only if the first fails.
    rows = f(errors, "ecc.remapped_rows", "nvmlDeviceGetRemappedRows", h)
    if rows is not None:
        corr, unc, pending, failure = rows
        ecc.update(remapped_rows_correctable=corr, remapped_rows_uncorrectable=unc,
                   remapped_rows_pending=bool(pending), remapped_rows_failure=bool(failure))
    else:
        single = f(errors, "ecc.retired_pages_single", "nvmlDeviceGetRetiredPages", h,
                   NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
        if single is not None:
            double = f(errors, "ecc.retired_pages_double", "nvmlDeviceGetRetiredPages", h,
                       NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
            pending = f(errors, "ecc.retired_pages_pending", "nvmlDeviceGetRetiredPagesPendingStatus", h)
            ecc.update(retired_pages_single=len(single),
                       retired_pages_double=len(double) if double is not None else None,
                       retired_pages_pending=bool(pending) if pending is not None else None)
    g["ecc"] = Ecc(**ecc)
