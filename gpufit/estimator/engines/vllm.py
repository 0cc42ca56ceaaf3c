"""vLLM as vLLM sizes itself at start-up.

Current behaviour (V1, v0.19 and later) by default; older families by version:
- `vllm@0.18`: V1 from v0.8 to v0.18: CUDA-graph memory captured after the KV allocation, not
  subtracted from the budget;
- `vllm@0.7`: the V0 engine (v0.6.5 to v0.7; `VLLM_USE_V1=0` until v0.10): one profile batch of
  max(max_model_len, 2048) tokens unless chunked prefill is on, other processes' memory counted
  against the budget, `# GPU blocks` from a uniform per-token cache block;
- `vllm@0.6`: V0 up to v0.6.4, whose non-torch memory still held the CUDA context.

The start-up sequence, per rank (vllm/v1/worker/gpu_worker.py `init_device`, `determine_available_memory`;
vllm/v1/core/kv_cache_utils.py `get_kv_cache_config`, `check_enough_kv_cache_memory`;
../shared/data/vllm-accounting.md summarises both with the public logs that show them):
1. requested = gpu_memory_utilization x the total CUDA reports (NVML total minus the driver's
   reserved memory); free memory below it -> "Free memory on device ... is less than desired GPU
   memory utilization" (V1 only);
2. weights as loaded on this rank (sharded / replicated tensors, padded vocabulary, the format's
   storage), activation peak of a profile run of `max_num_batched_tokens`, non-torch memory, and (v0.19+)
   the CUDA-graph pool, all subtracted; `--kv-cache-memory-bytes` skips the profile;
3. the pool is cut into blocks of `block_size` tokens, page size per layer type; the engine takes the
   smallest pool over ranks; no blocks -> "No available memory for the cache blocks"; one request of
   `max_model_len` not fitting -> "To serve at least one request ..." with vLLM's estimated maximum
   model length (binary search, as vLLM does).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ...catalog.types import ModelSpec, QuantFormat
from ...units import GIB
from .. import memory
from ..params import attention_params, count_params, required
from ..types import Strategy
from .base import Engine, EngineMemory, Refusal, ServerCommand
from .profiles import VLLM

if TYPE_CHECKING:  # pragma: no cover
    from ..placement import DevicePlan, Plan
    from ..types import Device, DeviceUse, FitRequest, FitResult

DEFAULT_FOR_KINDS = ("float", "int")
PROGRAMS = ("vllm", "vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server")

# vllm/config/cache.py: block_size default 16 tokens on CUDA
BLOCK_SIZE = 16
# vllm/config/cache.py: gpu_memory_utilization default 0.9
DEFAULT_UTILIZATION = 0.90
# vllm/model_executor/layers/vocab_parallel_embedding.py: DEFAULT_VOCAB_PADDING_SIZE = 64; the padded
# vocabulary is divided evenly over the tensor-parallel ranks
VOCAB_PADDING = 64
# non-torch memory (NCCL, cuBLAS/cuDNN workspaces outside torch's allocator) as vLLM logs it
# ("non_torch_memory takes N GiB"), measured from a baseline taken after the CUDA context exists
# (PR #10511, v0.6.5+): 0.10 GiB (A100 40GB, v0.6.6) and 0.05 GiB (RTX 3080, V1) in
# measured/vllm_startup.csv, mean 0.075; with tensor parallelism NCCL's buffers add to it: 0.25 GiB per
# worker in the TP-2 RTX 4090 row (v0.7)
NON_TORCH_BYTES = int(0.075 * GIB)
NON_TORCH_TP_BYTES = int(0.25 * GIB)
# up to v0.6.4 the baseline was taken before the CUDA context, so non-torch memory held the context and
# cuBLAS workspace as well: ~300 MiB on Ampere (the same figure llama.cpp's profile carries); the
# v0.6.4 RTX 3090 log shows 0.35 GiB
V0_EARLY_CUDA_CONTEXT_BYTES = 300 << 20
# CUDA-graph pool for the default capture sizes: "Graph capturing finished in s secs, took 0.5x GiB"
# in V1 logs; v0.19+ profiles and subtracts it (PR #39559), earlier V1 captured it after the KV
# allocation (so a tight utilisation could OOM during capture)
CUDA_GRAPH_BYTES = 512 << 20
# Activation peak of the profile run, per scheduled token, in the model dtype: the MLP's gate_up
# output (2 x intermediate), its activation (1 x intermediate) and three hidden-wide tensors (input,
# residual, attention output) live at once. Check: V0 rows of Llama 3.1 8B on an RTX 3090 at
# max_model_len 20000 / 29000 logged peak_torch - weights = 2.07 / 2.99 GiB; this gives 2.06 / 2.99.
ACT_INTERMEDIATE_TENSORS = 3
ACT_HIDDEN_TENSORS = 3
# the dummy sampler run of the profile (vllm/v1/worker/gpu_model_runner.py _dummy_sampler_run, with
# top-k / top-p set so the sorting path runs; vllm/v1/sample/ops/topk_topp_sampler.py): one row per
# scheduled sequence (min(max_num_seqs, max_num_batched_tokens)), and per row about ten vocabulary-wide
# fp32-sized tensors live at once: the fp32 logits, the sorted values and their int64 indices (two),
# the softmax, its cumulative sum, the scattered-back probabilities, log-probabilities and the
# exponential noise of the sampling. Check: gpt-oss-120b on one H100 (1024 sequences, vocabulary
# 201,088) needs 7.7 GiB for it, which with 0.17 GiB non-torch is what both public V1 logs leave
# unexplained after the weights (v0.10.1: 0.9 x 79.6 - 65.97 + 2.14 = 7.85 GiB; v0.11: 0.95 x 79.6
# - 65.97 - 1.71 = 7.99 GiB, measured/vllm_startup.csv)
SAMPLER_FP32_COPIES = 10
# vllm/engine/arg_utils.py get_batch_defaults (OpenAI server): max_num_batched_tokens / max_num_seqs
# by device memory; the A100 is kept on the small defaults (PR #17885). v0.28 adds a >= 160 GiB tier.
BATCH_DEFAULTS_V1 = ((160 * GIB, 16384, 1024), (70 * GIB, 8192, 1024), (0, 2048, 256))
BATCH_DEFAULTS_V1_PRE = ((70 * GIB, 8192, 1024), (0, 2048, 256))
# V0 (vllm/config.py SchedulerConfig): without chunked prefill one profile batch of
# max(max_model_len, 2048) tokens; the OpenAI server turned chunked prefill on by itself above 32k
# tokens (then 512 tokens per step), which is why the RTX 3090 thread started at 35k but not at 29k
V0_MIN_BATCHED_TOKENS = 2048
V0_CHUNKED_ABOVE = 32768
V0_CHUNKED_TOKENS = 512
V0_MAX_NUM_SEQS = 256
# vllm/config/parallel.py: the OpenAI server's max_model_len default is the model's own maximum
# (max_position_embeddings); gpufit asks for --context, the flag line pins it.
# Minimum compute capability per weight format, from each quantization method's get_min_capability()
# (vllm/model_executor/layers/quantization/*.py) and vllm/platforms/cuda.py: vLLM itself needs 7.0,
# bfloat16 needs 8.0 ("Bfloat16 is only supported on GPUs with compute capability of at least 8.0"),
# fp8 weights run from 8.0 through Marlin (W8A16) and natively from 8.9.
MIN_CC_ENGINE = 7.0
MIN_CC_BY_QUANT = {"bf16": 8.0, "fp8": 8.0, "mxfp4": 8.0, "awq": 7.5, "int8": 7.5, "gptq": 6.0, "nf4": 7.0}
NATIVE_FP8_CC = 8.9
# the fp8 KV cache (fp8_e4m3) is quantised on the fly from 8.0 (FlashInfer / Triton backends)
MIN_CC_FP8_KV = 8.0
# MXFP4 MoE weights through Marlin / Triton: hidden size padded to 256 and each rank's expert
# intermediate size to 128 (vllm/model_executor/layers/quantization/mxfp4.py create_weights);
# attention, router, embeddings and head stay BF16 as the checkpoint ships them (gpt-oss)
MXFP4_HIDDEN_ALIGN = 256
MXFP4_INTERMEDIATE_ALIGN = 128
# hybrid attention + Mamba/linear models: the attention block is raised to a multiple of the kernel
# alignment so one page holds a Mamba state (vllm/model_executor/models/config.py
# HybridAttentionMambaModelConfig: "Setting attention block size to N tokens")
KERNEL_BLOCK_ALIGNMENT = 16
# groups of equal size for hybrid models: vllm/v1/core/kv_cache_utils.py
# _get_kv_cache_groups_uniform_page_size uses the smallest layer count of a type as the group size,
# or the largest when it is within 1.25 x of the smallest
GROUP_SIZE_SLACK = 1.25

# weight formats vLLM must be told about with --quantization; the others come from the checkpoint
QUANT_FLAG = {"fp8": "fp8", "nf4": "bitsandbytes"}
KV_FLAG = {"fp8": "fp8"}
DTYPE_NAMES = {"auto": None, "half": "fp16", "float16": "fp16", "bfloat16": "bf16", "float": "fp32",
               "float32": "fp32", "fp16": "fp16", "bf16": "bf16"}
QUANT_NAMES = {"fp8": "fp8", "awq": "awq", "awq_marlin": "awq", "gptq": "gptq", "gptq_marlin": "gptq",
               "bitsandbytes": "nf4", "mxfp4": "mxfp4", "compressed-tensors": None, "modelopt": None,
               "experts_int8": "int8", "fbgemm_fp8": "fp8"}
KV_NAMES = {"auto": None, "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8"}


# ---- version families ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One span of vLLM releases that size memory alike."""
    name: str | None  # None = current
    v1: bool
    graphs_subtracted: bool
    batch_defaults: tuple[tuple[int, int, int], ...]
    note: str
    context_in_non_torch: bool = False


CURRENT = Family(None, True, True, BATCH_DEFAULTS_V1,
                 "vLLM: current V1 accounting (v0.19+: CUDA-graph memory profiled and subtracted); "
                 "--engine vllm@0.18, vllm@0.7 or vllm@0.6 for older releases")
V1_PRE = Family("0.18", True, False, BATCH_DEFAULTS_V1_PRE,
                "vLLM 0.8-0.18 (V1, CUDA graphs captured after the KV allocation, not budgeted)")
V0 = Family("0.7", False, False, BATCH_DEFAULTS_V1_PRE,
            "vLLM V0 engine (0.6.5-0.7, or VLLM_USE_V1=0): one profile batch of max(max_model_len, 2048) tokens")
V0_EARLY = Family("0.6", False, False, BATCH_DEFAULTS_V1_PRE,
                  "vLLM V0 up to 0.6.4: as V0, and the CUDA context counted as non-torch memory",
                  context_in_non_torch=True)


def family_for(version: str | None) -> Family:
    """'0.18', '0.10.1', 'v0.6.4' -> the family that sizes memory like that release."""
    if version is None or version in ("latest", "current"):
        return CURRENT
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        from ...errors import UsageError

        raise UsageError(f"--engine vllm@{version}: write a vLLM version like 0.18 or 0.10.1")
    major, minor = int(m.group(1)), int(m.group(2))
    if major > 0 or minor >= 19:
        return CURRENT
    if minor >= 8:
        return V1_PRE
    patch = int(m.group(3)) if m.group(3) else None
    if minor < 6 or (minor == 6 and (patch is None or patch <= 4)):
        return V0_EARLY
    return V0


# ---- the engine's own settings (from its flags) ---------------------------------------------------
def setting(req: "FitRequest", key: str, default: Any = None) -> Any:
    v = (req.engine_settings or {}).get(key)
    return default if v is None else v


def utilization(req: "FitRequest") -> float:
    return req.gpu_memory_utilization or DEFAULT_UTILIZATION


def cuda_total(dev: "Device | DeviceUse") -> int:
    """The total CUDA reports: NVML total minus what the driver reserves (when known)."""
    return dev.total_bytes - (dev.reserved_bytes or 0)


def passing_now(result: "FitResult") -> float | None:
    """The largest utilisation every card the plan uses can grant now (free >= util x CUDA total);
    None when nothing is used or the cards are catalog cards (planning: nothing runs on them)."""
    r = result.request
    used = [d for d in result.devices if d.needed_bytes]
    if not used or r.planning:
        return None
    return min(passing_utilization(d.free_bytes, cuda_total(d), r.reserve_bytes) for d in used)


def batch_defaults(fam: Family, dev: "Device | None") -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM picks for this card by default."""
    mem = cuda_total(dev) if dev is not None else 0
    a100 = dev is not None and "a100" in (dev.name or "").lower()
    for floor, tokens, seqs in fam.batch_defaults:
        if mem >= floor and (floor == 0 or not a100):
            return tokens, seqs
    return fam.batch_defaults[-1][1:]  # pragma: no cover


def scheduler(req: "FitRequest", fam: Family, dev: "Device | None") -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) in force for the request."""
    tokens, seqs = batch_defaults(fam, dev)
    seqs = setting(req, "max_num_seqs", seqs)
    given = setting(req, "max_num_batched_tokens")
    if given is not None:
        return given, seqs
    if not fam.v1:
        if req.context > V0_CHUNKED_ABOVE:
            return V0_CHUNKED_TOKENS, seqs
        return max(req.context, V0_MIN_BATCHED_TOKENS), seqs
    return tokens, seqs


# ---- KV cache layout --------------------------------------------------------------------------------
def _dtype_bytes(req: "FitRequest") -> float:
    kv = req.kv_dtype
    return (kv.kv_bits if kv.kv_bits is not None else kv.bits_per_weight) / 8


def _model_dtype_bytes(req: "FitRequest") -> int:
    return 4 if req.quant.key == "fp32" else 2


@dataclass(frozen=True)
class LayerKind:
    """One kind of cache layer on one rank: how many, the page of one block, the tokens one request
    needs at most (None: a fixed state, one page per request)."""
    kind: str  # full | sliding | chunked | mla | linear
    count: int
    page_bytes: int  # bytes of one block of `block_size` tokens of one layer
    window: int | None = None
    # blocks of this kind hold `block_scale` x block_size tokens: vLLM unifies the page sizes of the
    # attention kinds by raising the block size of the smaller pages (vllm/v1/core/kv_cache_utils.py
    # unify_kv_cache_spec_page_size: block_size x max_page // page, the pages must divide)
    block_scale: int = 1


def layer_kinds(req: "FitRequest", tp: int, layers: int | None = None) -> list[LayerKind]:
    """vLLM's KV cache spec per layer type (vllm/v1/kv_cache_interface.py), for one rank holding
    `layers` of the model's layers (pipeline stages share the types in proportion)."""
    m = req.model
    b = _dtype_bytes(req)
    share = 1.0 if layers is None else layers / m.layers
    if m.is_mla:
        # MLAAttentionSpec: one latent of kv_lora_rank + rope dims per token, the same on every rank;
        # DeepSeek V3.2's lightning indexer keeps one fp8 key per token and layer with an fp32 scale
        # per 128 elements beside it (vllm/model_executor/models/deepseek_v2.py, DeepseekV32IndexerCache)
        per_token = (required(m, "kv_lora_rank", m.kv_lora_rank) + (m.qk_rope_head_dim or 0)) * b
        if m.indexer_head_dim:
            per_token += m.indexer_head_dim + m.indexer_head_dim // 128 * 4
        page = int(BLOCK_SIZE * per_token)
        page_full = page
    else:
        # FullAttentionSpec / SlidingWindowSpec: 2 x block x KV heads per rank x head_dim x dtype, each
        # layer kind at its own shape (Gemma 4's full-attention layers: global_kv_heads x global_head_dim)
        page = int(BLOCK_SIZE * memory.kv_bytes_per_token_layer(m, req.kv_dtype, tp))
        page_full = int(BLOCK_SIZE * memory.kv_bytes_per_token_layer(m, req.kv_dtype, tp, full=True))

    def n(k: int) -> int:
        return int(round(k * share))

    kinds: list[LayerKind] = []
    # MLP-only layers (Nemotron-H '-' / 'E') cache nothing; nor do KV-sharing layers (Gemma 3n / 4): a
    # layer with kv_sharing_target_layer_name gets no KV cache spec of its own
    # (vllm/v1/worker/gpu_model_runner.py get_kv_cache_spec)
    full, sliding, chunked = memory.cache_layer_counts(m)
    if full:
        kinds.append(LayerKind("mla" if m.is_mla else "full", n(full), page_full))
    if sliding and not setting(req, "disable_hybrid_kv_cache_manager", False):
        kinds.append(LayerKind("sliding", n(sliding), page, required(m, "sliding_window", m.sliding_window)))
    elif sliding:
        kinds.append(LayerKind("full", n(sliding), page))
    if chunked:
        kinds.append(LayerKind("chunked", n(chunked), page, required(m, "attention_chunk", m.attention_chunk)))
    if m.linear_layers:
        state = int((m.linear_state_elems or 0) * _model_dtype_bytes(req) / tp)
        if m.mamba_ssm_fp32 and m.mamba_heads:
            # vllm/model_executor/models/config.py NemotronHForCausalLMConfig: mamba_ssm_cache_dtype "auto"
            # takes the HF config's (default float32); the temporal state heads x head_dim x state is then
            # fp32, the conv state (elements - that) stays in the model dtype (MambaStateDtypeCalculator)
            ssm = m.mamba_heads * required(m, "mamba_head_dim", m.mamba_head_dim) * required(m, "mamba_state", m.mamba_state)
            state = int(((m.linear_state_elems or 0) - ssm) * _model_dtype_bytes(req) / tp + ssm * 4 / tp)
        kinds.append(LayerKind("linear", n(m.linear_layers), state))
    return [k for k in kinds if k.count > 0]


def _tokens_needed(k: LayerKind, max_model_len: int, batched: int) -> int:
    """Tokens one request keeps in a layer of kind `k` (KVCacheSpec.max_memory_usage_bytes)."""
    if k.kind not in ("sliding", "chunked"):
        return max_model_len
    if k.window is None:
        raise ValueError(f"a {k.kind} cache layer needs its window")
    if k.kind == "sliding":
        return min(k.window - 1 + batched, max_model_len)
    return min(k.window + batched, max_model_len)


def _blocks_needed(k: LayerKind, max_model_len: int, batched: int, block: int) -> int:
    if k.kind == "linear":
        return 1  # MambaSpec: one state page per request (mamba_cache_mode "none")
    blocks = -(-_tokens_needed(k, max_model_len, batched) // (block * k.block_scale))
    return blocks + 1 if k.kind == "sliding" else blocks  # +1: the window need not start at a block edge


@dataclass(frozen=True)
class KVLayout:
    """How the pool is cut: groups of equal size sharing one pool of pages."""
    kinds: tuple[LayerKind, ...]
    block_size: int
    page_bytes: int  # one block of one layer, after page sizes are unified
    group_size: int  # layers per group (uniform models: all layers in one group)
    groups: tuple[tuple[LayerKind, int], ...]  # (kind, number of groups of that kind)

    @property
    def uniform(self) -> bool:
        return len(self.kinds) == 1

    @property
    def bytes_per_block(self) -> int:
        return self.page_bytes * self.group_size

    def blocks_per_request(self, max_model_len: int, batched: int) -> int:
        """Pool blocks one request takes: each group of a kind needs that kind's blocks (a block spans
        `group_size` layers, padding layers of a short group included)."""
        return sum(g * _blocks_needed(k, max_model_len, batched, self.block_size) for k, g in self.groups)

    def request_bytes(self, max_model_len: int, batched: int) -> int:
        """What vLLM's start-up check asks for one request: each real layer's pages
        (kv_cache_utils.max_memory_usage_bytes sums the layers' specs, no padding layers)."""
        return sum(k.count * _blocks_needed(k, max_model_len, batched, self.block_size) * self.page_bytes
                   for k in self.kinds)


def kv_layout(req: "FitRequest", tp: int, layers: int | None = None) -> KVLayout | None:
    kinds = layer_kinds(req, tp, layers)
    if not kinds:
        return None
    block = setting(req, "block_size", BLOCK_SIZE)
    if block != BLOCK_SIZE:
        kinds = [LayerKind(k.kind, k.count, k.page_bytes * block // BLOCK_SIZE if k.kind != "linear" else k.page_bytes,
                           k.window) for k in kinds]
    attn = [k for k in kinds if k.kind != "linear"]
    page = max((k.page_bytes for k in attn), default=0)
    if len({k.page_bytes for k in attn}) > 1:
        # attention kinds of different page sizes (Gemma 4): the smaller pages hold more tokens
        if any(page % k.page_bytes for k in attn):
            from ...errors import UsageError

            raise UsageError(f"vLLM cannot unify the KV page sizes of {req.model.name} "
                             f"({sorted({k.page_bytes for k in attn})} bytes): they do not divide")
        kinds = [dataclasses.replace(k, page_bytes=page, block_scale=page // k.page_bytes)
                 if k.kind != "linear" else k for k in kinds]
        attn = [k for k in kinds if k.kind != "linear"]
    lin = [k for k in kinds if k.kind == "linear"]
    if lin and attn:
        # raise the attention block so one attention page holds a Mamba/linear state, then pad that
        per_token = page / block
        state = max(k.page_bytes for k in lin)
        block = KERNEL_BLOCK_ALIGNMENT * max(1, -(-state // int(KERNEL_BLOCK_ALIGNMENT * per_token)))
        page = int(per_token * block)
    elif lin:
        page = max(k.page_bytes for k in lin)
    if len(kinds) == 1:
        k = kinds[0]
        return KVLayout(tuple(kinds), block, page, k.count, ((k, 1),))
    counts = [k.count for k in kinds]
    size = min(counts)
    if max(counts) < size * GROUP_SIZE_SLACK:
        size = max(counts)
    groups = tuple((k, -(-k.count // size)) for k in kinds)
    return KVLayout(tuple(kinds), block, page, size, groups)


def estimated_max_model_len(layout: KVLayout, available: int, batched: int, upper: int) -> int:
    """vLLM's estimate_max_model_len: the largest length one request fits in, by binary search."""
    def fits(n: int) -> bool:
        return layout.request_bytes(n, batched) <= available

    if not fits(1):
        return 0
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# ---- weights as vLLM loads them -----------------------------------------------------------------
def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _mxfp4_expert_factor(m: ModelSpec, tp: int) -> float:
    """Padding Marlin/Triton MXFP4 MoE kernels add to the expert tensors."""
    if not m.is_moe:
        return 1.0
    inter = required(m, "moe_intermediate", m.moe_intermediate) // tp
    return (_pad(m.hidden, MXFP4_HIDDEN_ALIGN) / m.hidden) * (_pad(inter, MXFP4_INTERMEDIATE_ALIGN) / inter)


def _attention_share(m: ModelSpec) -> tuple[float, float]:
    """(q + o share, k + v share) of one layer's parameters; the rest is MLP / experts."""
    pc = count_params(m)
    attn = attention_params(m)
    if m.is_mla:
        return attn / max(1, pc.per_layer), 0.0
    kv = 2 * m.hidden * m.kv_heads * m.head_dim
    return (attn - kv) / max(1, pc.per_layer), kv / max(1, pc.per_layer)


# ---- the engine -----------------------------------------------------------------------------------
class _Rank(NamedTuple):
    """One rank's start-up figures (Vllm.startup), in bytes."""
    plan: "DevicePlan"
    total: int  # what CUDA reports
    budget: int  # utilization x total
    weights: int
    activation: int
    non_torch: int
    graphs: int
    available: int  # left for the KV pool
    layout: KVLayout | None


class Vllm(Engine):
    key = "vllm"
    profile = VLLM
    split_strategy = Strategy.PIPELINE_PARALLEL

    def __init__(self, fam: Family) -> None:
        self.fam = fam
        self.version = fam.name
        self.default_version_note = CURRENT.note if fam is CURRENT else None

    # -- weights -----------------------------------------------------------------------------------
    def weight_split(self, m: ModelSpec, q: QuantFormat, exact_total: int | None) -> memory.WeightSplit:
        ws = memory.weight_split(m, q, exact_total=exact_total)
        if q.key == "mxfp4" and m.is_moe and exact_total is None:
            # the checkpoint's layout: experts in MXFP4, everything else BF16
            pc = count_params(m)
            attn_share = sum(_attention_share(m))
            per_layer_params = pc.per_layer
            expert_params = per_layer_params * (1 - attn_share)
            other = per_layer_params * attn_share
            per_layer = expert_params * q.bits_per_weight / 8 * _mxfp4_expert_factor(m, 1) + other * 2
            active = (pc.per_layer_active - other) * q.bits_per_weight / 8 + other * 2
            ws = memory.WeightSplit(embed=ws.embed, output=ws.output, per_layer=per_layer,
                                    per_layer_active=active, per_layer_embed=ws.per_layer_embed)
        return ws

    def rank_layer_bytes(self, req: "FitRequest", ws: memory.WeightSplit, layers: int, tp: int) -> float:
        """Column/row-parallel layers split `tp` ways; K/V projections replicated where tp exceeds the
        KV heads (each rank keeps max(1, kv_heads // tp) heads)."""
        if tp == 1:
            return ws.per_layer * layers
        m = req.model
        qo, kv = _attention_share(m)
        kv_rank = kv * max(1, m.kv_heads // tp) / m.kv_heads if kv else 0.0
        body = ws.per_layer * (1 - qo - kv)
        if req.quant.key == "mxfp4" and m.is_moe:
            # the per-rank intermediate is padded again after the split
            body *= _mxfp4_expert_factor(m, tp) / _mxfp4_expert_factor(m, 1)
        return ws.per_layer * layers * (qo / tp + kv_rank) + body * layers / tp

    def rank_vocab_bytes(self, req: "FitRequest", nbytes: int, tp: int) -> float:
        v = req.model.vocab
        return nbytes * _pad(v, VOCAB_PADDING * tp) / v / tp if nbytes else 0

    def weights_off_gpu(self, req: "FitRequest") -> int:
        """--cpu-offload-gb: "the space in GiB to offload to CPU, per GPU" (vllm/config/cache.py)."""
        return int(setting(req, "cpu_offload_gb", 0) * GIB)

    def kv_bytes(self, req: "FitRequest", layers: int | None = None, tp: int = 1) -> int:
        """Pages `batch` requests of `context` tokens take in vLLM's layout on one rank (sliding
        layers keep window - 1 + max_num_batched_tokens, Mamba/linear layers one state each)."""
        layout = kv_layout(req, tp, layers)
        if layout is None:
            return 0
        batched, _ = scheduler(req, self.fam, req.devices[0] if req.devices else None)
        return layout.request_bytes(req.context, batched) * req.batch

    # -- activation and fixed costs -------------------------------------------------------------------
    def activation_bytes(self, req: "FitRequest", tp: int = 1, multi_gpu: bool = False,
                         dev: "Device | None" = None) -> int:
        m = req.model
        tokens, seqs = scheduler(req, self.fam, dev if dev is not None else (req.devices[0] if req.devices else None))
        width = required(m, "moe_intermediate", m.moe_intermediate) * m.experts_active if m.is_moe else m.intermediate
        per_token = (ACT_INTERMEDIATE_TENSORS * width / tp + ACT_HIDDEN_TENSORS * m.hidden) * _model_dtype_bytes(req)
        rows = min(seqs, tokens)
        sampler = rows * m.vocab * 4 * SAMPLER_FP32_COPIES
        return int(max(tokens * per_token, sampler))

    def non_torch_bytes(self, tp: int) -> int:
        base = NON_TORCH_TP_BYTES if tp > 1 else NON_TORCH_BYTES
        return base + (V0_EARLY_CUDA_CONTEXT_BYTES if self.fam.context_in_non_torch else 0)

    def graph_bytes(self, req: "FitRequest") -> int:
        return 0 if setting(req, "enforce_eager", False) else CUDA_GRAPH_BYTES

    def overhead_bytes(self, req: "FitRequest", tp: int = 1) -> int:
        return self.non_torch_bytes(tp) + self.graph_bytes(req)

    def tp_valid(self, m: ModelSpec, k: int) -> bool:
        """vLLM needs the attention heads divisible by tp, and the KV heads divisible by tp or tp by
        them (vllm/config/model.py verify_with_parallel_config)."""
        if k == 1:
            return True
        if k & (k - 1) or m.heads % k:
            return False
        return m.kv_heads % k == 0 or k % m.kv_heads == 0

    def fixed_placement(self, req: "FitRequest") -> tuple[int, int] | None:
        tp, pp = setting(req, "tensor_parallel_size"), setting(req, "pipeline_parallel_size")
        if tp is None and pp is None:
            return None
        return (tp or 1, pp or 1)

    # -- start-up checks ------------------------------------------------------------------------------
    def capability_refusal(self, req: "FitRequest", devices: Sequence["DevicePlan"]) -> Refusal | None:
        q = req.quant.key
        for dp in devices:
            spec = dp.device.spec
            if spec is None:
                continue
            cc = float(spec.compute_capability)
            name = dp.device.name
            if cc < MIN_CC_ENGINE:
                return Refusal("compute_capability", f"vLLM needs compute capability {MIN_CC_ENGINE} or higher; "
                               f"GPU {dp.device.index} ({name}) has {spec.compute_capability}",
                               {"gpu": dp.device.index, "have": spec.compute_capability, "need": str(MIN_CC_ENGINE)})
            need = MIN_CC_BY_QUANT.get(q)
            if need and cc < need:
                hint = " You can use float16 instead: --dtype half (--quant fp16)." if q == "bf16" else ""
                words = ("Bfloat16 is only supported on GPUs with compute capability of at least 8.0"
                         if q == "bf16" else f"{q} weights need compute capability {need} on vLLM")
                return Refusal("compute_capability", f"{words}; GPU {dp.device.index} ({name}) has "
                               f"{spec.compute_capability}.{hint}",
                               {"gpu": dp.device.index, "have": spec.compute_capability, "need": str(need), "quant": q})
            if req.kv_dtype.key == "fp8" and cc < MIN_CC_FP8_KV:
                return Refusal("compute_capability", f"the fp8 KV cache needs compute capability "
                               f"{MIN_CC_FP8_KV} on vLLM; GPU {dp.device.index} ({name}) has {spec.compute_capability}",
                               {"gpu": dp.device.index, "have": spec.compute_capability, "need": str(MIN_CC_FP8_KV)})
        return None

    def startup(self, req: "FitRequest", plan: "Plan") -> EngineMemory | None:
        used = plan.used
        if not used:
            return None
        refusal = self.capability_refusal(req, used)
        util = utilization(req)
        fixed_kv = setting(req, "kv_cache_memory_bytes")
        ranks: list[_Rank] = []
        for dp in used:
            d = dp.device
            total = cuda_total(d)
            budget = int(util * total)
            weights = dp.weights
            act = self.activation_bytes(req, tp=plan.tp, dev=d)
            non_torch = self.non_torch_bytes(plan.tp)
            graphs = self.graph_bytes(req)
            if fixed_kv is not None:
                avail = int(fixed_kv)
            else:
                avail = budget - weights - act - non_torch - (graphs if self.fam.graphs_subtracted else 0)
                if not self.fam.v1 and not req.planning:
                    # V0 (v0.6.4): memory other processes hold at start counts against the budget
                    avail -= max(0, d.total_bytes - d.free_bytes - (d.reserved_bytes or 0))
            layout = kv_layout(req, plan.tp, dp.layers if plan.pp > 1 or len(used) > plan.tp else None)
            ranks.append(_Rank(dp, total, budget, weights, act, non_torch, graphs, avail, layout))
            if refusal is None and self.fam.v1 and not req.planning and d.free_bytes < budget:
                refusal = Refusal(
                    "free_memory_below_utilization",
                    f"Free memory on device ({d.free_bytes / GIB:.2f}/{total / GIB:.2f} GiB) on startup is less "
                    f"than desired GPU memory utilization ({util:g}, {budget / GIB:.2f} GiB). Decrease GPU memory "
                    "utilization or reduce GPU memory used by other processes.",
                    {"gpu": d.index, "free_bytes": d.free_bytes, "budget_bytes": budget, "utilization": util})
        # the engine sizes the pool from the smallest worker (unify_kv_cache_configs: min num_blocks)
        def blocks(r: _Rank) -> int:
            return max(0, r.available) // r.layout.bytes_per_block if r.layout else 0

        bottleneck = min(ranks, key=blocks)
        dp, total, budget, weights, act, non_torch, graphs, avail, layout = bottleneck
        batched, _ = scheduler(req, self.fam, dp.device)
        num_blocks = blocks(bottleneck)
        mml = req.context
        extra: dict[str, Any] = {"max_num_batched_tokens": batched,
                                 "block_size": layout.block_size if layout else BLOCK_SIZE,
                                 "utilization": util, "version_family": self.fam.name or "current"}
        if layout is None:
            return EngineMemory(budget, weights, act, non_torch, graphs, max(0, avail), None, None, None, refusal,
                                dp.device.index, extra)
        per_req_blocks = layout.blocks_per_request(mml, batched)
        if layout.uniform and layout.kinds[0].kind != "linear":
            pool_tokens = num_blocks * layout.block_size
        else:
            # hybrid models: vLLM prints a derived figure (max concurrency x max_model_len)
            pool_tokens = int(num_blocks / per_req_blocks * mml) if per_req_blocks else 0
        concurrency = num_blocks / per_req_blocks if per_req_blocks else None
        need = layout.request_bytes(mml, batched)
        upper = max(mml, req.model.max_context)
        fit_len = estimated_max_model_len(layout, max(0, avail), batched, upper)
        heavy = max(ranks, key=lambda r: r.weights - r.plan.device.free_bytes)
        if refusal is None and heavy.weights > heavy.plan.device.free_bytes:
            hd = heavy.plan.device
            refusal = Refusal("oom_at_load", "CUDA out of memory while loading the model: "
                              f"{heavy.weights / GIB:.2f} GiB of weights on GPU {hd.index}, "
                              f"{hd.free_bytes / GIB:.2f} GiB free",
                              {"gpu": hd.index, "weights_bytes": heavy.weights, "free_bytes": hd.free_bytes})
        if refusal is None and (avail <= 0 or num_blocks == 0):
            refusal = Refusal("no_cache_blocks", "No available memory for the cache blocks. Try increasing "
                              "`gpu_memory_utilization` when initializing the engine.",
                              {"available_bytes": avail, "gpu": dp.device.index})
        elif refusal is None and not self.fam.v1 and mml > pool_tokens:
            refusal = Refusal("kv_too_small", f"The model's max seq len ({mml}) is larger than the maximum number "
                              f"of tokens that can be stored in KV cache ({pool_tokens}). Try increasing "
                              "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                              {"max_model_len": mml, "kv_cache_tokens": pool_tokens})
        elif refusal is None and self.fam.v1 and need > avail:
            refusal = Refusal(
                "kv_too_small",
                f"To serve at least one request with the models's max seq len ({mml}), ({need / GIB:.2f} GiB KV cache "
                f"is needed, which is larger than the available KV cache memory ({avail / GIB:.2f} GiB). Based on the "
                f"available memory, the estimated maximum model length is {fit_len}. Try increasing "
                "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                {"max_model_len": mml, "needed_bytes": need, "available_bytes": avail, "estimated_max_model_len": fit_len})
        elif refusal is None and concurrency is not None and concurrency < req.batch:
            refusal = Refusal(
                "batch_exceeds_pool",
                f"vLLM starts, but its KV cache holds {concurrency:.2f} requests of {mml} tokens at once, fewer than "
                f"--batch {req.batch}: the rest would wait in the queue",
                {"max_concurrency": concurrency, "batch": req.batch})
        return EngineMemory(
            budget_bytes=budget if fixed_kv is None else None, weights_bytes=weights, activation_peak_bytes=act,
            non_torch_bytes=non_torch, cuda_graph_bytes=graphs, kv_pool_bytes=max(0, num_blocks * layout.bytes_per_block),
            kv_pool_tokens=pool_tokens, max_concurrency=round(concurrency, 2) if concurrency is not None else None,
            max_model_len_fit=fit_len, refusal=refusal, device=dp.device.index,
            extra={**extra, "available_kv_bytes": avail, "num_gpu_blocks": num_blocks,
                   "kv_groups": [{"kind": k.kind, "layers": k.count, "groups": g} for k, g in layout.groups]})

    # -- flags ---------------------------------------------------------------------------------------------
    def flags(self, result: "FitResult") -> str | None:
        r = result.request
        if "vllm" not in r.quant.engines:
            return None
        p = result.placement
        model = r.model_path or r.model.hf_repo or r.model.key
        parts = [f"vllm serve {model}"]
        if p.tensor_parallel > 1:
            parts.append(f"--tensor-parallel-size {p.tensor_parallel}")
        if p.pipeline_parallel > 1:
            parts.append(f"--pipeline-parallel-size {p.pipeline_parallel}")
        util = utilization(r)
        used = [d for d in result.devices if d.needed_bytes]
        can = passing_now(result)
        if can is not None and can < util:
            util = can
        if abs(util - DEFAULT_UTILIZATION) > 1e-9 or r.gpu_memory_utilization is not None:
            parts.append(f"--gpu-memory-utilization {util:.2f}")
        parts.append(f"--max-model-len {r.context}")
        if r.batch_given:
            parts.append(f"--max-num-seqs {r.batch}")
        if r.quant.key in QUANT_FLAG and r.model_path is None:
            parts.append(f"--quantization {QUANT_FLAG[r.quant.key]}")
        if r.quant.key in ("fp16", "fp32") and r.model.native_dtype != r.quant.key:
            parts.append("--dtype " + {"fp16": "half", "fp32": "float"}[r.quant.key])
        kv = KV_FLAG.get(r.kv_dtype.key)
        if kv:
            parts.append(f"--kv-cache-dtype {kv}")
        for key, flag in (("max_num_batched_tokens", "--max-num-batched-tokens"),
                          ("kv_cache_memory_bytes", "--kv-cache-memory-bytes")):
            v = setting(r, key)
            if v is not None:
                parts.append(f"{flag} {v}")
        if setting(r, "enforce_eager", False):
            parts.append("--enforce-eager")
        if p.strategy == Strategy.CPU_OFFLOAD and p.cpu_bytes:
            parts.append(f"--cpu-offload-gb {max(1, -(-p.cpu_bytes // GIB))}")
        env = ""
        if used and not r.planning:
            env = "CUDA_VISIBLE_DEVICES=" + ",".join(d.index for d in used) + " "
        if p.pipeline_parallel > 1 and len(set(p.layers_per_device) - {0}) > 1:
            env += "VLLM_PP_LAYER_PARTITION=" + ",".join(str(n) for n in p.layers_per_device if n) + " "
        return env + " ".join(parts)

    def alternatives(self, result: "FitResult") -> list[tuple[str, dict[str, Any]]]:
        r, em = result.request, result.engine_memory
        ref = result.refusal
        if ref is None or em is None:
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        now = passing_now(result)
        can = 0.98 if r.planning else (now if now is not None else 0.0)
        util = utilization(r)
        if ref.code == "free_memory_below_utilization" and can > 0:
            out.append((f"--gpu-memory-utilization {can:.2f} (what the free memory allows now)",
                        {"gpu_memory_utilization": can}))
        if ref.code in ("kv_too_small", "no_cache_blocks", "batch_exceeds_pool"):
            if can > util + 0.005:
                out.append((f"--gpu-memory-utilization {can:.2f}", {"gpu_memory_utilization": can}))
            if r.kv_dtype.key != "fp8":
                out.append(("--kv-dtype fp8 (vLLM --kv-cache-dtype fp8)", {"kv_dtype": "fp8"}))
        if ref.code == "compute_capability" and r.quant.key == "bf16":
            # the words of vLLM's own message: "You can use float16 instead"
            out.append(("--quant fp16 (vLLM --dtype half: float16 instead of bfloat16)", {"quant": "fp16"}))
        if ref.code == "kv_too_small" and em.max_model_len_fit:
            out.append((f"--context {em.max_model_len_fit} (vLLM's estimated maximum model length)",
                        {"context": em.max_model_len_fit}))
        if ref.code == "batch_exceeds_pool" and em.max_concurrency and em.max_concurrency >= 1:
            out.append((f"--batch {int(em.max_concurrency)} (the requests vLLM's pool holds at once)",
                        {"batch": int(em.max_concurrency)}))
        return out

    def default_kv_dtype(self, m: ModelSpec) -> str:
        return "fp16" if m.native_dtype == "fp16" else "bf16"

    def parse_command(self, argv: Sequence[str], env: Mapping[str, str]) -> ServerCommand:
        return parse_command(argv, env)


def passing_utilization(free_bytes: int, total_bytes: int, reserve_bytes: int = 0) -> float:
    """The largest --gpu-memory-utilization (two decimals, rounded down) vLLM's start-up check passes on a
    card with `free_bytes` free of `total_bytes` (CUDA total), keeping `reserve_bytes` aside."""
    if total_bytes <= 0:
        return 0.0
    return max(0.0, math.floor((free_bytes - reserve_bytes) / total_bytes * 100) / 100)


_FAMILIES = {f.name: Vllm(f) for f in (CURRENT, V1_PRE, V0, V0_EARLY)}


def for_version(version: str | None) -> Vllm:
    return _FAMILIES[family_for(version).name]


# ---- the server's own command line -------------------------------------------------------------------
# flags that change memory, with how to read their value (vllm/engine/arg_utils.py EngineArgs)
_INT_FLAGS = {"--tensor-parallel-size": "tensor_parallel_size", "-tp": "tensor_parallel_size",
              "--pipeline-parallel-size": "pipeline_parallel_size", "-pp": "pipeline_parallel_size",
              "--max-model-len": "max_model_len", "--max-num-seqs": "max_num_seqs",
              "--max-num-batched-tokens": "max_num_batched_tokens", "--block-size": "block_size",
              "--kv-cache-memory-bytes": "kv_cache_memory_bytes", "--kv-cache-memory": "kv_cache_memory_bytes"}
_FLOAT_FLAGS = {"--gpu-memory-utilization": "gpu_memory_utilization", "--cpu-offload-gb": "cpu_offload_gb"}
_STR_FLAGS = {"--kv-cache-dtype": "kv_cache_dtype", "--quantization": "quantization", "-q": "quantization",
              "--dtype": "dtype", "--model": "model"}
_BOOL_FLAGS = {"--enforce-eager": "enforce_eager", "--disable-hybrid-kv-cache-manager": "disable_hybrid_kv_cache_manager"}
# flags that take a value but do not change memory (read past, listed as ignored)
_VALUE_FLAGS_IGNORED = {"--port", "--host", "--served-model-name", "--api-key", "--trust-remote-code-revision",
                        "--revision", "--tokenizer", "--seed", "--download-dir", "--load-format", "--chat-template",
                        "--tool-call-parser", "--reasoning-parser", "--uvicorn-log-level", "--swap-space",
                        "--max-logprobs", "--kv-transfer-config", "--speculative-config", "--compilation-config",
                        "-O", "--generation-config", "--override-generation-config", "--data-parallel-size", "-dp",
                        "--limit-mm-per-prompt", "--mm-processor-kwargs", "--hf-overrides", "--tokenizer-mode",
                        "--config-format", "--root-path", "--middleware", "--lora-modules", "--max-loras",
                        "--max-lora-rank", "--distributed-executor-backend", "--worker-cls", "--ssl-keyfile",
                        "--ssl-certfile", "--allowed-origins", "--response-role", "--disable-log-stats-interval"}
# vLLM reads these integers with vllm/engine/arg_utils.py human_readable_int: a lower-case k/m/g/t
# suffix is decimal (10^3...), an upper-case K/M/G/T binary (2^10...) and takes no decimals; so
# `--kv-cache-memory-bytes 4G` is 4 GiB and `--max-model-len 32k` is 32,000 tokens
_HUMAN_INT = re.compile(r"^(\d+(?:\.\d+)?)([kmgtKMGT])$")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_HUMAN_INT_FLAGS = ("--max-model-len", "--max-num-batched-tokens", "--kv-cache-memory-bytes", "--kv-cache-memory")


def human_readable_int(raw: str) -> int:
    """vLLM's own reading of '32k', '4G', '8192' (ValueError for anything else)."""
    text = raw.strip()
    m = _HUMAN_INT.match(text)
    if m is None:
        return int(text)
    number, suffix = m.groups()
    if suffix in _DECIMAL:
        return int(float(number) * _DECIMAL[suffix])
    if "." in number:
        raise ValueError(f"decimals are not allowed with the binary suffix {suffix}")
    return int(number) * _BINARY[suffix]


def _value(flag: str, raw: str, kind: str) -> int | float:
    from ...errors import UsageError

    try:
        if kind == "int":
            v = human_readable_int(raw) if flag in _HUMAN_INT_FLAGS else int(raw)
            if v < 1:
                raise ValueError(raw)
            return v
        f = float(raw)
        if not math.isfinite(f) or f < 0:
            raise ValueError(raw)
        return f
    except ValueError:
        raise UsageError(f"vllm {flag} {raw!r}: expected a {'whole number' if kind == 'int' else 'number'}"
                         + (" (vLLM reads 32k as 32,000 and 4G as 4 GiB)" if flag in _HUMAN_INT_FLAGS else "")) from None


def parse_command(argv: Sequence[str], env: Mapping[str, str]) -> ServerCommand:
    """`vllm serve MODEL [flags]` or `python -m vllm.entrypoints.openai.api_server --model M [flags]`
    (argv without the program) -> the estimate options the server will run with."""
    from ...errors import UsageError

    args = list(argv)
    if args and args[0] == "serve":
        args = args[1:]
    got: dict[str, Any] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    model = None
    i = 0
    while i < len(args):
        a = args[i]
        flag, eq, inline = a.partition("=") if a.startswith("-") else (a, "", "")
        flag = flag.replace("_", "-") if flag.startswith("--") else flag

        def take() -> str:
            nonlocal i
            if eq:
                return inline
            if i + 1 >= len(args) or (args[i + 1].startswith("--")):
                raise UsageError(f"vllm {flag}: needs a value")
            i += 1
            return args[i]

        if not a.startswith("-"):
            if model is None:
                model = a
            else:
                unknown.append(a)
        elif flag in _INT_FLAGS:
            got[_INT_FLAGS[flag]] = _value(flag, take(), "int")
        elif flag in _FLOAT_FLAGS:
            got[_FLOAT_FLAGS[flag]] = _value(flag, take(), "float")
        elif flag in _STR_FLAGS:
            got[_STR_FLAGS[flag]] = take()
        elif flag in _BOOL_FLAGS:
            got[_BOOL_FLAGS[flag]] = True
            if eq and inline.lower() in ("false", "0", "no"):
                got[_BOOL_FLAGS[flag]] = False
        elif flag in _VALUE_FLAGS_IGNORED:
            take()
            ignored.append(flag)
        else:
            # a boolean flag that does not change memory, or one this parser does not know: if the
            # next word is not a flag and a model is already named, treat it as this flag's value
            unknown.append(flag)
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("-") and model is not None:
                i += 1
        i += 1
    model = got.pop("model", None) or model
    if not model:
        raise UsageError("vllm command line names no model: give `vllm serve MODEL ...` or --model MODEL")
    util = got.pop("gpu_memory_utilization", None)
    if util is not None and not 0 < util <= 1:
        raise UsageError(f"vllm --gpu-memory-utilization {util:g}: must be in (0, 1]")
    quant = None
    q = got.pop("quantization", None)
    if q is not None:
        if q not in QUANT_NAMES:
            from ...errors import unknown as unknown_choice

            raise unknown_choice("vllm --quantization", q, QUANT_NAMES)
        quant = QUANT_NAMES[q]
    dt = got.pop("dtype", None)
    if dt is not None:
        if dt not in DTYPE_NAMES:
            from ...errors import unknown as unknown_choice

            raise unknown_choice("vllm --dtype", dt, DTYPE_NAMES)
        if quant is None:
            quant = DTYPE_NAMES[dt]
    kv = got.pop("kv_cache_dtype", None)
    kv_dtype = None
    if kv is not None:
        if kv not in KV_NAMES:
            from ...errors import unknown as unknown_choice

            raise unknown_choice("vllm --kv-cache-dtype", kv, KV_NAMES)
        kv_dtype = KV_NAMES[kv]
    context = got.pop("max_model_len", None)
    # without --max-model-len vLLM serves the model's own maximum (max_position_embeddings):
    # default_context 0 = "the model's maximum"
    return ServerCommand(engine="vllm", model=model, context=context, batch=None,
                         quant=quant, kv_dtype=kv_dtype, gpu_memory_utilization=util,
                         gpus=env.get("CUDA_VISIBLE_DEVICES"), settings=got, ignored=tuple(ignored),
                         unknown=tuple(unknown), default_context=0 if context is None else None,
                         notes=("no --max-model-len: vLLM serves the model's maximum context",) if context is None else ())
