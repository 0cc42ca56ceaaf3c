"""What the probe saw: frozen dataclasses that round-trip through JSON with the same keys on every host.

Memory is int bytes; a value NVML does not support is None (JSON null), never 0 or -1, and its key is
always present. `errors` maps a field name to why it is None. Schema: "gpufit.snapshot/1" (DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import SnapshotError
from ..fsutil import read_record

SCHEMA = "gpufit.snapshot/1"


@dataclass(frozen=True)
class Memory:
    """Framebuffer memory in bytes (None where NVML does not say)."""
    total: int | None = None
    free: int | None = None
    used: int | None = None
    reserved: int | None = None  # driver/firmware reserved (NVML v2 memory info); None with v1


@dataclass(frozen=True)
class Clocks:
    """SM and memory clocks now and at most, MHz."""
    sm: int | None = None
    mem: int | None = None
    sm_max: int | None = None
    mem_max: int | None = None


@dataclass(frozen=True)
class Utilization:
    """GPU and memory-controller utilisation, percent."""
    gpu: int | None = None  # percent
    memory: int | None = None  # percent


@dataclass(frozen=True)
class Pcie:
    """PCIe link generation and width, now and at most."""
    gen: int | None = None
    width: int | None = None
    gen_max: int | None = None
    width_max: int | None = None


@dataclass(frozen=True)
class MigDevice:
    """One MIG device: its profile, instance ids and memory."""
    index: int
    uuid: str | None = None
    profile: str | None = None  # "3g.40gb"
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    multiprocessor_count: int | None = None
    memory: Memory = field(default_factory=Memory)


@dataclass(frozen=True)
class Mig:
    """MIG mode and the MIG devices of a GPU."""
    enabled: bool | None = None  # None: MIG not supported / unknown
    devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class NvLink:
    """One NVLink link and whether it is up."""
    link: int
    up: bool
    version: int | None = None
    remote_pci_bus_id: str | None = None


@dataclass(frozen=True)
class Process:
    """A process holding GPU memory."""
    pid: int
    name: str | None = None
    used_bytes: int | None = None
    kind: str = "compute"  # compute | graphics


@dataclass(frozen=True)
class EccCounts:
    """Corrected / uncorrected ECC error totals."""
    corrected: int | None = None
    uncorrected: int | None = None


@dataclass(frozen=True)
class Ecc:
    """ECC mode, error counts, retired pages and remapped rows."""
    enabled: bool | None = None
    volatile: EccCounts = field(default_factory=EccCounts)
    aggregate: EccCounts = field(default_factory=EccCounts)
    retired_pages_single: int | None = None  # pre-Ampere page retirement
    retired_pages_double: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = None  # Ampere+ row remapping
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None


@dataclass(frozen=True)
class GpuState:
    """Everything the probe read of one GPU; `errors` says why a field is None."""
    index: int
    name: str | None = None
    uuid: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    pci_device_id: str | None = None  # "0x220410DE" as NVML's pciDeviceId (device << 16 | vendor)
    memory: Memory = field(default_factory=Memory)
    clocks_mhz: Clocks = field(default_factory=Clocks)
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    utilization: Utilization = field(default_factory=Utilization)
    compute_capability: str | None = None  # "8.6"
    pcie: Pcie = field(default_factory=Pcie)
    mig: Mig = field(default_factory=Mig)
    nvlink: tuple[NvLink, ...] = ()
    processes: tuple[Process, ...] = ()
    ecc: Ecc = field(default_factory=Ecc)
    throttle_reasons: tuple[str, ...] = ()  # active clock-event reasons, e.g. "hw_thermal_slowdown"
    fan_percent: int | None = None
    performance_state: str | None = None  # "P0"
    unified_memory: bool = False  # GPU memory is host memory (GH200 / GB10 class): sized from host RAM
    available: bool = True  # False: the GPU is lost / erroring; it is reported but never used
    errors: dict[str, str] = field(default_factory=dict)  # field -> why it is None


@dataclass(frozen=True)
class HostInfo:
    """The host: CPU, RAM, driver and CUDA versions, when the snapshot was taken."""
    hostname: str | None = None
    os: str | None = None
    cpu_count: int | None = None
    cpu_model: str | None = None
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # "12.4"
    nvml_version: str | None = None
    taken_at: str | None = None  # ISO 8601 UTC


@dataclass(frozen=True)
class Snapshot:
    """What the probe saw: the host and every GPU (schema gpufit.snapshot/1)."""
    host: HostInfo
    gpus: tuple[GpuState, ...] = ()
    source: str = "nvml"  # "nvml" | "snapshot:PATH" | "nvidia-smi-xml:PATH" | "catalog"
    schema: str = SCHEMA

    def to_dict(self) -> dict:
        d = to_jsonable(self)
        # schema first for readability
        return {"schema": d.pop("schema"), **d}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data, path="<snapshot>") -> "Snapshot":
        if not isinstance(data, dict):
            raise SnapshotError(path, "top level must be a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise SnapshotError(path, f"schema is {schema!r}, expected {SCHEMA!r}", "schema")
        return read_record(cls, data, SnapshotError, path, ignore_unknown_keys=True)


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj
