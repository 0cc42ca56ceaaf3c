"""The one seam to the NVIDIA driver: NVML through pynvml, read into `GpuState` snapshots.

Only this module imports pynvml, and only lazily, inside `NvmlSession.open()`; the library is a parameter so
tests pass a fake module that raises the real `pynvml.NVMLError_*` classes. Every NVML call goes through
`NvmlSession._call` (which counts it), and every per-field read through `_field`, whose error policy is:

- the question has no answer on this card (`SOFT_ERRORS`: NotSupported, FunctionNotFound, NoPermission, ...)
  -> the field is None and `errors[field]` says why; the GPU is still used;
- anything else on a device (GpuIsLost, Unknown, ResetRequired, ...) -> that GPU is `available=False`
  with the reason in `errors["gpu"]`; the other GPUs are still read;
- the library or driver cannot be used at all (no library, driver not loaded, version mismatch, no
  permission at init) or there is no GPU -> `ProbeError` with what a person should check.

Bytes from the driver are decoded here. `collect()` runs the whole read in a daemon thread bounded by a
timeout, so a hung driver call turns into a ProbeError instead of a hung pre-flight check.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from ..errors import ProbeError
from .snapshot import (
    Clocks,
    Ecc,
    EccCounts,
    GpuState,
    Memory,
    Mig,
    MigDevice,
    NvLink,
    Pcie,
    Process,
    Utilization,
)

DEFAULT_TIMEOUT_S = 10.0

# Errors that mean "this card cannot answer this question", not "this card is broken". NotFound answers
# nvmlDeviceGetMigDeviceHandleByIndex for an empty MIG slot; InvalidArgument is what some drivers return
# for an NVLink index past the card's links; CorruptedInforom affects inforom-backed fields (ECC counts)
# while the GPU still computes.
SOFT_ERRORS = (
    "NVMLError_NotSupported",
    "NVMLError_FunctionNotFound",
    "NVMLError_NoPermission",
    "NVMLError_NotFound",
    "NVMLError_NoData",
    "NVMLError_InvalidArgument",
    "NVMLError_Deprecated",
    "NVMLError_ArgumentVersionMismatch",
    "NVMLError_CorruptedInforom",
)
# Errors on which the v2 memory call is retried with v1 (old driver / old pynvml without `version=`).
MEMORY_V2_FALLBACK = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_ArgumentVersionMismatch")

# nvml.h: nvmlClocksEventReason* (formerly nvmlClocksThrottleReason*) bit values; names follow the
# <clocks_event_reason_*> tags of `nvidia-smi -q -x`, so NVML and XML snapshots say the same thing.
THROTTLE_REASON_BITS = (
    (0x0000000000000001, "gpu_idle"),
    (0x0000000000000002, "applications_clocks_setting"),
    (0x0000000000000004, "sw_power_cap"),
    (0x0000000000000008, "hw_slowdown"),
    (0x0000000000000010, "sync_boost"),
    (0x0000000000000020, "sw_thermal_slowdown"),
    (0x0000000000000040, "hw_thermal_slowdown"),
    (0x0000000000000080, "hw_power_brake_slowdown"),
    (0x0000000000000100, "display_clocks_setting"),
)

# nvml.h constants used below (stable across NVML versions; named here so the fake need not define them)
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_NVLINK_MAX_LINKS = 18  # nvml.h; pynvml's own value is used when the library has one
NVML_PSTATE_UNKNOWN = 32
NVML_VALUE_NOT_AVAILABLE = 0xFFFFFFFFFFFFFFFF  # unsigned long long -1: "no value" in process memory

_HINT = (
    "Check: is the NVIDIA driver installed and does `nvidia-smi` work? In a container, was it given the GPU "
    "(`docker run --gpus all`, NVIDIA_VISIBLE_DEVICES, the NVIDIA Container Toolkit)?"
)

# Init failures that stop the probe, by pynvml class name, each with what a person should check.
_INIT_MESSAGES = {
    "NVMLError_LibraryNotFound": "the NVML library (libnvidia-ml.so.1 / nvml.dll) was not found. " + _HINT,
    "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded. " + _HINT,
    "NVMLError_LibRmVersionMismatch": (
        "the NVML library and the loaded NVIDIA kernel module are different versions (the driver was "
        "updated without a reboot?). Reboot, or reload the kernel module (`sudo rmmod nvidia_uvm nvidia_drm "
        "nvidia_modeset nvidia && sudo modprobe nvidia`); `nvidia-smi` shows the same error until then."
    ),
    "NVMLError_NoPermission": (
        "no permission to open the NVIDIA devices (/dev/nvidia*). Check the device permissions and that "
        "this user may use the GPU; in a container, that it was given the GPU (`--gpus all`)."
    ),
}


class _GpuFailed(Exception):
    """Internal: a device-level NVML error; the GPU is reported with available=False."""


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00").strip()
    if isinstance(value, str):
        return value.strip("\x00").strip()
    return value


def _reason(exc) -> str:
    """A short reason for an NVML error, without calling back into a possibly broken library."""
    name = type(exc).__name__.replace("NVMLError_", "")
    try:
        text = str(exc)
    except Exception:  # pynvml's __str__ calls nvmlErrorString for codes it does not know
        text = f"NVML error {getattr(exc, 'value', '?')}"
    squashed = text.replace(" ", "").lower()
    return f"{text} ({name})" if name and name != "NVMLError" and name.lower() not in squashed else text


def throttle_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in THROTTLE_REASON_BITS if mask & bit)


def mig_profile_from_name(name: str | None) -> str | None:
    """'NVIDIA H100 80GB HBM3 MIG 3g.40gb' / 'MIG 1c.3g.71gb' -> '3g.40gb' / '1c.3g.71gb'."""
    if not name:
        return None
    m = re.search(r"\bMIG\s+((?:\d+c\.)?\d+g\.\d+gb(?:\+\w+)?)", name)
    return m.group(1) if m else None


@dataclass
class NvmlRead:
    """What one NVML session read: the GPUs and the driver-level facts for the host block."""

    gpus: tuple[GpuState, ...]
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_version: str | None = None
    calls: int = 0  # NVML functions called, nvmlInit and nvmlShutdown included


class NvmlSession:
    """One initialised NVML session. `lib` is the pynvml module (default: imported lazily).

    Use as a context manager or call open()/close(); `read()` returns an `NvmlRead`.
    `calls` counts every NVML function called through this session.
    """

    def __init__(self, lib=None):
        self._lib = lib
        self._open = False
        self.calls = 0

    # ---- life cycle --------------------------------------------------------------------------------
    def open(self) -> "NvmlSession":
        if self._open:
            return self
        if self._lib is None:
            try:
                import pynvml  # the only pynvml import in gpufit
            except ImportError as e:
                raise ProbeError(
                    f"cannot load the NVML Python binding ({e}); install nvidia-ml-py "
                    "(`pip install nvidia-ml-py`). " + _HINT
                ) from None
            self._lib = pynvml
        try:
            self._call("nvmlInit")
        except self._exc("NVMLError") as e:
            msg = _INIT_MESSAGES.get(type(e).__name__)
            raise ProbeError(
                "could not probe the GPUs: " + (msg or f"NVML failed to initialise: {_reason(e)}. " + _HINT)
            ) from None
        except OSError as e:  # a broken libnvidia-ml that fails to load at the OS level
            raise ProbeError(f"could not probe the GPUs: cannot load the NVML library ({e}). " + _HINT) from None
        self._open = True
        return self

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._call("nvmlShutdown")
            except Exception:  # shutting down a broken driver must not hide the real outcome
                pass

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # ---- the one query helper ----------------------------------------------------------------------
    def _exc(self, name: str):
        cls = getattr(self._lib, name, None)
        return cls if isinstance(cls, type) else _Never

    def _soft(self, exc) -> bool:
        return any(isinstance(exc, self._exc(n)) for n in SOFT_ERRORS)

    def _call(self, fn: str, *args, **kwargs):
        func = getattr(self._lib, fn, None)
        if func is None:
            # an older pynvml without this binding: same meaning as the driver lacking the function
            raise _MissingBinding(fn)
        self.calls += 1
        return func(*args, **kwargs)

    def _field(self, errors: dict, field: str, fn: str, *args, **kwargs):
        """Call `fn`; a soft error -> None with errors[field]; a device error -> _GpuFailed."""
        try:
            return _decode(self._call(fn, *args, **kwargs))
        except _MissingBinding as e:
            errors[field] = f"{e} is not in this pynvml"
        except self._exc("NVMLError") as e:
            if self._soft(e):
                errors[field] = _reason(e)
            else:
                raise _GpuFailed(f"{fn}: {_reason(e)}") from None
        return None

    # ---- reading -----------------------------------------------------------------------------------
    def read(self, host_ram_total: int | None = None, host_ram_available: int | None = None,
             process_name=None) -> NvmlRead:
        """Read every GPU. `host_ram_*` size unified-memory parts; `process_name(pid)` names processes."""
        self.open()
        sys_err: dict[str, str] = {}
        driver = self._field(sys_err, "driver_version", "nvmlSystemGetDriverVersion")
        nvml_version = self._system_field("nvmlSystemGetNVMLVersion")
        cuda = self._system_field("nvmlSystemGetCudaDriverVersion")
        cuda_s = f"{cuda // 1000}.{(cuda % 1000) // 10}" if isinstance(cuda, int) and cuda > 0 else None
        try:
            count = self._call("nvmlDeviceGetCount")
        except self._exc("NVMLError") as e:
            raise ProbeError(f"could not probe the GPUs: NVML cannot count them ({_reason(e)}). " + _HINT) from None
        if not count:
            raise ProbeError("NVML sees no NVIDIA GPU on this machine. " + _HINT)
        gpus = tuple(
            self._read_gpu(i, host_ram_total, host_ram_available, process_name) for i in range(count)
        )
        return NvmlRead(gpus, driver, cuda_s, nvml_version)

    def _system_field(self, fn):
        try:
            return self._field({}, fn, fn)
        except _GpuFailed:
            return None

    def _read_gpu(self, index, ram_total, ram_available, process_name) -> GpuState:
        g: dict = {"index": index}
        errors: dict[str, str] = {}
        try:
            try:
                h = self._call("nvmlDeviceGetHandleByIndex", index)
            except self._exc("NVMLError") as e:
                raise _GpuFailed(f"nvmlDeviceGetHandleByIndex: {_reason(e)}") from None
            self._read_identity(h, g, errors)
            self._read_memory(h, g, errors, ram_total, ram_available)
            self._read_state(h, g, errors)
            self._read_mig(h, g, errors)
            self._read_nvlink(h, g, errors)
            self._read_processes(h, g, errors, process_name)
            self._read_ecc(h, g, errors)
        except _GpuFailed as e:
            errors["gpu"] = f"GPU {index} is not usable: {e}"
            g["available"] = False
        return GpuState(errors=errors, **g)

    def _read_identity(self, h, g, errors):
        f = self._field
        g["name"] = f(errors, "name", "nvmlDeviceGetName", h)
        g["uuid"] = f(errors, "uuid", "nvmlDeviceGetUUID", h)
        g["serial"] = f(errors, "serial", "nvmlDeviceGetSerial", h)
        pci = f(errors, "pci_bus_id", "nvmlDeviceGetPciInfo", h)
        if pci is not None:
            bus = _decode(getattr(pci, "busId", None))
            g["pci_bus_id"] = bus or None
            dev_id = getattr(pci, "pciDeviceId", None)
            g["pci_device_id"] = f"0x{dev_id:08X}" if isinstance(dev_id, int) else None
        else:
            errors["pci_device_id"] = errors["pci_bus_id"]

    def _read_memory(self, h, g, errors, ram_total, ram_available):
        mem = None
        reserved_known = True
        try:
            mem = self._call("nvmlDeviceGetMemoryInfo", h, version=getattr(self._lib, "nvmlMemory_v2", 0x02000028))
        except (_MissingBinding, TypeError):
            pass  # an old pynvml without `version=`: use v1
        except self._exc("NVMLError") as e:
            if not any(isinstance(e, self._exc(n)) for n in MEMORY_V2_FALLBACK):
                if not self._soft(e):
                    raise _GpuFailed(f"nvmlDeviceGetMemoryInfo: {_reason(e)}") from None
        if mem is None:
            reserved_known = False
            mem = self._field(errors, "memory", "nvmlDeviceGetMemoryInfo", h)
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

    def _read_state(self, h, g, errors):
        f = self._field
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

    def _read_mig(self, h, g, errors):
        mode = self._field(errors, "mig", "nvmlDeviceGetMigMode", h)
        if mode is None:
            return  # Mig(enabled=None): not a MIG-capable card
        enabled = bool(mode[0])
        if not enabled:
            g["mig"] = Mig(enabled=False)
            return
        devices = []
        n = self._field(errors, "mig.devices", "nvmlDeviceGetMaxMigDeviceCount", h) or 0
        for i in range(n):
            try:
                mh = self._call("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
            except self._exc("NVMLError_NotFound"):
                continue  # an empty slot
            except (_MissingBinding, self._exc("NVMLError")) as e:
                errors[f"mig.devices[{i}]"] = _reason(e) if not isinstance(e, _MissingBinding) else str(e)
                continue
            devices.append(self._read_mig_device(i, mh, errors))
        g["mig"] = Mig(enabled=True, devices=tuple(devices))

    def _read_mig_device(self, i, mh, errors) -> MigDevice:
        e: dict[str, str] = {}
        f = self._field
        name = f(e, "name", "nvmlDeviceGetName", mh)
        mem = f(e, "memory", "nvmlDeviceGetMemoryInfo", mh)
        attrs = f(e, "multiprocessor_count", "nvmlDeviceGetAttributes", mh)
        dev = MigDevice(
            index=i,
            uuid=f(e, "uuid", "nvmlDeviceGetUUID", mh),
            profile=mig_profile_from_name(name),
            gpu_instance_id=f(e, "gpu_instance_id", "nvmlDeviceGetGpuInstanceId", mh),
            compute_instance_id=f(e, "compute_instance_id", "nvmlDeviceGetComputeInstanceId", mh),
            multiprocessor_count=getattr(attrs, "multiprocessorCount", None) if attrs is not None else None,
            memory=Memory(total=mem.total, free=mem.free, used=mem.used) if mem is not None else Memory(),
        )
        for k, v in e.items():
            errors[f"mig.devices[{i}].{k}"] = v
        return dev

    def _read_nvlink(self, h, g, errors):
        max_links = getattr(self._lib, "NVML_NVLINK_MAX_LINKS", NVML_NVLINK_MAX_LINKS)
        links = []
        for link in range(max_links):
            e: dict[str, str] = {}
            state = self._field(e, "nvlink", "nvmlDeviceGetNvLinkState", h, link)
            if state is None:
                if link == 0:
                    errors.update(e)  # no NVLink at all: say why the list is empty
                break  # past the card's last link
            links.append([link, bool(state)])
        version = None
        up = [l for l in links if l[1]]
        if up:  # every link of a card runs the same NVLink generation: one call, not one per link
            version = self._field({}, "nvlink", "nvmlDeviceGetNvLinkVersion", h, up[0][0])
        g["nvlink"] = tuple(NvLink(link=l, up=u, version=version if u else None) for l, u in links)

    def _read_processes(self, h, g, errors, process_name):
        procs = []
        for fn, kind in (("nvmlDeviceGetComputeRunningProcesses", "compute"),
                         ("nvmlDeviceGetGraphicsRunningProcesses", "graphics")):
            got = self._field(errors, f"processes.{kind}", fn, h)
            for p in got or ():
                used = getattr(p, "usedGpuMemory", None)
                if used is None or used == NVML_VALUE_NOT_AVAILABLE or used < 0:
                    used = None  # Windows WDDM and vGPU guests do not report per-process memory
                name = process_name(p.pid) if process_name else None
                procs.append(Process(pid=int(p.pid), name=name, used_bytes=used, kind=kind))
        g["processes"] = tuple(procs)

    def _read_ecc(self, h, g, errors):
        f = self._field
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


class _MissingBinding(Exception):
    def __init__(self, fn):
        super().__init__(fn)
        self.fn = fn


class _Never(Exception):
    """Stands in for a pynvml exception class the library does not define: never raised."""


def collect(lib=None, timeout_s: float = DEFAULT_TIMEOUT_S, host_ram_total=None, host_ram_available=None,
            process_name=None) -> NvmlRead:
    """Open NVML, read every GPU, close — in a daemon thread, bounded by `timeout_s`.

    A driver call that never returns leaves the thread behind (it is a daemon, so the process can still
    exit) and raises ProbeError here.
    """
    box: dict = {}

    def work():
        session = NvmlSession(lib)
        try:
            with session:
                box["read"] = session.read(host_ram_total, host_ram_available, process_name)
            box["calls"] = session.calls
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, name="gpufit-nvml", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise ProbeError(
            f"NVML did not answer within {timeout_s:g} s: the driver looks hung. Check whether `nvidia-smi` "
            "also hangs; if so look for Xid errors in `dmesg` and reset the GPU or reboot."
        )
    if "error" in box:
        raise box["error"]
    read = box["read"]
    read.calls = box.get("calls", 0)
    return read
