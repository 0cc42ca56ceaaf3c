"""Which GGML type each tensor of a block gets in a K-quant mix, as llama.cpp's quantizer picks it, and
so the bytes of every block of a GGUF file (not one average): Q4_K_M keeps the value projection and the
FFN down projection of the first and last eighth of the layers, and of every third layer between, in
Q6_K. Ollama's scheduler reads each `blk.N` size from the file (llm/memory.go), so its layer counts
follow these sizes.

Source: llama.cpp src/llama-quant.cpp `llama_tensor_get_type`, read in the copy Ollama vendors
(ollama/ollama v0.5.7 llama/llama-quant.cpp; Ollama's own server/quantization.go getTensorNewType
follows it): `use_more_bits`; attn_v (Q4_K_M / Q5_K_M: Q6_K where use_more_bits; Q4_K_S: Q5_K on
the first 4; a 70B-type model, 80 layers, bumps a Q4_K attn_v to Q5_K); attn_qkv (Q4_K_M: Q5_K,
Q5_K_M: Q6_K); ffn_down (Q4_K_M / Q5_K_M: Q6_K where use_more_bits of the layer, experts and shared
experts alike; Q4_K_S: Q5_K on the first eighth); the fallback for rows not a multiple of 256 (Q4_K
-> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0); ffn_gate_inp kept F32; 1-D norms F32. Block sizes:
ggml-common.h (Q4_K 144 bytes / 256, Q5_K 176 / 256, Q6_K 210 / 256, Q5_0 22 / 32, Q5_1 24 / 32,
Q8_0 34 / 32).
"""

from __future__ import annotations

from ..catalog.types import ModelSpec, QuantFormat
from .params import attention_params, mlp_params, required

# bits per weight of the ggml block types (ggml-common.h block sizes)
Q4_K, Q5_K, Q6_K, Q8_0, F32 = 4.5, 5.5, 6.5625, 8.5, 32.0
Q5_0, Q5_1 = 5.5, 6.0  # 22 / 24 bytes per 32
MXFP4 = 4.25  # 32 E2M1 values + one E8M0 scale (ggml-common.h block_mxfp4: 17 bytes / 32)
QK_K = 256  # a K-quant row must be a multiple of 256 weights ...
# ... else llama-quant.cpp falls back: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 (rows of 32)
FALLBACK = {Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}
# the base type of each mixed K-quant format (llama_model_quantize_impl default_type)
BASE = {"q4_k_s": Q4_K, "q4_k_m": Q4_K, "q5_k_s": Q5_K, "q5_k_m": Q5_K}
LLAMA_70B_LAYERS = 80  # llama-model.cpp: 80 layers is LLM_TYPE_70B (llama, qwen2)
# architectures whose GGUF fuses q/k/v into one attn_qkv (llama-arch.cpp LLM_ARCH_PHI3: attn_qkv, and
# ffn_up holding gate and up): llama-quant.cpp gives attn_qkv Q5_K in Q4_K_M, Q6_K in Q5_K_M
FUSED_QKV_FAMILIES = ("phi3", "phi4")


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_bits(fmt: str, tensor: str, i: int, n: int, in_dim: int) -> float:
    """llama_tensor_get_type for the K-quant mixes, one block's tensor (attn_v, attn_qkv, ffn_down or
    any other), layer i of n, rows of in_dim weights."""
    base = BASE[fmt]
    t = base
    if tensor == "attn_v":
        if fmt in ("q4_k_m", "q5_k_m") and use_more_bits(i, n):
            t = Q6_K
        elif fmt == "q4_k_s" and i < 4:
            t = Q5_K
        if n == LLAMA_70B_LAYERS and t == Q4_K:
            t = Q5_K
    elif tensor == "attn_qkv":
        t = {"q4_k_m": Q5_K, "q5_k_m": Q6_K}.get(fmt, base)
    elif tensor == "ffn_down":
        if fmt in ("q4_k_m", "q5_k_m") and use_more_bits(i, n):
            t = Q6_K
        elif fmt == "q4_k_s" and i < n // 8:
            t = Q5_K
    return FALLBACK[t] if in_dim % QK_K else t


def _mxfp4_blocks(m: ModelSpec) -> list[int]:
    """gpt-oss as Ollama converts it (ollama/ollama v0.11.3 convert/convert_gptoss.go): the tensors the
    checkpoint ships as MXFP4 blocks + scales -- the experts -- stay MXFP4 (4.25 bits); every other tensor
    keeps the checkpoint's BF16 (attention, router)."""
    h = m.hidden
    ff = required(m, "moe_intermediate", m.moe_intermediate)
    bits = (attention_params(m) + h * m.experts) * 16 + m.experts * mlp_params(h, ff, m.mlp) * MXFP4 + 2 * h * F32
    return [int(bits / 8)] * m.layers


def block_bytes(m: ModelSpec, q: QuantFormat) -> list[int] | None:
    """Bytes of blk.0 .. blk.N-1 for a mixed K-quant (Q4_K_S/M, Q5_K_S/M) or gpt-oss's MXFP4 file; None
    for other formats and for shapes this does not cover (8-expert models, whose attention llama.cpp
    bumps to Q8_0, and hybrid / linear-attention layers)."""
    if q.key == "mxfp4" and m.is_moe:
        return _mxfp4_blocks(m)
    fmt = q.key
    if fmt not in BASE or m.linear_layers or m.single_sublayer or (m.is_moe and m.experts == 8):
        return None
    if (m.global_head_dim or m.global_kv_heads or m.kv_shared_layers or m.per_layer_embed_dim
            or m.altup_inputs or m.laurel_rank):
        return None  # Gemma 3n / 4 layers (per-layer-type attention, AltUp, LAuReL): not covered here
    h, n = m.hidden, m.layers
    expert_ff = required(m, "moe_intermediate", m.moe_intermediate) if m.is_moe else 0
    attn = attention_params(m)
    o = m.heads * (m.v_head_dim or m.head_dim) * h  # attn_output: rows of heads x head_dim
    v = qkv = 0
    if m.family in FUSED_QKV_FAMILIES:
        qkv = h * (m.heads + 2 * m.kv_heads) * m.head_dim
    elif not m.is_mla:  # MLA keeps V inside attn_kv_b
        v = h * m.kv_heads * m.head_dim
    rest = attn - o - v - qkv
    base = BASE[fmt]
    out: list[int] = []
    for i in range(n):
        bits = (rest * tensor_bits(fmt, "", i, n, h) + o * tensor_bits(fmt, "", i, n, m.heads * m.head_dim)
                + v * tensor_bits(fmt, "attn_v", i, n, h) + qkv * tensor_bits(fmt, "attn_qkv", i, n, h)
                + 2 * h * F32)
        if m.is_moe and i >= m.dense_layers:
            n_ffn = m.experts + m.shared_experts
            ff, down = expert_ff, n_ffn * h * expert_ff
            gate_up = n_ffn * mlp_params(h, expert_ff, m.mlp) - down
            bits += h * m.experts * F32  # ffn_gate_inp stays F32
        else:
            ff, down = m.intermediate, h * m.intermediate
            gate_up = mlp_params(h, m.intermediate, m.mlp) - down
        bits += gate_up * (FALLBACK[base] if h % QK_K else base) + down * tensor_bits(fmt, "ffn_down", i, n, ff)
        out.append(int(bits / 8))
    return out
