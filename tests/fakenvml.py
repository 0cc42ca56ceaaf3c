"""A fake pynvml module fed from a Snapshot (e.g. a real nvidia-smi capture), for tests without a GPU.

It implements the pynvml calls gpufit uses, raises the *real* `pynvml.NVMLError_*` classes (built as
`pynvml.NVMLError(code)`, which pynvml maps to the subclass), and counts every call. A value that is None
in the snapshot answers NotSupported, as NVML does. Faults are switched on by constructor arguments.
"""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import pynvml

from gpufit.probe.nvml import THROTTLE_REASON_BITS
from gpufit.probe.snapshot import GpuState, Snapshot


def err(code):
    return pynvml.NVMLError(code)


NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED


class Handle:
    def __init__(self, gpu: int, mig: int | None = None):
        self.gpu, self.mig = gpu, mig

    def __repr__(self):
        return f"Handle({self.gpu}, {self.mig})"


class FakeNvml:
    """Use an instance where the pynvml module goes: `take_snapshot(lib=FakeNvml(snapshot))`."""

    def __init__(self, snapshot: Snapshot, *, init_error: int | None = None, lost: dict | None = None,
                 unsupported: set[str] = frozenset(), no_memory: set[int] = frozenset(), no_v2: bool = False,
                 hang_s: float = 0.0, hang_in: str = "nvmlDeviceGetName", count: int | None = None,
                 compute_capability: dict[int, str] | None = None, max_mig: int = 7):
        self.snap = snapshot
        self.gpus: list[GpuState] = list(snapshot.gpus)
        self.init_error = init_error
        self.lost = lost or {}  # gpu index -> NVML error code raised by every call on that GPU
        self.unsupported = set(unsupported)  # function names answering NotSupported
        self.no_memory = set(no_memory)  # gpu indexes whose memory info is NotSupported (unified memory)
        self.no_v2 = no_v2
        self.hang_s, self.hang_in = hang_s, hang_in
        self.count = count
        self.cc = compute_capability or {}
        self.max_mig = max_mig
        self.calls: Counter = Counter()
        self.initialised = 0
        # the real exception classes and constants pynvml exposes
        for name in dir(pynvml):
            if name.startswith("NVMLError") or name.startswith("NVML_ERROR_"):
                setattr(self, name, getattr(pynvml, name))
        self.nvmlMemory_v2 = pynvml.nvmlMemory_v2
        self.NVML_NVLINK_MAX_LINKS = pynvml.NVML_NVLINK_MAX_LINKS

    # ---- plumbing ----------------------------------------------------------------------------------
    def __getattr__(self, name):
        if name.startswith("nvml"):
            impl = getattr(type(self), "_" + name, None)
            if impl is None:
                raise AttributeError(name)

            def call(*args, **kwargs):
                self.calls[name] += 1
                if self.hang_s and name == self.hang_in:
                    time.sleep(self.hang_s)
                if name in self.unsupported:
                    raise err(NOT_SUPPORTED)
                if args and isinstance(args[0], Handle) and args[0].gpu in self.lost:
                    raise err(self.lost[args[0].gpu])
                return impl(self, *args, **kwargs)

            return call
        raise AttributeError(name)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def _g(self, h: Handle) -> GpuState:
        return self.gpus[h.gpu]

    def _mig(self, h: Handle):
        return next(m for m in self._g(h).mig.devices if m.index == h.mig)

    @staticmethod
    def _need(v):
        if v is None:
            raise err(NOT_SUPPORTED)
        return v

    # ---- system ------------------------------------------------------------------------------------
    def _nvmlInit(self):
        if self.init_error is not None:
            raise err(self.init_error)
        self.initialised += 1

    def _nvmlShutdown(self):
        self.initialised -= 1

    def _nvmlSystemGetDriverVersion(self):
        return self._need(self.snap.host.driver_version)

    def _nvmlSystemGetNVMLVersion(self):
        return self._need(self.snap.host.nvml_version or "12.550")

    def _nvmlSystemGetCudaDriverVersion(self):
        v = self.snap.host.cuda_driver_version or "12.4"
        major, minor = v.split(".")[:2]
        return int(major) * 1000 + int(minor) * 10

    def _nvmlDeviceGetCount(self):
        return len(self.gpus) if self.count is None else self.count

    def _nvmlDeviceGetHandleByIndex(self, i):
        if i in self.lost:
            raise err(self.lost[i])
        return Handle(i)

    # ---- identity ----------------------------------------------------------------------------------
    def _nvmlDeviceGetName(self, h):
        if h.mig is not None:
            m = self._mig(h)
            return f"{self._g(h).name} MIG {m.profile}".encode() if m.profile else self._g(h).name.encode()
        return self._need(self._g(h).name).encode()  # bytes, as older pynvml returned them

    def _nvmlDeviceGetUUID(self, h):
        if h.mig is not None:
            return self._need(self._mig(h).uuid)
        return self._need(self._g(h).uuid).encode()

    def _nvmlDeviceGetSerial(self, h):
        return self._need(self._g(h).serial)

    def _nvmlDeviceGetPciInfo(self, h):
        g = self._g(h)
        dev = int(g.pci_device_id, 16) if g.pci_device_id else 0
        return SimpleNamespace(busId=(g.pci_bus_id or "").encode(), pciDeviceId=dev)

    # ---- memory ------------------------------------------------------------------------------------
    def _nvmlDeviceGetMemoryInfo(self, h, version=None):
        if h.mig is not None:
            m = self._mig(h).memory
            if version:
                raise err(NOT_SUPPORTED)
            return SimpleNamespace(total=m.total, free=m.free, used=m.used)
        if h.gpu in self.no_memory:
            raise err(NOT_SUPPORTED)
        if version and self.no_v2:
            raise err(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        m = self._g(h).memory
        self._need(m.total)
        if version:
            return SimpleNamespace(total=m.total, free=m.free, used=m.used, reserved=m.reserved or 0, version=version)
        return SimpleNamespace(total=m.total, free=m.free, used=m.used)

    # ---- state -------------------------------------------------------------------------------------
    def _nvmlDeviceGetClockInfo(self, h, clock):
        c = self._g(h).clocks_mhz
        return self._need(c.sm if clock == pynvml.NVML_CLOCK_SM else c.mem)

    def _nvmlDeviceGetMaxClockInfo(self, h, clock):
        c = self._g(h).clocks_mhz
        return self._need(c.sm_max if clock == pynvml.NVML_CLOCK_SM else c.mem_max)

    def _nvmlDeviceGetTemperature(self, h, sensor):
        return self._need(self._g(h).temperature_c)

    def _nvmlDeviceGetPowerUsage(self, h):
        return int(round(self._need(self._g(h).power_w) * 1000))

    def _nvmlDeviceGetEnforcedPowerLimit(self, h):
        return int(round(self._need(self._g(h).power_limit_w) * 1000))

    def _nvmlDeviceGetUtilizationRates(self, h):
        u = self._g(h).utilization
        self._need(u.gpu)
        return SimpleNamespace(gpu=u.gpu, memory=u.memory)

    def _nvmlDeviceGetCudaComputeCapability(self, h):
        cc = self.cc.get(h.gpu) or self._g(h).compute_capability or "8.0"
        major, minor = cc.split(".")
        return int(major), int(minor)

    def _nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return self._need(self._g(h).pcie.gen)

    def _nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return self._need(self._g(h).pcie.width)

    def _nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return self._need(self._g(h).pcie.gen_max)

    def _nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return self._need(self._g(h).pcie.width_max)

    def _nvmlDeviceGetCurrentClocksEventReasons(self, h):
        names = set(self._g(h).throttle_reasons)
        return sum(bit for bit, name in THROTTLE_REASON_BITS if name in names)

    def _nvmlDeviceGetFanSpeed(self, h):
        return self._need(self._g(h).fan_percent)

    def _nvmlDeviceGetPerformanceState(self, h):
        ps = self._need(self._g(h).performance_state)
        return int(ps.lstrip("P"))

    # ---- MIG ---------------------------------------------------------------------------------------
    def _nvmlDeviceGetMigMode(self, h):
        enabled = self._need(self._g(h).mig.enabled)
        return (int(enabled), int(enabled))

    def _nvmlDeviceGetMaxMigDeviceCount(self, h):
        return self.max_mig

    def _nvmlDeviceGetMigDeviceHandleByIndex(self, h, i):
        if not any(m.index == i for m in self._g(h).mig.devices):
            raise err(pynvml.NVML_ERROR_NOT_FOUND)
        return Handle(h.gpu, i)

    def _nvmlDeviceGetAttributes(self, h):
        return SimpleNamespace(multiprocessorCount=self._need(self._mig(h).multiprocessor_count))

    def _nvmlDeviceGetGpuInstanceId(self, h):
        return self._need(self._mig(h).gpu_instance_id)

    def _nvmlDeviceGetComputeInstanceId(self, h):
        return self._need(self._mig(h).compute_instance_id)

    # ---- NVLink, processes, ECC --------------------------------------------------------------------
    def _nvmlDeviceGetNvLinkState(self, h, link):
        links = self._g(h).nvlink
        if link >= len(links):
            raise err(NOT_SUPPORTED)
        return int(links[link].up)

    def _nvmlDeviceGetNvLinkVersion(self, h, link):
        return self._need(self._g(h).nvlink[link].version)

    def _procs(self, h, kind):
        return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_bytes)
                for p in self._g(h).processes if p.kind == kind]

    def _nvmlDeviceGetComputeRunningProcesses(self, h):
        return self._procs(h, "compute")

    def _nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return self._procs(h, "graphics")

    def _nvmlDeviceGetEccMode(self, h):
        on = self._need(self._g(h).ecc.enabled)
        return (int(on), int(on))

    def _nvmlDeviceGetTotalEccErrors(self, h, error_type, counter):
        e = self._g(h).ecc
        counts = e.volatile if counter == pynvml.NVML_VOLATILE_ECC else e.aggregate
        return self._need(counts.corrected if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
                          else counts.uncorrected)

    def _nvmlDeviceGetRemappedRows(self, h):
        e = self._g(h).ecc
        self._need(e.remapped_rows_correctable)
        return (e.remapped_rows_correctable, e.remapped_rows_uncorrectable or 0,
                int(bool(e.remapped_rows_pending)), int(bool(e.remapped_rows_failure)))

    def _nvmlDeviceGetRetiredPages(self, h, cause):
        e = self._g(h).ecc
        n = e.retired_pages_single if cause == 0 else e.retired_pages_double
        return [0x1000 * i for i in range(self._need(n))]

    def _nvmlDeviceGetRetiredPagesPendingStatus(self, h):
        return int(bool(self._g(h).ecc.retired_pages_pending))
