"""llama.cpp: how it places a model (src/llama-model.cpp, src/llama-kv-cache.cpp, common/arg.cpp).

Layers are split over every visible GPU in proportion to free memory (`--split-mode layer`, the
n_layer + 1 split with the output layer last), token embeddings stay in host memory, the KV cache is
allocated for the whole `-c` up front, and each device holds one compute buffer sized for a ubatch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...catalog.types import ModelSpec, QuantFormat
from .. import memory
from ..params import attention_shape, required
from . import profiles
from ..types import Message, Strategy
from .base import Engine, PrefillBatching, PrefillFit, Refusal, ServerCommand
from .profiles import LLAMA_CPP

if TYPE_CHECKING:  # pragma: no cover
    from ..placement import DevicePlan
    from ..types import FitRequest, FitResult

DEFAULT_FOR_KINDS = ("gguf",)
PROGRAMS = ("llama-server", "llama-cli")

# --cache-type-k / --cache-type-v names (common/arg.cpp kv_cache_types)
LLAMA_KV = {"fp16": "f16", "bf16": "bf16", "fp32": "f32", "q8_0": "q8_0", "q4_0": "q4_0", "q4_1": "q4_1",
            "q5_0": "q5_0", "q5_1": "q5_1", "iq4_nl": "iq4_nl"}
# bits per KV element of each ggml cache type (ggml type sizes: q8_0 34 bytes / 32, q4_0 18 / 32, ...)
KV_TYPE_BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5,
                "q5_1": 6.0, "iq4_nl": 4.5}

# defaults of common/common.h (common_params): n_batch 2048, n_ubatch 512; -fa auto (common/arg.cpp)
# turns flash attention on where the backend supports it, which CUDA does
N_BATCH = 2048
N_UBATCH = 512
FLASH_ATTN_DEFAULT = True
# pipeline parallelism: src/llama-context.cpp enables it when the model spans several devices with
# every layer and the output layer on them (n_gpu_layers > n_layer), -sm layer, the KV cache offloaded
# and no tensor overrides (-ot, --cpu-moe, --n-cpu-moe); the scheduler then keeps GGML_SCHED_MAX_COPIES
# (4, ggml/src/ggml-backend.cpp) copies of the graph inputs, so up to 4 ubatches are in flight, and
# llama_context::decode returns without synchronizing, so one batch's ubatches follow the last
# batch's through the pipeline. Otherwise n_copies is 1 and the scheduler synchronizes each device
# before copying its inputs, which leaves little overlap (speed.pipeline_seconds).
PIPELINE_COPIES = 4
# Quantized prompt GEMMs: ggml/src/ggml-cuda/mmq.cu ggml_cuda_should_use_mmq takes the MMQ kernels
# (int8 tensor-core MMA on the weights as stored, the activations quantized to q8_1) for every
# k-quant, legacy quant, IQ type and MXFP4 wherever turing_mma_available (compute capability 7.5 on),
# at every batch size: no FP16 copy of the weights is made, unless the build sets
# GGML_CUDA_FORCE_CUBLAS (engine setting force_cublas). Builds before June 2024 (llama.cpp PRs #7676,
# #8075) used MMQ only up to 32 tokens and dequantized to FP16 for cuBLAS above that: the May 2024
# rows bench/calibrate.py fits ran that way, and it plans them with force_cublas. MMQ is modelled at
# the FP16 GEMM rate those rows fit: PR #7676 measured Llama 3 8B Q4_0 pp512 at 10,359 tok/s on an
# RTX 4090 with it, 1.10 x the 9,382 of the same card's F16 through cuBLAS (XiongjieDai, May 2024).
MMQ_FROM_CC = 7.5
# --split-mode tensor (experimental since llama.cpp PR #19378, 2026): a "meta device" over the GPUs
# that splits every layer's weights and its KV cache between them (docs/multi-gpu.md). Start-up refuses
# it with flash attention off, with a quantized KV cache, and for the architectures
# src/llama-arch.cpp llm_arch_supports_sm_tensor lists (by catalog / GGUF family here, with the
# llama.cpp arch name the error quotes).
SM_TENSOR_KV_TYPES = ("f32", "f16", "bf16")
# common/arg.cpp --split-mode (row: deprecated, still parsed)
SPLIT_MODES = ("none", "layer", "row", "tensor")
SM_TENSOR_UNSUPPORTED = {
    "deepseek": "deepseek2", "deepseek-v2": "deepseek2", "deepseek-v3": "deepseek2", "kimi-k2": "deepseek2",
    "minimax-m2": "minimax-m2", "nemotron-h": "nemotron_h", "granite4-h": "granitehybrid",
    "gemma3n": "gemma3n", "olmo2": "olmo2",
}
# model families whose sliding window llama.cpp applies: src/llama-model.cpp sets hparams.swa_type for
# LLM_ARCH_GEMMA2, GEMMA3, GEMMA3N, COHERE2, OPENAI_MOE (gpt-oss) and LLAMA4 (chunked). Mistral 7B
# v0.1 has `sliding_window` in its config.json, but it converts to the llama architecture, which has
# none: its KV cache holds every token on every layer (4 GiB at 32k).
# LLM_ARCH_GEMMA4 likewise (LLAMA_SWA_TYPE_STANDARD, the per-layer pattern from
# gemma4.attention.sliding_window_pattern).
SWA_FAMILIES = ("gemma2", "gemma3", "gemma3n", "gemma4", "gpt-oss", "command-r7b", "llama4")
# src/llama-kv-cache-iswa.cpp: the sliding layers' cache holds
#   min(n_ctx, pad(n_swa x n_seq + n_ubatch, 256))  cells (unified),  n_ctx with --swa-full
# the ubatch being written sees its window back from its first token, hence + n_ubatch
KV_PAD = 256
# recurrent (Mamba2 / gated DeltaNet) state elements are f32: src/llama-model.cpp create_memory passes
# GGML_TYPE_F32 as the hybrid memory's recurrent_type_k / recurrent_type_v, one state per n_seq_max
RECURRENT_STATE_BYTES = 4


def setting(req: "FitRequest", key: str, default: Any = None) -> Any:
    v = (req.engine_settings or {}).get(key)
    return default if v is None else v


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def kv_cells(req: "FitRequest", swa_applied: bool = True) -> tuple[int, int | None]:
    """(cells of a full-attention layer, cells of a sliding/chunked layer or None when the model has
    none llama.cpp applies). All `batch` slots share one cache of -c = context x batch cells."""
    m = req.model
    full = req.context * req.batch
    window = m.sliding_window if m.sliding_layers else (m.attention_chunk if m.chunked_layers else None)
    if not window or not swa_applied or m.family not in SWA_FAMILIES:
        return full, None
    if setting(req, "swa_full", False):
        return full, full
    ub = min(setting(req, "n_ubatch", N_UBATCH), setting(req, "n_batch", N_BATCH))
    return full, min(full, _pad(window * req.batch + ub, KV_PAD))


def kv_element_bits(req: "FitRequest") -> tuple[float, float]:
    """Bits per K and per V element: -ctk / -ctv (settings `cache_type_k` / `cache_type_v`, ggml
    names), else the request's KV dtype for both."""
    base = LLAMA_KV.get(req.kv_dtype.key)
    default = KV_TYPE_BITS[base] if base in KV_TYPE_BITS else memory.kv_bits(req.kv_dtype)
    k = setting(req, "cache_type_k")
    v = setting(req, "cache_type_v")
    return (KV_TYPE_BITS[k] if k else default), (KV_TYPE_BITS[v] if v else default)


def kv_widths(m: ModelSpec, full: bool = False) -> tuple[int, int]:
    """Elements per token and layer in the K and the V cache. MLA (DeepSeek V2/V3) as llama.cpp
    stores it: one head of kv_lora_rank + rope dims for K and kv_lora_rank for V (n_head_kv = 1,
    src/llama-model.cpp LLM_ARCH_DEEPSEEK2); else KV heads x head_dim each, `full` at the shape of the
    full-attention layers (Gemma 4: head_count_kv per layer, key_length / key_length_swa)."""
    if m.is_mla:
        rank = required(m, "kv_lora_rank", m.kv_lora_rank)
        return rank + (m.qk_rope_head_dim or 0), rank
    heads, head_dim = attention_shape(m, full)
    return heads * head_dim, heads * head_dim


def llama_cpp_kv_bytes(req: "FitRequest", layers: int | None = None, swa_applied: bool = True) -> int:
    """K and V cells of the layers that keep a cache: the KV-sharing layers of Gemma 3n / 4 have none
    (src/llama-model.cpp n_layer_kv_from_start = n_layer - shared_kv_layers; llama-kv-cache.cpp skips
    layers without hparams.has_kv), the others at their own width; the Mamba / DeltaNet layers keep one
    recurrent state per sequence slot instead, in f32 (llama-model.cpp create_memory: the hybrid memory's
    recurrent_type_k / recurrent_type_v GGML_TYPE_F32, recurrent_kv_size max(1, n_seq_max))."""
    m = req.model
    full, swa = kv_cells(req, swa_applied)
    n_full, n_sliding, n_chunked = memory.cache_layer_counts(m)
    n_swa = (n_sliding or n_chunked) if swa is not None else 0
    n_other = n_sliding + n_chunked - n_swa  # windowed layers llama.cpp does not window: full cells
    kb, vb = kv_element_bits(req)
    fk, fv = kv_widths(m, full=True)
    ok, ov = kv_widths(m)
    total = (n_full * full * (fk * kb + fv * vb) + (n_other * full + n_swa * (swa or 0)) * (ok * kb + ov * vb)) / 8
    total += memory.state_bytes(m, dtype_bytes=RECURRENT_STATE_BYTES) * req.batch
    if layers is not None:
        total = total * layers / m.layers
    return int(-(-total // 1))


def compute_bytes(m: ModelSpec, n_ctx: int, n_ubatch: int, flash_attn: bool, multi_gpu: bool) -> int:
    """Per-device compute buffer for one ubatch: ggml-alloc sizes it for the worst graph of the ubatch,
    the largest of three f32 peaks per ubatch token (profiles.py LLAMA_CPP_* tensors): attention (KQ
    scores n_ctx x n_head + the mask + hidden-wide tensors), MLP (mask + gate/up n_ff + hidden-wide) and
    output (logits n_vocab + hidden); Llama 3 8B at 8192 without flash attention: 560 MiB. With
    flash attention the n_ctx x n_head f32 scores are never materialised: the attention peak is the
    mask and the hidden-wide tensors, and the output peak (logits) usually bounds the buffer (Llama 3
    8B: 512 x 4 x (128,256 + 4,096) = 258 MiB, the buffer llama.cpp logs with -fa on)."""
    n_ub = min(n_ubatch, n_ctx)
    ff = required(m, "moe_intermediate", m.moe_intermediate) * m.experts_active if m.is_moe else m.intermediate
    mask = n_ctx
    attention = (0 if flash_attn else n_ctx * m.heads) + mask + profiles.LLAMA_CPP_ATTN_HIDDEN_F32_TENSORS * m.hidden
    mlp = mask + profiles.LLAMA_CPP_MLP_FF_F32_TENSORS * ff + profiles.LLAMA_CPP_MLP_HIDDEN_F32_TENSORS * m.hidden
    output = m.vocab + m.hidden
    total: float = n_ub * 4 * max(attention, mlp, output)
    if multi_gpu:
        total *= profiles.LLAMA_CPP_MULTI_GPU_COMPUTE_FACTOR
    return int(total)


# Prefill (speed.prefill_rate), fitted by `bench/calibrate.py` on the May 2024 llama-bench / main
# rows (272 prompts, 1-8 GPUs; the 2023 builds ran other kernels and n_batch 512, and 11 rows that
# their own notebook contradicts are left out: bench/accuracy.py contradicts_its_notebook):
#   gemm_efficiency     achieved / datasheet tensor rate of the GEMMs' kind (llama.cpp: FP16 accumulate)
#                       on the SMs the ubatch's tile waves keep busy (speed.wave_efficiency)
#   tflops_per_watt     sustained tensor TFLOP/s per board watt: a 350 W H100 PCIe cannot hold the
#                       clocks its datasheet peak assumes under a long GEMM stream
#   attn_bytes_per_head_cell   without flash attention: f32 KQ scores written, masked, soft-maxed and
#                       read back, per head and cached cell
#   dequant_bytes_per_weight   quantized GGUF weights are dequantized to an FP16 copy per ubatch
#                       before cuBLAS (ggml-cuda's mul_mat path at batch > MMVQ sizes in that build)
# The byte terms run at the decode fit's achieved bandwidth for the card's memory class
# (profiles.DECODE_EFFICIENCY_BY_MEMORY), which the fit takes as given.
PREFILL_FIT: PrefillFit = {
    "gemm_efficiency": 0.668,
    "tflops_per_watt": 0.672,
    "attn_bytes_per_head_cell": 24.2,
    "dequant_bytes_per_weight": 4.55,
    "fp16_accumulate": True,
    "source": "llama.cpp, fitted by bench/calibrate.py on bench/data/tokens_per_s.csv",
}
# ---- MoE expert tensors kept in host memory (--n-cpu-moe N, --cpu-moe, -ot PATTERN=CPU) ---------------
# common/common.h LLM_FFN_EXPS_REGEX: the expert tensors of block i are blk.i.ffn_{up,down,gate}_exps
EXPERT_TENSORS = ("ffn_up_exps", "ffn_down_exps", "ffn_gate_exps")


def tensor_mode(req: "FitRequest") -> bool:
    """--split-mode tensor: every GPU holds a share of every layer (its weights and its KV cache)."""
    return bool(setting(req, "split_mode") == "tensor")


def fit_runs(settings: Mapping[str, Any]) -> bool:
    """common/fit.cpp runs: --fit on (the default) and not --split-mode tensor, which it does not
    support (docs/multi-gpu.md)."""
    fit = settings.get("fit")
    return (fit is None or bool(fit)) and settings.get("split_mode") != "tensor"


def host_expert_layers(req: "FitRequest") -> int:
    """How many MoE layers keep their expert tensors in host RAM."""
    m = req.model
    if not m.is_moe:
        return 0
    layers = set(setting(req, "cpu_moe_layers", ()) or ())
    moe = range(m.dense_layers, m.layers)
    return sum(1 for i in moe if i in layers)


def expert_layer_bytes(req: "FitRequest", active: bool = False) -> float:
    """Bytes of one MoE layer's routed experts (all of them, or the ones a token uses)."""
    m = req.model
    n = m.experts_active if active else m.experts
    per = (3 if m.mlp == "gated" else 2) * m.hidden * required(m, "moe_intermediate", m.moe_intermediate)
    return n * per * req.quant.bits_per_weight / 8


def cuda_visible(result: "FitResult") -> str:
    """`CUDA_VISIBLE_DEVICES=...` for the GPUs a probed plan uses (nothing when planning)."""
    used = [d.index for d in result.devices if d.needed_bytes]
    if not used or result.request.planning:
        return ""
    return "CUDA_VISIBLE_DEVICES=" + ",".join(used) + " "


class LlamaCpp(Engine):
    key = "llama.cpp"
    profile = LLAMA_CPP
    uses_all_gpus = True
    splits_like_llama_cpp = True
    runs_gguf = True

    #: llama.cpp applies the sliding windows of SWA_FAMILIES (Ollama's runner, for its part, does not
    #: apply gemma2's)
    swa_families: tuple[str, ...] = SWA_FAMILIES

    def weight_split(self, m: ModelSpec, q: QuantFormat, exact_total: int | None) -> memory.WeightSplit:
        """A tied head is loaded twice: token_embd stays in host memory for the input lookup and a
        duplicate goes to the output layer's device (src/llama-model.cpp: output falls back to
        token_embd with TENSOR_DUPLICATED)."""
        ws = memory.weight_split(m, q, exact_total=exact_total)
        if m.tie_embeddings and not ws.output:
            import dataclasses

            ws = dataclasses.replace(ws, output=ws.embed)
        return ws

    def rank_layer_bytes(self, req: "FitRequest", ws: memory.WeightSplit, layers: int, tp: int) -> float:
        """Layer weights on the GPUs, less the expert tensors kept in host RAM (spread over the
        layers in proportion: exact on one GPU, approximate per card on a split)."""
        n = host_expert_layers(req)
        host = n * expert_layer_bytes(req) if n else 0.0
        return (ws.per_layer * req.model.layers - host) * layers / req.model.layers / tp

    def host_resident_bytes(self, req: "FitRequest") -> int:
        """Expert tensors kept in host memory, and the KV cache under --no-kv-offload."""
        n = host_expert_layers(req)
        out = n * expert_layer_bytes(req) if n else 0
        if setting(req, "no_kv_offload", False):
            out += llama_cpp_kv_bytes(req)
        return int(out)

    def host_read_bytes_per_token(self, req: "FitRequest") -> float:
        """Weights read from host memory per decoded token: the routed experts a token uses in the
        layers whose experts stay on the CPU (the CPU computes them; llama.cpp's expert offload)."""
        n = host_expert_layers(req)
        return n * expert_layer_bytes(req, active=True) if n else 0.0

    def fit_margin(self, req: "FitRequest") -> int | None:
        """common/fit.cpp refits only what the command line left open: no -ngl, -ts, -ot / --n-cpu-moe,
        no row split (each makes common_params_fit_impl abort before step 3), --fit on. Then every GPU
        keeps --fit-target free (1024 MiB; the first figure where several are given)."""
        if not setting(req, "fit_layout", False) or not fit_runs(req.engine_settings or {}):
            return None
        return int((setting(req, "fit_target_mib") or (FIT_TARGET_MIB,))[0]) * 1024 * 1024

    def refit(self, req: "FitRequest") -> tuple["FitRequest", tuple[str, ...]] | None:
        """common/fit.cpp on what the command line left open: the context (step 2), then for a MoE model
        the routed experts of the first layers to host RAM, as few as leave every GPU its margin with
        every layer's dense part on the GPUs (step 3 fills dense-only layers, then gives layers back
        their experts while they fit)."""
        import dataclasses

        said: list[str] = []
        ctx = self.fitted_context(req)
        if ctx is not None:
            req = dataclasses.replace(req, context=ctx[0])
            said.append(ctx[1])
        experts = self.fitted_experts(req)
        if experts is not None:
            req = dataclasses.replace(req, engine_settings={**req.engine_settings, "cpu_moe_layers": experts})
            said.append(f"llama.cpp --fit keeps the routed experts of the first {len(experts)} layers in host RAM "
                        f"(as --n-cpu-moe {len(experts)}), so every GPU keeps its margin free (common/fit.cpp)")
        return (req, tuple(said)) if said else None

    def fitted_experts(self, req: "FitRequest") -> tuple[int, ...] | None:
        """The fewest leading layers whose experts go to host RAM so that the refilled layout keeps every
        layer on the GPUs; None where the model is dense, the layout already fits, or not even all the
        experts in host RAM would keep every layer's dense part on the GPUs."""
        margin = self.fit_margin(req)
        if margin is None or not req.model.is_moe or not req.devices or host_expert_layers(req):
            return None
        import dataclasses

        from ..placement import Sizer, _index_order, _refit, least_true, split_layers

        devs = _index_order(list(req.devices))

        def on_gpus(k: int) -> bool:
            r = dataclasses.replace(req, engine_settings={**req.engine_settings, "cpu_moe_layers": tuple(range(k))})
            s = Sizer(r)
            p = _refit(s, devs, margin) if k == 0 else split_layers(s, devs, allow_cpu=True, margin=margin)
            return p.fits and not p.cpu_layers and not p.head_on_host

        if on_gpus(0) or not on_gpus(req.model.layers):
            return None
        return tuple(range(least_true(on_gpus, 0, req.model.layers)))

    def fitted_context(self, req: "FitRequest") -> tuple[int, str] | None:
        """common/fit.cpp, step 2: a context the command line left to llama.cpp (no -c, or -c 0) starts at
        the model's training context; where the layout llama.cpp would load leaves some GPU less than its
        margin free (--fit-target, 1024 MiB) and the GPUs together are short, the context is cut to the
        linear interpolation between --fit-ctx (4096) and the maximum that meets the summed target (less
        half a layer per GPU and one more on a split, a sixth for MoE), rounded down to 256 cells."""
        if not setting(req, "ctx_auto", False) or not fit_runs(req.engine_settings or {}) or not req.devices:
            return None
        import dataclasses

        from ..placement import Sizer, _index_order, split_layers

        devs = _index_order(list(req.devices))
        nd = len(devs)
        mib = setting(req, "fit_target_mib") or (FIT_TARGET_MIB,)
        margins = [mib[min(i, len(mib) - 1)] * 1024 * 1024 for i in range(nd)]
        free = [d.free_bytes for d in devs]
        streams = 1 if setting(req, "kv_unified", False) else req.batch
        ngl = self.gpu_layer_limit(req)

        def used(per_seq: int) -> tuple[list[int], int]:
            """Bytes per GPU of the layout llama.cpp would load at this context, and the weights among them."""
            s = Sizer(dataclasses.replace(req, context=per_seq))
            plan = (split_layers(s, devs, allow_cpu=True, max_layers=ngl) if ngl is not None
                    else split_layers(s, devs, allow_cpu=False, by_free=True))
            by_dev = {dp.device.index: dp for dp in plan.devices}
            parts = [by_dev[d.index] if d.index in by_dev else None for d in devs]
            return [p.needed if p else 0 for p in parts], sum(int(p.weights) if p else 0 for p in parts)

        max_total = req.model.max_context * streams
        min_total = setting(req, "fit_min_ctx", FIT_MIN_CTX) * streams
        at_max, weights = used(max_total // req.batch)
        if all(f - u >= mg for f, u, mg in zip(free, at_max, margins)):
            return None  # "no changes needed"
        surplus = sum(free) - sum(at_max) - sum(margins)
        if surplus >= 0 or max_total <= min_total:
            return None  # llama.cpp re-splits the layers instead (step 3), or the model's context is small
        target = sum(free) - sum(margins)
        if nd > 1:  # only whole layers (dense) or whole tensors (about a third of a layer, MoE) move
            target -= (nd + 1) * (weights // req.model.layers) // (6 if req.model.is_moe else 2)
        at_min = sum(used(min_total // req.batch)[0])
        n_ctx = min_total
        if target > at_min and sum(at_max) > at_min:
            n_ctx += (max_total - min_total) * (target - at_min) // (sum(at_max) - at_min)
            align = FIT_CTX_ALIGN * streams
            n_ctx = max(n_ctx - n_ctx % align, min_total)
        per_seq = n_ctx // req.batch
        return per_seq, (f"context {per_seq}: llama.cpp --fit cut the model's {req.model.max_context}-token context "
                         f"to keep {margins[0] // (1024 * 1024)} MiB free on each GPU (common/fit.cpp; -c to set it)")

    def kv_on_host(self, req: "FitRequest") -> bool:
        """--no-kv-offload (-nkvo): the KV cache and the attention over it stay on the CPU (common/arg.cpp
        no_kv_offload -> llama_context_params.offload_kqv = false)."""
        return bool(setting(req, "no_kv_offload", False))

    def kv_bytes(self, req: "FitRequest", layers: int | None = None, tp: int = 1) -> int:
        if setting(req, "no_kv_offload", False):
            return 0
        # tensor mode splits the KV cache over the GPUs with the weights (tp = the GPUs it spans)
        return llama_cpp_kv_bytes(req, layers, swa_applied=req.model.family in self.swa_families) // tp

    def activation_bytes(self, req: "FitRequest", tp: int = 1, multi_gpu: bool = False) -> int:
        fa = setting(req, "flash_attn", FLASH_ATTN_DEFAULT)
        ub = min(setting(req, "n_ubatch", N_UBATCH), setting(req, "n_batch", N_BATCH))
        return compute_bytes(req.model, req.context * req.batch, ub, fa, multi_gpu)

    def prefill_fit(self) -> PrefillFit:
        return PREFILL_FIT

    def prefill_batching(self, req: "FitRequest") -> PrefillBatching:
        """-b / -ub / -fa, else common/common.h's n_batch 2048, n_ubatch 512 and -fa auto (on); quantized
        weights through MMQ from Turing on (MMQ_FROM_CC), unless the build forces cuBLAS."""
        return {"n_batch": setting(req, "n_batch", N_BATCH), "n_ubatch": setting(req, "n_ubatch", N_UBATCH),
                "flash_attn": setting(req, "flash_attn", FLASH_ATTN_DEFAULT),
                "mmq_from_cc": None if setting(req, "force_cublas", False) else MMQ_FROM_CC}

    def tp_valid(self, m: ModelSpec, k: int) -> bool:
        """--split-mode tensor splits tensor segments in proportion (-ts, evenly by default) with no
        divisibility rule in docs/multi-gpu.md; llama.cpp reaches tensor parallelism only through it."""
        return True

    def fixed_placement(self, req: "FitRequest") -> tuple[int, int] | None:
        """--split-mode tensor: one tensor-parallel group over every GPU the process sees."""
        if not tensor_mode(req):
            return None
        from ..placement import visible_units

        return (max(1, visible_units(req.devices)), 1)

    def capability_refusal(self, req: "FitRequest", devices: Sequence["DevicePlan"]) -> Refusal | None:
        """The start-up checks of --split-mode tensor (docs/multi-gpu.md, "Limitations and gotchas"; the
        messages are llama.cpp's own)."""
        if not tensor_mode(req):
            return None
        if setting(req, "no_devices", False):
            return Refusal("sm_tensor_no_device", "--split-mode tensor needs at least one non-CPU device "
                           "(--device none)", {})
        if setting(req, "flash_attn", FLASH_ATTN_DEFAULT) is False:
            return Refusal("sm_tensor_flash_attn", "SPLIT_MODE_TENSOR requires flash_attn to be enabled", {})
        types = [t for t in (setting(req, "cache_type_k"), setting(req, "cache_type_v"),
                             LLAMA_KV.get(req.kv_dtype.key)) if t]
        if any(t not in SM_TENSOR_KV_TYPES for t in types):
            return Refusal("sm_tensor_kv_quantized",
                           "simultaneous use of SPLIT_MODE_TENSOR and KV cache quantization not implemented",
                           {"cache_types": sorted(set(types))})
        arch = SM_TENSOR_UNSUPPORTED.get(req.model.family)
        if arch:
            return Refusal("sm_tensor_arch", f"LLAMA_SPLIT_MODE_TENSOR not implemented for architecture '{arch}'",
                           {"architecture": arch})
        return None

    def speed_unknown(self, req: "FitRequest") -> str | None:
        if tensor_mode(req) and len(req.devices) > 1:
            return ("llama.cpp --split-mode tensor is experimental (docs/multi-gpu.md) and no measured rows "
                    "calibrate its speed")
        return None

    def split_latency_s(self, stages: int) -> float:
        """profiles.LLAMA_CPP_DECODE_SPLIT_S: a fixed cost once there are several stages, plus one per hop."""
        if stages <= 1:
            return 0.0
        split = profiles.LLAMA_CPP_DECODE_SPLIT_S
        return split["fixed"] + (stages - 1) * split["per_hop"]

    def pipeline_depth(self, req: "FitRequest", full_offload: bool) -> int:
        """PIPELINE_COPIES where src/llama-context.cpp turns pipeline parallelism on, else 1."""
        on = (full_offload and setting(req, "split_mode") not in ("row", "tensor")
              and not setting(req, "no_kv_offload", False)
              and not setting(req, "cpu_moe_layers", ()) and not setting(req, "tensor_overrides", False))
        return PIPELINE_COPIES if on else 1

    def gpu_layer_limit(self, req: "FitRequest") -> int | None:
        """-ngl N: the last N transformer layers on the GPUs (N > n_layer also takes the output
        layer: everything), src/llama-model.cpp i_gpu_start = n_layer + 1 - n_gpu_layers."""
        ngl = setting(req, "n_gpu_layers")
        return ngl if ngl is not None and ngl <= req.model.layers else None

    def alternatives(self, result: "FitResult") -> list[tuple[str, dict[str, Any]]]:
        """-ngl that keeps layers (or just the output layer) in host RAM: every layer on the GPUs, if
        that fits (src/llama-model.cpp: the output layer goes to a GPU only when -ngl > n_layer); for a
        refused --split-mode tensor start, the flag it lacks and the layer split."""
        r = result.request
        out: list[tuple[str, dict[str, Any]]] = []
        code = result.refusal.code if result.refusal is not None else ""
        if code.startswith("sm_tensor_"):
            # what the refused --split-mode tensor start needs (docs/multi-gpu.md), or the default split
            if code == "sm_tensor_flash_attn":
                out.append(("-fa on (--split-mode tensor needs flash attention)",
                            {"engine_settings": {**r.engine_settings, "flash_attn": True}}))
            if code == "sm_tensor_kv_quantized":
                plain = {k: v for k, v in r.engine_settings.items() if k not in ("cache_type_k", "cache_type_v")}
                out.append(("-ctk f16 -ctv f16 (--split-mode tensor needs an unquantized KV cache)",
                            {"engine_settings": plain, "kv_dtype": "fp16"}))
            out.append(("--split-mode layer (the default split)",
                        {"engine_settings": {**r.engine_settings, "split_mode": "layer"}}))
        ngl = setting(r, "n_gpu_layers")
        if ngl is not None and ngl <= r.model.layers:
            every = r.model.layers + 1
            out.append((f"-ngl {every} (every layer, the output layer too, on the GPUs)",
                        {"engine_settings": {**r.engine_settings, "n_gpu_layers": every}}))
        return out

    def split_weights(self, req: "FitRequest", n_devices: int) -> list[float] | None:
        ts = setting(req, "tensor_split")
        if not ts:
            return None
        ts = list(ts)[:n_devices] + [0.0] * max(0, n_devices - len(ts))
        return ts if sum(ts) else None

    def parse_command(self, argv: Sequence[str], env: Mapping[str, str]) -> ServerCommand:
        return parse_command(argv, env)

    def notes(self, req: "FitRequest") -> list[str | Message]:
        out = super().notes(req)
        m = req.model
        if (m.sliding_layers or m.chunked_layers) and m.family not in self.swa_families:
            out.append(f"{self.key} does not apply {m.name}'s sliding window: every layer caches all "
                       f"{req.context * req.batch} tokens")
        return out

    def default_kv_dtype(self, m: ModelSpec) -> str:
        return "fp16"

    def flags(self, result: "FitResult") -> str | None:
        """`llama-server` realising the plan: the real file (a placeholder only when llama.cpp itself
        was asked for a catalog model), -c for all slots, the layer split as -ts counts that reproduce
        it (the output layer is a part of its own: the last GPU's count includes it), the GPUs it uses,
        and the settings the plan assumed."""
        r = result.request
        if "llama.cpp" not in r.quant.engines:
            return None
        path = (r.model_path or setting(r, "model_file")
                or (r.model.source if (r.weights_source or "").startswith("gguf") else None))
        if path is None and r.engine != self.key:
            return None  # no file to name: the line would not paste
        p = result.placement
        ngl = p.gpu_layers if p.strategy == Strategy.CPU_OFFLOAD else 999
        parts = [f"llama-server -m {path or 'MODEL.gguf'}", f"-c {r.context * r.batch}"]
        if r.batch > 1:
            parts.append(f"-np {r.batch}")
        parts.append(f"-ngl {ngl}")
        probed = not r.planning
        devs = [d for d in result.devices if d.needed_bytes] if probed else list(result.devices)
        if p.strategy == Strategy.TENSOR_PARALLEL:
            parts.append("--split-mode tensor")  # every GPU a share of every layer: no -ts (even by default)
        elif sum(1 for d in result.devices if d.layers) > 1 and p.strategy != Strategy.CPU_OFFLOAD:
            counts = [d.layers for d in devs]
            last = max(i for i, n in enumerate(counts) if n)
            counts[last] += 1  # the output layer
            mode = "row" if setting(r, "split_mode") == "row" else "layer"  # the split the command asked for
            parts.append(f"--split-mode {mode} -ts " + ",".join(str(n) for n in counts))
        k, v = setting(r, "cache_type_k"), setting(r, "cache_type_v")
        kv = LLAMA_KV.get(r.kv_dtype.key)
        if not (k or v) and kv and kv not in ("f16", "bf16"):
            k = v = kv
        if k and k != "f16":
            parts.append(f"-ctk {k}")
        if v and v != "f16":
            parts.append(f"-ctv {v}")
        fa = setting(r, "flash_attn")
        if fa is False:
            parts.append("-fa off")
        elif fa or (v and v not in ("f16", "bf16", "f32")):
            parts.append("-fa on")  # a quantized V cache needs flash attention
        for key, flag in (("n_batch", "-b"), ("n_ubatch", "-ub")):
            if setting(r, key) is not None:
                parts.append(f"{flag} {setting(r, key)}")
        host = sorted(set(setting(r, "cpu_moe_layers", ()) or ()) & set(range(r.model.layers)))
        if host:
            if len(host) == r.model.layers:
                parts.append("--cpu-moe")
            elif host == list(range(len(host))):
                parts.append(f"--n-cpu-moe {len(host)}")
            else:
                parts.append("-ot 'blk\\.(" + "|".join(str(i) for i in host) + ")\\.ffn_.*_exps=CPU'")
        for key, flag in (("swa_full", "--swa-full"), ("no_kv_offload", "--no-kv-offload")):
            if setting(r, key):
                parts.append(flag)
        return cuda_visible(result) + " ".join(parts)


_ENGINE = LlamaCpp()


def for_version(version: str | None) -> Engine:
    if version is not None:
        from ...errors import UsageError

        raise UsageError(f"--engine llama.cpp@{version}: gpufit models the current llama.cpp only")
    return _ENGINE


# ---- the server's own command line (common/arg.cpp) -------------------------------------------------
# flags that change memory, by every spelling arg.cpp accepts, -> (setting, kind)
_FLAGS = {
    "-m": ("model", "str"), "--model": ("model", "str"),
    "-c": ("ctx_size", "int0"), "--ctx-size": ("ctx_size", "int0"),
    "-b": ("n_batch", "int"), "--batch-size": ("n_batch", "int"),
    "-ub": ("n_ubatch", "int"), "--ubatch-size": ("n_ubatch", "int"),
    "-np": ("n_parallel", "int"), "--parallel": ("n_parallel", "int"),
    "-ngl": ("n_gpu_layers", "ngl"), "--gpu-layers": ("n_gpu_layers", "ngl"), "--n-gpu-layers": ("n_gpu_layers", "ngl"),
    "-ts": ("tensor_split", "split"), "--tensor-split": ("tensor_split", "split"),
    "-sm": ("split_mode", "split_mode"), "--split-mode": ("split_mode", "split_mode"),
    "-mg": ("main_gpu", "int0"), "--main-gpu": ("main_gpu", "int0"),
    "-ctk": ("cache_type_k", "kv"), "--cache-type-k": ("cache_type_k", "kv"),
    "-ctv": ("cache_type_v", "kv"), "--cache-type-v": ("cache_type_v", "kv"),
    "-ncmoe": ("n_cpu_moe", "int0"), "--n-cpu-moe": ("n_cpu_moe", "int0"),
    "-ot": ("override_tensor", "ot"), "--override-tensor": ("override_tensor", "ot"),
    "-dev": ("device", "str"), "--device": ("device", "str"),
    "-fit": ("fit", "onoff"), "--fit": ("fit", "onoff"),
    "-fitt": ("fit_target_mib", "mib_list"), "--fit-target": ("fit_target_mib", "mib_list"),
    "-fitc": ("fit_min_ctx", "int"), "--fit-ctx": ("fit_min_ctx", "int"),
}
# switches (no value)
_SWITCHES = {"-nkvo": "no_kv_offload", "--no-kv-offload": "no_kv_offload", "-cmoe": "cpu_moe", "--cpu-moe": "cpu_moe",
             "--swa-full": "swa_full", "-kvu": "kv_unified", "--kv-unified": "kv_unified"}
# -fa takes on|off|auto in current builds; older builds had a bare switch
_FA_FLAGS = ("-fa", "--flash-attn")
_FA_VALUES = {"on": True, "off": False, "auto": True, "1": True, "0": False, "true": True, "false": False,
              "enabled": True, "disabled": False}
# flags with a value that do not change GPU memory (read past, listed as ignored)
_IGNORED_VALUE = {"--host", "--port", "-t", "--threads", "-tb", "--threads-batch", "-a", "--alias", "--api-key",
                  "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "-s", "--seed", "-n", "--predict",
                  "--n-predict", "--chat-template", "--chat-template-file", "--log-file", "--slot-save-path",
                  "--timeout", "-to", "--threads-http", "--reasoning-format", "--reasoning-budget", "-hf", "--hf-repo",
                  "-hff", "--hf-file", "--mmproj", "-mm", "--lora", "--grammar", "--system-prompt-file", "-sys",
                  "--cache-reuse", "--keep", "--numa", "--rope-scaling", "--rope-freq-base", "--rope-freq-scale",
                  "--yarn-orig-ctx", "-cb", "--metrics-port",
                  "--cache-ram", "-cram", "--ctx-checkpoints", "--spec-type"}
_IGNORED_SWITCH = {"--jinja", "--no-mmap", "--mlock", "--metrics", "--verbose", "-v", "--no-webui", "--embedding",
                   "--embeddings", "--cont-batching", "-cb", "--no-warmup", "--flash-attn-auto", "--log-disable",
                   "--check-tensors", "-cnv", "--conversation", "-no-cnv", "--no-conversation", "-i", "--interactive",
                   "--no-context-shift", "--context-shift"}
# LLAMA_ARG_* environment variables arg.cpp reads (set_env), as the flag they stand for
_ENV = {"LLAMA_ARG_MODEL": "--model", "LLAMA_ARG_CTX_SIZE": "--ctx-size", "LLAMA_ARG_BATCH": "--batch-size",
        "LLAMA_ARG_UBATCH": "--ubatch-size", "LLAMA_ARG_N_PARALLEL": "--parallel",
        "LLAMA_ARG_N_GPU_LAYERS": "--n-gpu-layers", "LLAMA_ARG_TENSOR_SPLIT": "--tensor-split",
        "LLAMA_ARG_SPLIT_MODE": "--split-mode", "LLAMA_ARG_CACHE_TYPE_K": "--cache-type-k",
        "LLAMA_ARG_CACHE_TYPE_V": "--cache-type-v", "LLAMA_ARG_FLASH_ATTN": "--flash-attn",
        "LLAMA_ARG_N_CPU_MOE": "--n-cpu-moe", "LLAMA_ARG_CPU_MOE": "--cpu-moe",
        "LLAMA_ARG_NO_KV_OFFLOAD": "--no-kv-offload", "LLAMA_ARG_SWA_FULL": "--swa-full"}
# common/common.h (common_params): n_ctx 0 when -c is not given, i.e. the model's training context, and
# fit_params on (--fit): an unset context is shrunk until every GPU keeps fit_params_target (1024 MiB) free,
# down to fit_params_min_ctx (4096, --fit-ctx), by common/fit.cpp common_params_fit_impl step 2
FIT_TARGET_MIB = 1024
FIT_MIN_CTX = 4096
FIT_CTX_ALIGN = 256  # common/fit.cpp: "round down context for CUDA backend", a multiple of 256 x n_streams
# catalog KV-dtype keys of the ggml cache types
KV_CATALOG = {"f16": "fp16", "bf16": "bf16", "f32": "fp32", "q8_0": "q8_0", "q4_0": "q4_0", "q4_1": "q4_1",
              "q5_0": "q5_0", "q5_1": "q5_1", "iq4_nl": "iq4_nl"}
# --cpu-moe: every layer's experts (common/common.h llm_ffn_exps_cpu_override)
ALL_LAYERS = 4096
_EXPERT_NAME = "blk.{i}.{t}.weight"


# a flag's value as _read gives it: text, a count (None: -ngl auto), -ts proportions, -ot (pattern, buffer)s
_Value = str | int | None | tuple[float, ...] | tuple[tuple[str, str], ...]


def _read(flag: str, raw: str, kind: str) -> _Value:
    import re

    from ...errors import UsageError

    def bad(what: str) -> UsageError:
        return UsageError(f"llama.cpp {flag} {raw!r}: {what}")

    if kind == "str":
        return raw
    if kind in ("int", "int0"):
        try:
            v = int(raw)
        except ValueError:
            raise bad("expected a whole number") from None
        if v < (0 if kind == "int0" else 1):
            raise bad("must be at least " + ("0" if kind == "int0" else "1"))
        return v
    if kind == "ngl":
        if raw in ("auto", "-1"):  # common_params n_gpu_layers -1: auto, left to --fit
            return None
        if raw == "all" or raw.lstrip("-").isdigit() and int(raw) <= -2:  # <= -2: all
            return ALL_LAYERS
        return _read(flag, raw, "int0")
    if kind == "split":
        try:
            parts = [float(x) for x in re.split(r"[,/]", raw) if x.strip()]
        except ValueError:
            raise bad("expected proportions like 3,1") from None
        if not parts or any(x < 0 for x in parts) or not sum(parts):
            raise bad("expected proportions like 3,1")
        return tuple(parts)
    if kind == "onoff":
        if raw.lower() not in ("on", "off"):
            raise bad("expected on or off")
        return raw.lower() == "on"
    if kind == "mib_list":  # common/arg.cpp --fit-target: one MiB figure for every device, or one per device
        try:
            mib = tuple(int(x) for x in raw.split(","))
        except ValueError:
            raise bad("expected MiB, or MiB per device like 1024,2048") from None
        if any(x < 0 for x in mib):
            raise bad("cannot be negative")
        return mib
    if kind == "split_mode":
        if raw not in SPLIT_MODES:
            from ...errors import unknown

            raise unknown(f"llama.cpp {flag} mode", raw, SPLIT_MODES)
        return raw
    if kind == "kv":
        if raw not in KV_TYPE_BITS:
            from ...errors import unknown

            raise unknown(f"llama.cpp {flag} cache type", raw, KV_TYPE_BITS)
        return raw
    if kind == "ot":
        out: list[tuple[str, str]] = []
        for item in raw.split(","):
            pattern, eq, buft = item.partition("=")
            if not eq or not pattern or not buft:
                raise bad("expected <tensor name pattern>=<buffer type>, e.g. exps=CPU")
            try:
                re.compile(pattern)
            except re.error as e:
                raise bad(f"not a regular expression ({e})") from None
            out.append((pattern, buft))
        return tuple(out)
    raise AssertionError(kind)  # pragma: no cover


def _expert_layers_on_host(overrides: Iterable[tuple[str, str]]) -> tuple[set[int], list[str]]:
    """Layers whose expert tensors an -ot pattern sends to a CPU buffer (std::regex_search on the
    tensor name, as llama.cpp matches them), and the patterns that move something else."""
    import re

    layers: set[int] = set()
    other: list[str] = []
    for pattern, buft in overrides:
        rx = re.compile(pattern)
        hit = {i for i in range(ALL_LAYERS) for t in EXPERT_TENSORS if rx.search(_EXPERT_NAME.format(i=i, t=t))}
        if buft.upper().startswith("CPU"):
            layers |= hit
        if not hit or not buft.upper().startswith("CPU"):
            other.append(f"{pattern}={buft}")
    return layers, other


def parse_command(argv: Sequence[str], env: Mapping[str, str]) -> ServerCommand:
    """`llama-server -m F.gguf -c N -ngl K ...` / `llama-cli ...` (argv without the program) and its
    LLAMA_ARG_* environment -> the estimate options the server will run with. Unknown flags are
    collected (said under "Assumed:"); a bad value of a known flag is a UsageError naming it."""
    from ...errors import UsageError

    env_args: list[str] = []
    for var, flag in _ENV.items():
        if env.get(var) not in (None, ""):
            env_args += [flag] if flag in _SWITCHES else [flag, env[var]]
    args = env_args + list(argv)  # flags on the command line come last and win
    got: dict[str, Any] = {}
    ignored: list[str] = []
    unknown_flags: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        flag, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")

        def take() -> str:
            nonlocal i
            if eq:
                return inline
            if i + 1 >= len(args):
                raise UsageError(f"llama.cpp {flag}: needs a value")
            i += 1
            return args[i]

        if flag in _FLAGS:
            key, kind = _FLAGS[flag]
            v = _read(flag, take(), kind)
            if key == "override_tensor":
                got[key] = got.get(key, ()) + v
            else:
                got[key] = v
        elif flag in _SWITCHES:
            got[_SWITCHES[flag]] = True
        elif flag in _FA_FLAGS:
            nxt = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
            if nxt.lower() in _FA_VALUES:
                got["flash_attn"] = _FA_VALUES[nxt.lower()]
                if not eq:
                    i += 1
            elif eq:
                raise UsageError(f"llama.cpp {flag} {inline!r}: expected on, off or auto")
            else:
                got["flash_attn"] = True
        elif flag in _IGNORED_VALUE:
            take()
            ignored.append(flag)
        elif flag in _IGNORED_SWITCH:
            ignored.append(flag)
        elif a.startswith("-"):
            unknown_flags.append(a)
            # an unknown flag's value, if it has one, is not a flag itself
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("-"):
                i += 1
                unknown_flags[-1] += " " + args[i]
        else:
            unknown_flags.append(a)
        i += 1
    model = got.pop("model", None)
    if not model:
        raise UsageError("llama.cpp command line names no model: give -m FILE.gguf")
    settings: dict[str, Any] = {"model_file": model}
    for k in ("n_batch", "n_ubatch", "n_gpu_layers", "tensor_split", "split_mode", "main_gpu", "cache_type_k",
              "cache_type_v", "no_kv_offload", "swa_full", "kv_unified", "flash_attn", "fit", "fit_target_mib",
              "fit_min_ctx"):
        if got.get(k) is not None:
            settings[k] = got[k]
    host_layers: set[int] = set()
    if got.get("cpu_moe"):
        host_layers |= set(range(ALL_LAYERS))
    if got.get("n_cpu_moe"):
        host_layers |= set(range(got["n_cpu_moe"]))
    other_ot: list[str] = []
    if got.get("override_tensor"):
        layers, other_ot = _expert_layers_on_host(got["override_tensor"])
        host_layers |= layers
    if host_layers:
        settings["cpu_moe_layers"] = tuple(sorted(host_layers))
    if got.get("override_tensor"):
        settings["tensor_overrides"] = True  # any -ot turns pipeline parallelism off (pipeline_depth)
    # --fit lays the model out itself only where no flag pins the layout (common/fit.cpp aborts step 3
    # on -ngl, -ts, tensor overrides -ot / --n-cpu-moe / --cpu-moe, and --split-mode row)
    if (got.get("n_gpu_layers") is None and not got.get("tensor_split") and not host_layers
            and not got.get("override_tensor") and got.get("split_mode") not in ("row", "tensor")):
        settings["fit_layout"] = True
    if other_ot:
        unknown_flags.append("-ot " + ",".join(other_ot) + " (only expert tensors sent to CPU are modelled)")
    n_par = got.get("n_parallel") or 1
    ctx = got.get("ctx_size")
    context = None
    if ctx:
        if ctx < n_par:
            raise UsageError(f"llama.cpp -c {ctx} -np {n_par}: fewer cells than slots")
        context = ctx // n_par
    notes: list[str] = []
    if settings.get("split_mode") == "row":
        # src/llama-model.cpp: only --split-mode none keeps one GPU; row assigns layers (and their KV
        # cells) to the GPUs as layer mode does and puts each layer's matrices in the CUDA split buffer,
        # rows spread over every GPU by the same -ts proportions (make_gpu_buft_list)
        notes.append("--split-mode row: memory per GPU planned as the layer split (llama.cpp places layers and "
                     "their KV as in layer mode and spreads each matrix's rows over the GPUs in the same "
                     "proportions); its speed is estimated as the layer split's")
    if settings.get("split_mode") == "tensor":
        notes.append("--split-mode tensor (experimental): each GPU holds an even share of every layer's weights "
                     "and of the KV cache (docs/multi-gpu.md)"
                     + (", -ts planned as that even split" if settings.get("tensor_split") else "")
                     + (f", -ngl {settings['n_gpu_layers']} planned as every layer on the GPUs (the layers it "
                        "leaves in host RAM would need less GPU memory than shown)"
                        if settings.get("n_gpu_layers") is not None and not settings.get("no_devices") else "")
                     + "; each GPU's compute buffer counted as one GPU's; --fit does not run in this mode")
    default_context = None
    if not ctx:  # not given, or -c 0: the model's training context, which --fit may shrink
        default_context = 0
        settings["ctx_auto"] = True
        fit = fit_runs(settings)
        notes.append(("no -c" if ctx is None else "-c 0") + ": llama.cpp's default is the model's training context"
                     + (", which --fit shrinks where it leaves a GPU less than its margin free" if fit else
                        " (--fit off or --split-mode tensor: kept whole)"))
    cache_type = settings.get("cache_type_k") or settings.get("cache_type_v")
    kv_dtype = KV_CATALOG.get(cache_type) if cache_type else None
    gpus = env.get("CUDA_VISIBLE_DEVICES")
    if got.get("device") and got["device"].strip().lower() == "none":
        # common/arg.cpp --device none: no device offload, every layer in host RAM (as -ngl 0); with
        # --split-mode tensor start-up rejects it (docs/multi-gpu.md: at least one non-CPU device)
        settings["n_gpu_layers"] = 0
        settings["no_devices"] = True
        notes.append("--device none: no GPU is used; every layer runs from host RAM (as -ngl 0)")
    elif got.get("device"):
        import re

        ids = re.findall(r"CUDA(\d+)", got["device"])
        if ids:
            gpus = ",".join(ids) if gpus is None else ",".join(gpus.split(",")[int(x)] for x in ids
                                                              if int(x) < len(gpus.split(",")))
    return ServerCommand(engine="llama.cpp", model=model, context=context, batch=n_par if n_par > 1 else None,
                         kv_dtype=kv_dtype, gpus=gpus, settings=settings, ignored=tuple(ignored),
                         unknown=tuple(unknown_flags), default_context=default_context, notes=tuple(notes))
