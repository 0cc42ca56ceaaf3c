"""Inputs and outputs of the estimator: plain frozen data, no I/O.

`Device` is one schedulable unit (a whole GPU, or a MIG device) with the memory the estimator may use.
`FitRequest` is everything an estimate depends on; `FitResult.to_dict()` is the `gpufit.fit/1` object.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..catalog.types import GpuSpec, ModelSpec, QuantFormat

if TYPE_CHECKING:  # pragma: no cover  (engines.base imports this module's users)
    from .engines import EngineName
    from .engines.base import EngineMemory, Refusal

FIT_SCHEMA = "gpufit.fit/1"


class TextEnum(str, enum.Enum):
    """A closed set of names that are their text: compares equal to it, serialises as it (json), and
    prints as it in every Python (3.11+ would print a plain (str, Enum) member as "Class.MEMBER")."""

    def __str__(self) -> str:
        return str(self.value)


class Verdict(TextEnum):
    """The closed set of verdicts (DESIGN.md)."""
    FITS = "fits"
    TIGHT = "tight"
    OFFLOAD = "offload"
    NO_FIT = "no_fit"

    @property
    def fits(self) -> bool:
        """All on the GPUs: fits, or fits below the wanted headroom (tight)."""
        return self in (Verdict.FITS, Verdict.TIGHT)


class Strategy(TextEnum):
    """How a model is laid over the devices."""
    SINGLE = "single"
    TENSOR_PARALLEL = "tensor_parallel"
    PIPELINE_PARALLEL = "pipeline_parallel"
    LAYER_SPLIT = "layer_split"
    CPU_OFFLOAD = "cpu_offload"


@dataclass(frozen=True)
class Message:
    """A warning or note as data: a stable `code` to key on, the figures in `data` (bytes, counts,
    names; never formatted), and `text` only where the words are a quotation (an engine's own
    message) or a statement the caller made. render/words.py words it for people."""
    code: str
    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class Device:
    """One schedulable unit (a whole GPU or a MIG device) and the memory the estimator may use on it."""
    index: str  # "0", or "0/1" for MIG device 1 of GPU 0
    name: str
    total_bytes: int
    free_bytes: int  # what is free now (probe) or total (catalog planning)
    uuid: str | None = None
    spec: GpuSpec | None = None  # catalog match; None if the card is not in the catalog
    bandwidth_gbps: float | None = None  # this unit's share (MIG: slice share of the card's)
    bf16_tflops: float | None = None
    nvlink: bool = False  # linked to its peers by NVLink (affects tensor-parallel speed)
    mig_profile: str | None = None
    # memory the driver keeps for itself (NVML v2 `reserved`): CUDA's total is total - reserved
    reserved_bytes: int | None = None
    # the physical GPU this unit is part of (MIG devices of one card share it): units with the same
    # parent are never combined by tensor / pipeline parallelism
    parent: str | None = None
    # ECC mode as the driver reports it (None: not reported, or a catalog card: speed.ecc_enabled
    # takes the card class's default)
    ecc: bool | None = None

    @property
    def catalog_key(self) -> str | None:
        return self.spec.key if self.spec else None

    @property
    def share(self) -> float:
        """The fraction of its card this unit has (a MIG slice, a shared GPU instance): the probe
        scales bandwidth and throughput by the same share, so bandwidth says it; 1.0 for a whole card."""
        if self.spec and self.bandwidth_gbps and self.spec.bandwidth_gbps:
            return min(1.0, self.bandwidth_gbps / self.spec.bandwidth_gbps)
        return 1.0

    @classmethod
    def from_spec(cls, spec: GpuSpec, index: int | str) -> "Device":
        """A catalog card with nothing running on it: free = total (planning, "N of these")."""
        return cls(index=str(index), name=spec.name, total_bytes=spec.memory_bytes,
                   free_bytes=spec.memory_bytes, spec=spec, bandwidth_gbps=spec.bandwidth_gbps,
                   bf16_tflops=spec.bf16_tflops, nvlink=bool(spec.nvlink_gbps))


def devices_from_specs(items: Iterable[tuple[GpuSpec, int]]) -> tuple[Device, ...]:
    """Catalog hardware for `gpufit plan --gpu KEY:N`: [(GpuSpec, count), ...] -> every card empty
    (free = total), indexes 0..N-1 in the order given."""
    out: list[Device] = []
    for spec, count in items:
        for _ in range(count):
            out.append(Device.from_spec(spec, len(out)))
    return tuple(out)


@dataclass(frozen=True)
class FitRequest:
    """Everything an estimate depends on."""
    model: ModelSpec
    quant: QuantFormat
    kv_dtype: QuantFormat
    context: int
    batch: int
    engine: EngineName  # a key of engines.REGISTRY (a plain "vllm" is taken and made the enum member)
    devices: tuple[Device, ...]
    host_ram_available_bytes: int | None = None  # for CPU offload; None = unknown
    host_bandwidth_gbps: float | None = None  # host memory bandwidth for offloaded layers
    reserve_bytes: int = 0  # per device, kept free on purpose (--reserve)
    gpu_memory_utilization: float | None = None  # vLLM; None = engine default
    min_headroom_bytes: int | None = None  # None = max(1 GiB, 5 % of the card)
    weights_bytes_exact: int | None = None  # from a model file: exact tensor bytes
    weights_source: str | None = None  # "safetensors headers", "gguf tensor table", None = computed
    planning: bool = False  # True for `plan` (catalog hardware, nothing probed)
    # the engine's version family ("0.18" for --engine vllm@0.18); None = the current release
    engine_version: str | None = None
    # engine-specific settings from the server's own flags (`check -- vllm serve ...`); each engine
    # module documents the keys it reads (vLLM: max_num_batched_tokens, enforce_eager, ...)
    engine_settings: dict[str, Any] = field(default_factory=dict)
    # the model as the user named a local file / folder (printed in the engine's command line)
    model_path: str | None = None
    batch_given: bool = False  # --batch was given (vLLM's --max-num-seqs is printed only then)

    def __post_init__(self) -> None:
        from .engines import EngineName  # the engines import this module: bound when a request is made

        object.__setattr__(self, "engine", EngineName(self.engine))

    @property
    def engine_label(self) -> str:
        """The engine as the user names it: "vllm", or "vllm@0.18" for an older family."""
        return self.engine if self.engine_version is None else f"{self.engine}@{self.engine_version}"


@dataclass(frozen=True)
class MemoryBreakdown:
    """The whole model's memory by part, in bytes."""
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.overhead_bytes


@dataclass(frozen=True)
class DeviceUse:
    """What one device must hold under the chosen placement, and what stays free."""
    index: str
    uuid: str | None
    name: str
    catalog_key: str | None
    total_bytes: int
    free_bytes: int
    needed_bytes: int  # what this device must hold under the chosen placement (0 = unused)
    headroom_bytes: int  # free_bytes - reserve - needed_bytes (negative = short)
    layers: int = 0
    reserved_bytes: int | None = None  # what the driver keeps (NVML v2 reserved), None = unknown
    parent: str | None = None  # the physical GPU of a MIG device (units of one parent never combine)


@dataclass(frozen=True)
class Placement:
    """How the model is laid over the devices (and host RAM)."""
    strategy: Strategy
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    layers_per_device: tuple[int, ...] = ()
    gpu_layers: int = 0
    cpu_bytes: int = 0


@dataclass(frozen=True)
class Performance:
    """Expected speed and the largest context / batch that fit, with the assumptions in `basis`."""
    decode_tokens_per_s: float | None
    prefill_tokens_per_s: float | None
    max_context: int | None  # largest context that fits at this batch
    max_batch: int | None  # largest batch that fits at this context
    basis: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Alternative:
    """Something that would fit instead, with the option values that realise it."""
    kind: str  # quant | context | gpus | offload | model | engine_setting
    summary: str  # what to change, in the user's own options (no units: render adds the figures)
    verdict: Verdict
    changes: dict[str, Any] = field(default_factory=dict)  # the option values that realise it
    total_bytes: int | None = None
    decode_tokens_per_s: float | None = None
    data: dict[str, Any] = field(default_factory=dict)  # figures render words (host RAM bytes, ...)


@dataclass(frozen=True)
class FitResult:
    """The answer for one request; `to_dict()` is the gpufit.fit/1 object."""
    request: FitRequest
    verdict: Verdict
    memory: MemoryBreakdown
    devices: tuple[DeviceUse, ...]
    placement: Placement
    performance: Performance
    alternatives: tuple[Alternative, ...] = ()
    engine_args: dict[str, str] = field(default_factory=dict)
    warnings: tuple[Message, ...] = ()
    notes: tuple[Message, ...] = ()  # defaults and assumptions shown to the user
    # the engine's own start-up accounting (engines.base.EngineMemory), None where it has none
    engine_memory: "EngineMemory | None" = None
    # the engine's refusal when it would not start or serve the request (engines.base.Refusal)
    refusal: "Refusal | None" = None

    def to_dict(self) -> dict[str, Any]:
        """The gpufit.fit/1 object. Built by render/json.py, where messages are worded (imported at
        call time: the estimator itself formats nothing)."""
        from ..render.json import fit_object

        return fit_object(self)
