"""Which GGML type each tensor of a block gets in a K-quant mix, as llama.cpp's quantizer picks it, and
so the bytes of every block of a GGUF file (not one average): Q4_K_M keeps the value projection and the
FFN down projection of the first and last eighth of the layers, and of every third layer between, in
Q6_K. Ollama's scheduler reads each `blk.N` size from the file (llm/memory.go), so its layer counts
follow these sizes.

Source: llama.cpp src/llama-quant.cpp `llama_tensor_get_type`, read in the copy Ollama vendors
(ollama/ollama v0.5.7 llama/llama-quant.cpp): `use_more_bits`, the attn_v branch (Q4_K_M / Q5_K_M:
Q6_K where use_more_bits; a 70B-type model, 80 layers, bumps a Q4_K attn_v to Q5_K), the ffn_down
branch (Q4_K_M: Q6_K where use_more_bits of the layer parsed from the tensor name, experts and shared
experts alike), the output tensor (Q6_K unless the format is Q8_0; a tied token_embd takes the output's
type), ffn_gate_inp kept F32 (not quantized), 1-D norms F32. Block sizes: ggml-common.h (Q4_K 144
bytes / 256, Q5_K 176 / 256, Q6_K 210 / 256, Q8_0 34 / 32 weights).
"""

from __future__ import annotations

from ..catalog.types import ModelSpec, QuantFormat
from .params import attention_params, mlp_params, required

# bits per weight of the ggml block types (ggml-common.h block sizes)
Q4_K, Q5_K, Q6_K, Q8_0, F32 = 4.5, 5.5, 6.5625, 8.5, 32.0
MXFP4 = 4.25  # 32 E2M1 values + one E8M0 scale (ggml-common.h block_mxfp4: 17 bytes / 32)
QK_K = 256  # a K-quant row must be a multiple of 256 weights, else llama.cpp falls back to a legacy type
# (base type, the type of attn_v / ffn_down where use_more_bits) per mixed K-quant format
MIXES = {"q4_k_m": (Q4_K, Q6_K), "q5_k_m": (Q5_K, Q6_K)}
LLAMA_70B_LAYERS = 80  # llama-model.cpp: 80 layers is LLM_TYPE_70B (llama, qwen2)


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _mxfp4_blocks(m: ModelSpec) -> list[int]:
    """gpt-oss as Ollama converts it (ollama/ollama v0.11.3 convert/convert_gptoss.go): the tensors the
    checkpoint ships as MXFP4 blocks + scales -- the experts -- stay MXFP4 (4.25 bits); every other tensor
    keeps the checkpoint's BF16 (attention, router)."""
    h = m.hidden
    ff = required(m, "moe_intermediate", m.moe_intermediate)
    bits = (attention_params(m) + h * m.experts) * 16 + m.experts * mlp_params(h, ff, m.mlp) * MXFP4 + 2 * h * F32
    return [int(bits / 8)] * m.layers


def block_bytes(m: ModelSpec, q: QuantFormat) -> list[int] | None:
    """Bytes of blk.0 .. blk.N-1 for a mixed K-quant (Q4_K_M, Q5_K_M) or gpt-oss's MXFP4 file; None for
    other formats and for
    shapes this does not cover (rows not a multiple of 256, 8-expert models whose attention llama.cpp
    bumps to Q8_0, hybrid / linear-attention layers)."""
    if q.key == "mxfp4" and m.is_moe:
        return _mxfp4_blocks(m)
    mix = MIXES.get(q.key)
    if mix is None or m.linear_layers or m.single_sublayer or (m.is_moe and m.experts == 8):
        return None
    base, more = mix
    h = m.hidden
    expert_ff = required(m, "moe_intermediate", m.moe_intermediate) if m.is_moe else 0
    if any(d % QK_K for d in (h, m.intermediate or QK_K, expert_ff or QK_K)):
        return None
    v = 0 if m.is_mla else h * m.kv_heads * m.head_dim  # attn_v (MLA keeps V inside attn_kv_b)
    attn_rest = attention_params(m) - v
    v_light = Q5_K if (m.layers == LLAMA_70B_LAYERS and base == Q4_K) else base
    out: list[int] = []
    for i in range(m.layers):
        heavy = use_more_bits(i, m.layers)
        bits = attn_rest * base + v * (more if heavy else v_light) + 2 * h * F32
        if m.is_moe and i >= m.dense_layers:
            n_ffn = m.experts + m.shared_experts
            down = n_ffn * h * expert_ff
            gate_up = n_ffn * mlp_params(h, expert_ff, m.mlp) - down
            bits += h * m.experts * F32  # ffn_gate_inp stays F32
        else:
            down = h * m.intermediate
            gate_up = mlp_params(h, m.intermediate, m.mlp) - down
        bits += gate_up * base + down * (more if heavy else base)
        out.append(int(bits / 8))
    return out

