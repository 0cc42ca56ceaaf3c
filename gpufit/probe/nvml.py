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

Bytes from the driver are decoded here. What is read per GPU, field by field, is in `nvml_fields.py`. `collect()` runs the whole read in a daemon thread bounded by a
timeout, so a hung driver call turns into a ProbeError instead of a hung pre-flight check.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from ..errors import ProbeError
from .snapshot import GpuState

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
# What `_field_versions` says when a function is missing from the loaded library.
MISSING_FUNCTION = "FunctionNotFound"
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


class GpuFailed(Exception):
    """A device-level NVML error; the GPU is reported with available=False."""


def decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00").strip()
    if isinstance(value, str):
        return value.strip("\x00").strip()
    return value


def reason(exc) -> str:
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
                "could not probe the GPUs: " + (msg or f"NVML failed to initialise: {reason(e)}. " + _HINT)
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
            raise MissingBinding(fn)
        self.calls += 1
        return func(*args, **kwargs)

    def _field(self, errors: dict, field: str, fn: str, *args, **kwargs):
        """Call `fn`; a soft error -> None with errors[field]; a device error -> GpuFailed."""
        return self._field_versions(errors, field, (fn,), *args, **kwargs)

    def _field_versions(self, errors: dict, field: str, fns, *args, **kwargs):
        """`_field` over the versions of one call, newest first: the next is asked only when the one before
        is not in this pynvml or this NVML library (an older driver), so the newest the driver has answers.

        pynvml's unversioned process-list wrappers call the `_v3` symbol and raise
        `NVMLLibraryMismatchError` (not an NVMLError) where the driver predates it (R510); that counts as
        "not in this library" like FunctionNotFound.
        """
        for fn in fns:
            errors.pop(field, None)
            try:
                return decode(self._call(fn, *args, **kwargs))
            except MissingBinding as e:
                errors[field] = f"{e} is not in this pynvml"
            except self._exc("NVMLLibraryMismatchError"):
                errors[field] = f"{fn}: the NVML library (driver) is older than this nvidia-ml-py ({MISSING_FUNCTION})"
            except self._exc("NVMLError") as e:
                if isinstance(e, self._exc("NVMLError_FunctionNotFound")):
                    errors[field] = f"{fn}: {reason(e)}"
                elif self._soft(e):
                    errors[field] = reason(e)
                    return None
                else:
                    raise GpuFailed(f"{fn}: {reason(e)}") from None
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
            raise ProbeError(f"could not probe the GPUs: NVML cannot count them ({reason(e)}). " + _HINT) from None
        if not count:
            raise ProbeError("NVML sees no NVIDIA GPU on this machine. " + _HINT)
        gpus = tuple(
            self._read_gpu(i, host_ram_total, host_ram_available, process_name) for i in range(count)
        )
        return NvmlRead(gpus, driver, cuda_s, nvml_version)

    def _system_field(self, fn):
        try:
            return self._field({}, fn, fn)
        except GpuFailed:
            return None

    def _read_gpu(self, index, ram_total, ram_available, process_name) -> GpuState:
        from . import nvml_fields as fields
        g: dict = {"index": index}
        errors: dict[str, str] = {}
        try:
            try:
                h = self._call("nvmlDeviceGetHandleByIndex", index)
            except self._exc("NVMLError") as e:
                raise GpuFailed(f"nvmlDeviceGetHandleByIndex: {reason(e)}") from None
            fields.read_identity(self, h, g, errors)
            fields.read_memory(self, h, g, errors, ram_total, ram_available)
            fields.read_state(self, h, g, errors)
            fields.read_mig(self, h, g, errors)
            fields.read_nvlink(self, h, g, errors)
            fields.read_processes(self, h, g, errors, process_name)
            fields.read_ecc(self, h, g, errors)
        except GpuFailed as e:
            errors["gpu"] = f"GPU {index} is not usable: {e}"
            g["available"] = False
        return GpuState(errors=errors, **g)

class MissingBinding(Exception):
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
