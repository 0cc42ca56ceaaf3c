"""The engine protocol: what the core asks every inference engine, and nothing else.

An engine module (vllm.py, llama_cpp.py, ollama.py, transformers.py) subclasses `Engine` and overrides
what its engine does differently; the core (sizing, placement, verdict, flags) calls these methods
and never branches on an engine's name. Adding an engine is one module and one line in
`engines/__init__.py` (REGISTRY).

Everything here is pure: numbers and catalog records in, bytes or records out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from ...catalog.types import ModelSpec, QuantFormat
from .. import memory
from ..types import Message, Strategy
from . import profiles
from .profiles import EngineProfile

if TYPE_CHECKING:  # pragma: no cover
    from ..placement import DevicePlan, Plan
    from ..types import Device, FitRequest, FitResult


class PrefillFit(TypedDict):
    """An engine's prefill factors (Engine.prefill_fit, read by speed.prefill_rate)."""
    gemm_efficiency: float  # achieved / datasheet tensor rate
    tflops_per_watt: float | None  # sustained rate per board watt, None = no cap
    attn_bytes_per_head_cell: float  # the scores' traffic without flash attention
    dequant_bytes_per_weight: float  # an FP16 copy of quantized weights per ubatch
    fp16_accumulate: bool  # GEMMs at twice a GeForce datasheet's FP32-accumulate figure
    source: str


class PrefillBatching(TypedDict):
    """How an engine runs a prompt (Engine.prefill_batching). `mmq_from_cc`: the compute capability
    from which the engine multiplies quantized weights as they are stored (llama.cpp's MMQ kernels),
    with no FP16 copy of them per ubatch; None where it always makes the copy (or has none to make)."""
    n_batch: int
    n_ubatch: int
    flash_attn: bool
    mmq_from_cc: float | None


@dataclass(frozen=True)
class Refusal:
    """An engine's own refusal to start (or to serve what was asked), with its words."""
    code: str  # stable: free_memory_below_utilization | no_cache_blocks | kv_too_small | ...
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineMemory:
    """The engine's own accounting, for the bottleneck rank; None where the engine has no such figure."""
    budget_bytes: int | None = None
    weights_bytes: int | None = None
    activation_peak_bytes: int | None = None
    non_torch_bytes: int | None = None
    cuda_graph_bytes: int | None = None
    kv_pool_bytes: int | None = None
    kv_pool_tokens: int | None = None
    max_concurrency: float | None = None
    max_model_len_fit: int | None = None
    refusal: Refusal | None = None
    # which device the figures are for (the rank that bounds the pool)
    device: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # which of the engine's own logs these figures reproduce, so the text can word them as that log does:
    # "kv_pool" (a profile run then a KV pool: vLLM's gpu_worker), "scheduler" (a per-GPU layer fit:
    # Ollama's "offload to cuda" line)
    log: str = "kv_pool"

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "weights_bytes": self.weights_bytes,
            "activation_peak_bytes": self.activation_peak_bytes,
            "non_torch_bytes": self.non_torch_bytes,
            "cuda_graph_bytes": self.cuda_graph_bytes,
            "kv_pool_bytes": self.kv_pool_bytes,
            "kv_pool_tokens": self.kv_pool_tokens,
            "max_concurrency": self.max_concurrency,
            "max_model_len_fit": self.max_model_len_fit,
            "refusal": None if self.refusal is None else {
                "code": self.refusal.code, "message": self.refusal.message, **({"data": dict(self.refusal.data)}
                                                                               if self.refusal.data else {})},
            "device": self.device,
            **dict(self.extra),
        }


@dataclass(frozen=True)
class ServerCommand:
    """What an engine's own command line asks for, as estimate options (None = not given).

    `settings` are engine-specific values the engine module reads back from FitRequest.engine_settings
    (vLLM: max_num_batched_tokens, enforce_eager, ...). `ignored` lists flags that do not change memory;
    `unknown` flags this parser does not know (both said under "Assumed:")."""
    engine: str
    model: str | None = None
    version: str | None = None
    context: int | None = None
    batch: int | None = None
    quant: str | None = None
    kv_dtype: str | None = None
    gpu_memory_utilization: float | None = None
    gpus: str | None = None  # CUDA_VISIBLE_DEVICES of the server's environment
    settings: Mapping[str, Any] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    #: the context the server runs when its flags name none (0: the model's maximum, None: the
    #: caller's default)
    default_context: int | None = None
    #: what the parser assumed, in words for "Assumed:"
    notes: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()  # the server's environment variables read (K=V), for "Assumed:"


class Engine:
    """Default behaviour of an engine; each engine module overrides what differs. Stateless: one
    instance per (engine, version family) lives in the registry."""

    key: str = ""
    #: the version family this instance models ("0.18"), None = the current release
    version: str | None = None
    profile: EngineProfile
    #: words for "Assumed:" when no version was asked for
    default_version_note: str | None = None
    #: the name a multi-GPU contiguous layer split has on this engine
    split_strategy: Strategy = Strategy.LAYER_SPLIT
    #: llama.cpp spreads over every visible GPU by default, in proportion to free memory
    uses_all_gpus: bool = False
    #: llama.cpp's n_layer + 1 split (output layer last) instead of a capacity-proportional one
    splits_like_llama_cpp: bool = False
    #: GGUF files and ggml types run here
    runs_gguf: bool = False

    # ---- what the engine holds ------------------------------------------------------------------
    def weight_split(self, m: ModelSpec, q: QuantFormat, exact_total: int | None) -> memory.WeightSplit:
        """Weights as this engine loads them (whole model, not per rank)."""
        return memory.weight_split(m, q, exact_total=exact_total)

    def rank_layer_bytes(self, req: "FitRequest", ws: memory.WeightSplit, layers: int, tp: int) -> float:
        """Bytes of `layers` transformer layers one tensor-parallel rank holds."""
        return ws.per_layer * layers / tp

    def rank_vocab_bytes(self, req: "FitRequest", nbytes: int, tp: int) -> float:
        """Bytes of a vocabulary-sized tensor (embeddings, output head) on one rank."""
        return nbytes / tp

    def weights_off_gpu(self, req: "FitRequest") -> int:
        """Weight bytes per GPU the engine's own flags keep in host memory (vLLM --cpu-offload-gb)."""
        return 0

    def kv_bytes(self, req: "FitRequest", layers: int | None = None, tp: int = 1) -> int:
        """KV cache (and fixed per-sequence state) for `req.batch` sequences of `req.context` tokens
        on one rank holding `layers` of the model's layers (None = all)."""
        return memory.kv_cache_bytes(req.model, req.kv_dtype, req.context, req.batch, tp=tp, layers=layers)

    def activation_bytes(self, req: "FitRequest", tp: int = 1, multi_gpu: bool = False) -> int:
        return memory.transformers_activation_bytes(req.model, req.context, req.batch)

    def host_resident_bytes(self, req: "FitRequest") -> int:
        """Bytes the engine keeps in host RAM by its own settings, besides offloaded layers and host
        embeddings (llama.cpp: expert tensors under --n-cpu-moe, the KV cache under --no-kv-offload)."""
        return 0

    def host_read_bytes_per_token(self, req: "FitRequest") -> float:
        """Weight bytes a decoded token reads from host RAM by those settings (computed on the CPU)."""
        return 0.0

    # ---- speed ----------------------------------------------------------------------------------
    def prefill_fit(self) -> PrefillFit:
        """Prefill factors (speed.prefill_rate): gemm_efficiency (achieved / datasheet tensor rate),
        tflops_per_watt (sustained rate per board watt, None = no cap), attn_bytes_per_head_cell (the
        scores' traffic without flash attention), dequant_bytes_per_weight (an FP16 copy per ubatch),
        fp16_accumulate (GEMMs at twice a GeForce datasheet's FP32-accumulate figure), source. The
        default: the profile's uncalibrated efficiency and nothing else, said in `source`."""
        return {"gemm_efficiency": self.profile.prefill_efficiency, "tflops_per_watt": None,
                "attn_bytes_per_head_cell": 0.0, "dequant_bytes_per_weight": 0.0, "fp16_accumulate": False,
                "source": f"{self.key} default (not calibrated: bench/data has no {self.key} rows)"}

    def prefill_batching(self, req: "FitRequest") -> PrefillBatching:
        """How the engine runs a prompt: n_batch, n_ubatch tokens, flash_attn. The default: one
        step of the profile's step tokens with flash attention (vLLM's chunked prefill)."""
        return {"n_batch": self.profile.step_tokens, "n_ubatch": self.profile.step_tokens, "flash_attn": True,
                "mmq_from_cc": None}

    def speed_unknown(self, req: "FitRequest") -> str | None:
        """Why this engine's speed is not estimated for the request (a mode no measurement or model
        covers), or None."""
        return None

    def split_latency_s(self, stages: int) -> float:
        """Seconds a decoded token spends passing between the stages of a layer split (0 on one
        stage). The default: profiles.STAGE_HOP_LATENCY_S per hop."""
        return (stages - 1) * profiles.STAGE_HOP_LATENCY_S

    def pipeline_depth(self, req: "FitRequest", full_offload: bool) -> int:
        """How many ubatches of a prompt the engine keeps in flight over the stages of a layer split
        (1: each ubatch passes every stage before the next one starts). `full_offload`: every layer
        and the output layer are on the GPUs. The default: 1 (vLLM and transformers run one prompt's
        steps one after another)."""
        return 1

    def overhead_bytes(self, req: "FitRequest", tp: int = 1) -> int:
        """Per-GPU runtime overhead outside the model's tensors (CUDA context, workspaces, graphs)."""
        return self.profile.cuda_context_bytes + self.profile.cuda_graph_bytes

    # ---- placement ------------------------------------------------------------------------------
    def tp_valid(self, m: ModelSpec, k: int) -> bool:
        return k == 1

    def fixed_placement(self, req: "FitRequest") -> tuple[int, int] | None:
        """(tensor parallel, pipeline parallel) the server's own flags pin, or None to choose."""
        return None

    def fit_margin(self, req: "FitRequest") -> int | None:
        """Bytes the engine keeps free on each GPU when it lays the model out itself (llama.cpp --fit
        with no -ngl / -ts / -ot given); None where the layout is the one the request's flags pin."""
        return None

    def refit(self, req: "FitRequest") -> tuple["FitRequest", tuple[str, ...]] | None:
        """The request as the engine itself changes it to fit the GPUs it finds, with why (llama.cpp
        --fit: a context it was left to choose, expert tensors to host RAM); None where it keeps it."""
        return None

    def kv_on_host(self, req: "FitRequest") -> bool:
        """The KV cache lives in host RAM and the CPU attends over it (llama.cpp --no-kv-offload)."""
        return False

    def gpu_layer_limit(self, req: "FitRequest") -> int | None:
        """This many layers on the GPUs, counted as llama.cpp's -ngl counts them (the output layer is layer
        n_layer + 1: n_layer puts every block on the GPUs and keeps the output layer in host RAM; more
        than n_layer is everything, returned as None), None = as many as fit."""
        return None

    def split_weights(self, req: "FitRequest", n_devices: int) -> list[float] | None:
        """Proportions of a layer split the server's flags pin (llama.cpp -ts), None = by free memory."""
        return None

    # ---- start-up -------------------------------------------------------------------------------
    def startup(self, req: "FitRequest", plan: "Plan") -> EngineMemory | None:
        """The engine's own accounting for a plan, with its refusal when it would not start or not
        serve `batch` sequences of `context`. None: the engine reserves nothing up front."""
        return None

    def capability_refusal(self, req: "FitRequest", devices: Sequence["DevicePlan"]) -> Refusal | None:
        """A dtype or format the cards cannot run on this engine, or flags it refuses to start with."""
        return None

    def alternatives(self, result: "FitResult") -> list[tuple[str, dict[str, Any]]]:
        """Settings of this engine that would make a refused start work: (words, FitRequest field
        changes; a "kv_dtype" value is a format key). The core checks each with the estimator."""
        return []

    def notes(self, req: "FitRequest") -> list[str | Message]:
        """Defaults this engine took for the request (said under "Assumed:"): words, or a Message with
        figures that render/words.py words."""
        return [self.default_version_note] if self.default_version_note and self.version is None else []

    # ---- the command line -----------------------------------------------------------------------
    def flags(self, result: "FitResult") -> str | None:
        """A pasteable command line that realises the plan, or None where this engine cannot run it."""
        return None

    def parse_command(self, argv: Sequence[str], env: Mapping[str, str]) -> ServerCommand:
        from ...errors import UsageError

        raise UsageError(f"gpufit does not read {self.key} command lines")

    def default_context(self, m: ModelSpec, devices: Sequence["Device"],
                        settings: Mapping[str, Any] | None = None) -> tuple[int, str] | None:
        """(context, why) the engine runs when none is asked for (Ollama's default num_ctx), or None
        for gpufit's own default."""
        return None

    def environment_command(self, model: str, env: Mapping[str, str]) -> ServerCommand | None:
        """What the engine's server would take from its environment alone for `model` (Ollama reads
        OLLAMA_*), as `here` / `check MODEL` see it; None where the environment sets nothing."""
        return None

    def settings_for(self, m: ModelSpec, q: QuantFormat, catalog: Any, settings: dict[str, Any]) -> dict[str, Any]:
        """The engine's own settings for a request, completed from catalog data it needs (Ollama: the
        library tag that serves this model and format, for its command line)."""
        return settings

    def default_kv_dtype(self, m: ModelSpec) -> str:
        return "fp16" if m.native_dtype == "fp16" else "bf16"

    @property
    def name(self) -> str:
        return self.key if self.version is None else f"{self.key}@{self.version}"
