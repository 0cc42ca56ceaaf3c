"""llama.cpp: how it places a model (src/llama-model.cpp, src/llama-kv-cache.cpp, common/arg.cpp).

Layers are split over every visible GPU in proportion to free memory (`--split-mode layer`, the
n_layer + 1 split with the output layer last), token embeddings stay in host memory, the KV cache is
allocated for the whole `-c` up front, and each device holds one compute buffer sized for a ubatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .. import memory
from . import profiles
from .base import Engine
from .profiles import LLAMA_CPP

if TYPE_CHECKING:  # pragma: no cover
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
# model families whose sliding window llama.cpp applies: src/llama-model.cpp sets hparams.swa_type for
# LLM_ARCH_GEMMA2, GEMMA3, GEMMA3N, COHERE2, OPENAI_MOE (gpt-oss) and LLAMA4 (chunked). Mistral 7B
# v0.1 has `sliding_window` in its config.json, but it converts to the llama architecture, which has
# none: its KV cache holds every token on every layer (4 GiB at 32k).
SWA_FAMILIES = ("gemma2", "gemma3", "gemma3n", "gpt-oss", "command-r7b", "llama4")
# src/llama-kv-cache-iswa.cpp: the sliding layers' cache holds
#   min(n_ctx, pad(n_swa x n_seq + n_ubatch, 256))  cells (unified),  n_ctx with --swa-full
# the ubatch being written sees its window back from its first token, hence + n_ubatch
KV_PAD = 256


def setting(req: "FitRequest", key: str, default=None):
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
    default = KV_TYPE_BITS.get(base, memory.kv_bits(req.kv_dtype))
    k = setting(req, "cache_type_k")
    v = setting(req, "cache_type_v")
    return (KV_TYPE_BITS[k] if k else default), (KV_TYPE_BITS[v] if v else default)


def kv_widths(m) -> tuple[int, int]:
    """Elements per token and layer in the K and the V cache. MLA (DeepSeek V2/V3) as llama.cpp
    stores it: one head of kv_lora_rank + rope dims for K and kv_lora_rank for V (n_head_kv = 1,
    src/llama-model.cpp LLM_ARCH_DEEPSEEK2); else KV heads x head_dim each."""
    if m.is_mla:
        return m.kv_lora_rank + (m.qk_rope_head_dim or 0), m.kv_lora_rank
    return m.kv_heads * m.head_dim, m.kv_heads * m.head_dim


def llama_cpp_kv_bytes(req: "FitRequest", layers: int | None = None, swa_applied: bool = True) -> int:
    m = req.model
    full, swa = kv_cells(req, swa_applied)
    n_swa = (m.sliding_layers or m.chunked_layers) if swa is not None else 0
    cells = (m.layers - n_swa) * full + n_swa * (swa or 0)
    kw, vw = kv_widths(m)
    kb, vb = kv_element_bits(req)
    total = cells * (kw * kb + vw * vb) / 8
    if layers is not None:
        total = total * layers / m.layers
    return int(-(-total // 1))


def compute_bytes(m, n_ctx: int, n_ubatch: int, flash_attn: bool, multi_gpu: bool) -> int:
    """Per-device compute buffer for one ubatch (memory.llama_cpp_compute_bytes's three peaks). With
    flash attention the n_ctx x n_head f32 scores are never materialised: the attention peak is the
    mask and the hidden-wide tensors, and the output peak (logits) usually bounds the buffer (Llama 3
    8B: 512 x 4 x (128,256 + 4,096) = 258 MiB, the buffer llama.cpp logs with -fa on)."""
    n_ub = min(n_ubatch, n_ctx)
    ff = m.moe_intermediate * m.experts_active if m.is_moe else m.intermediate
    mask = n_ctx
    attention = (0 if flash_attn else n_ctx * m.heads) + mask + profiles.LLAMA_CPP_ATTN_HIDDEN_F32_TENSORS * m.hidden
    mlp = mask + profiles.LLAMA_CPP_MLP_FF_F32_TENSORS * ff + profiles.LLAMA_CPP_MLP_HIDDEN_F32_TENSORS * m.hidden
    output = m.vocab + m.hidden
    total = n_ub * 4 * max(attention, mlp, output)
    if multi_gpu:
        total *= profiles.LLAMA_CPP_MULTI_GPU_COMPUTE_FACTOR
    return int(total)


# ---- MoE expert tensors kept in host memory (--n-cpu-moe N, --cpu-moe, -ot PATTERN=CPU) ---------------
# common/common.h LLM_FFN_EXPS_REGEX: the expert tensors of block i are blk.i.ffn_{up,down,gate}_exps
EXPERT_TENSORS = ("ffn_up_exps", "ffn_down_exps", "ffn_gate_exps")


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
    per = (3 if m.mlp == "gated" else 2) * m.hidden * m.moe_intermediate
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
    swa_families = SWA_FAMILIES

    def weight_split(self, m, q, exact_total):
        """A tied head is loaded twice: token_embd stays in host memory for the input lookup and a
        duplicate goes to the output layer's device (src/llama-model.cpp: output falls back to
        token_embd with TENSOR_DUPLICATED)."""
        ws = memory.weight_split(m, q, exact_total=exact_total)
        if m.tie_embeddings and not ws.output:
            import dataclasses

            ws = dataclasses.replace(ws, output=ws.embed)
        return ws

    def rank_layer_bytes(self, req, ws, layers, tp):
        """Layer weights on the GPUs, less the expert tensors kept in host RAM (spread over the
        layers in proportion: exact on one GPU, approximate per card on a split)."""
        n = host_expert_layers(req)
        host = n * expert_layer_bytes(req) if n else 0.0
        return (ws.per_layer * req.model.layers - host) * layers / req.model.layers / tp

    def host_resident_bytes(self, req) -> int:
        """Expert tensors kept in host memory, and the KV cache under --no-kv-offload."""
        n = host_expert_layers(req)
        out = n * expert_layer_bytes(req) if n else 0
        if setting(req, "no_kv_offload", False):
            out += llama_cpp_kv_bytes(req)
        return int(out)

    def host_read_bytes_per_token(self, req) -> float:
        """Weights read from host memory per decoded token: the routed experts a token uses in the
        layers whose experts stay on the CPU (the CPU computes them; llama.cpp's expert offload)."""
        n = host_expert_layers(req)
        return n * expert_layer_bytes(req, active=True) if n else 0.0

    def kv_bytes(self, req, layers=None, tp=1):
        if setting(req, "no_kv_offload", False):
            return 0
        return llama_cpp_kv_bytes(req, layers, swa_applied=req.model.family in self.swa_families)

    def activation_bytes(self, req: "FitRequest", tp: int = 1, multi_gpu: bool = False) -> int:
        fa = setting(req, "flash_attn", FLASH_ATTN_DEFAULT)
        ub = min(setting(req, "n_ubatch", N_UBATCH), setting(req, "n_batch", N_BATCH))
        return compute_bytes(req.model, req.context * req.batch, ub, fa, multi_gpu)

    def notes(self, req) -> list[str]:
        out = super().notes(req)
        m = req.model
        if (m.sliding_layers or m.chunked_layers) and m.family not in self.swa_families:
            out.append(f"{self.key} does not apply {m.name}'s sliding window: every layer caches all "
                       f"{req.context * req.batch} tokens")
        return out

    def default_kv_dtype(self, m) -> str:
        return "fp16"

    def flags(self, result: "FitResult") -> str | None:
        r = result.request
        if "llama.cpp" not in r.quant.engines:
            return None
        p = result.placement
        ngl = p.gpu_layers if p.strategy == "cpu_offload" else 999
        parts = ["llama-server -m MODEL.gguf", f"-c {r.context * r.batch}"]
        if r.batch > 1:
            parts.append(f"-np {r.batch}")
        parts.append(f"-ngl {ngl}")
        layers = [n for n in p.layers_per_device if n]
        if len(layers) > 1:
            parts.append("--split-mode layer")
            parts.append("-ts " + ",".join(str(n) for n in p.layers_per_device))
        kv = LLAMA_KV.get(r.kv_dtype.key)
        if kv and kv not in ("f16", "bf16"):
            parts.append(f"--cache-type-k {kv} --cache-type-v {kv} -fa on")
        return cuda_visible(result) + " ".join(parts)


_ENGINE = LlamaCpp()


def for_version(version: str | None) -> Engine:
    if version is not None:
        from ...errors import UsageError

        raise UsageError(f"--engine llama.cpp@{version}: gpufit models the current llama.cpp only")
    return _ENGINE


def parse(argv: Sequence[str], env: Mapping[str, str]):  # pragma: no cover - replaced by issue 10
    return _ENGINE.parse_command(argv, env)
