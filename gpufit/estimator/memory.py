"""Memory arithmetic: weights, KV cache, activations / compute buffer, per-GPU overhead.

Every function is pure: numbers in, bytes (int) out. Hand-checked figures are pinned in
tests/test_memory.py (Llama-3-8B: weights, KV per token, compute buffer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..catalog.types import ModelSpec, QuantFormat
from . import engines
from .params import (ParamCounts, attention_layer_counts, attention_shape, count_params, kv_shared_counts,
                     required)


@dataclass(frozen=True)
class WeightSplit:
    """Weight bytes, split the way placement needs them."""

    embed: int  # token embeddings
    output: int  # output head (0 when tied)
    per_layer: float  # mean bytes of one transformer layer
    per_layer_active: float  # bytes of one layer read per token (MoE: active experts only)
    per_layer_embed: int = 0  # per-layer embedding table (Gemma 3n / 4 E-models), stored like `embed`

    def total(self, layers: int) -> int:
        return int(round(self.embed + self.per_layer_embed + self.output + self.per_layer * layers))


def _bits(q: QuantFormat, which: str) -> float:
    v = getattr(q, which)
    return q.bits_per_weight if v is None else v


def weight_split(m: ModelSpec, q: QuantFormat, pc: ParamCounts | None = None,
                 exact_total: int | None = None) -> WeightSplit:
    """Bytes of embeddings, output head and one layer at quantization `q`.

    body x bits/8 + embed x embed_bits/8 + output x output_bits/8. Where the format keeps embeddings
    and head in 16 bit (vLLM FP8/INT8/AWQ/GPTQ, bitsandbytes) the catalog says so per format. A
    tied output head is stored once. With `exact_total` (from a model file) the body is scaled so the
    total matches the file's tensor bytes exactly.
    """
    pc = pc or count_params(m)
    embed = pc.embed * _bits(q, "embed_bits") / 8
    ple = pc.per_layer_embed * _bits(q, "embed_bits") / 8
    output = pc.output * _bits(q, "output_bits") / 8
    body = pc.body * q.bits_per_weight / 8
    body_active = pc.body_active * q.bits_per_weight / 8
    if exact_total is not None and body > 0:
        scale = max(0.0, exact_total - embed - ple - output) / body
        body *= scale
        body_active *= scale
    return WeightSplit(
        embed=int(round(embed)),
        output=int(round(output)),
        per_layer=body / m.layers,
        per_layer_active=body_active / m.layers,
        per_layer_embed=int(round(ple)),
    )


def weight_bytes(m: ModelSpec, q: QuantFormat, exact_total: int | None = None) -> int:
    if exact_total is not None:
        return exact_total
    return weight_split(m, q).total(m.layers)


def kv_bits(kv: QuantFormat) -> float:
    return kv.kv_bits if kv.kv_bits is not None else kv.bits_per_weight


def kv_bytes_per_token_layer(m: ModelSpec, kv: QuantFormat, tp: int = 1, full: bool = False) -> float:
    """KV bytes one token adds in one attention layer on one tensor-parallel rank.

    Standard/GQA: 2 (K and V) x KV heads per rank x head_dim x bytes, with KV heads per rank
    max(1, kv_heads // tp) (heads are replicated when tp exceeds them); `full` takes the shape of the
    full-attention layers where it differs (Gemma 4 global_kv_heads x global_head_dim; K and V are both
    cached even where one projection makes them). MLA (DeepSeek V2/V3) caches one latent of
    kv_lora_rank + qk_rope_head_dim per token and layer, replicated on every rank.
    """
    b = kv_bits(kv) / 8
    if m.is_mla:
        return (required(m, "kv_lora_rank", m.kv_lora_rank) + (m.qk_rope_head_dim or 0)) * b
    heads, head_dim = attention_shape(m, full)
    return 2 * max(1, heads // tp) * head_dim * b


def cache_layer_counts(m: ModelSpec) -> tuple[int, int, int]:
    """(full-attention, sliding, chunked) layers that keep a KV cache of their own: the attention layers
    less the KV-sharing ones (Gemma 3n / 4), which read the cache of an earlier layer of their type;
    linear / SSM and MLP-only layers keep none."""
    full, sliding, chunked = attention_layer_counts(m)
    shared_full, shared_sliding = kv_shared_counts(m)
    return full - shared_full, sliding - shared_sliding, chunked


def kv_tokens_per_layer_sum(m: ModelSpec, context: int) -> int:
    """Sum over the caching layers of cached tokens: full layers hold `context`, sliding layers
    min(context, window), chunked local layers min(context, chunk) (shapes aside: see kv_bytes_per_token)."""
    full, sliding, chunked = cache_layer_counts(m)
    return (full * context + sliding * min(context, m.sliding_window or context)
            + chunked * min(context, m.attention_chunk or context))


def kv_bytes_per_token(m: ModelSpec, kv: QuantFormat, context: int, tp: int = 1) -> float:
    """KV bytes of one sequence of `context` tokens on one rank, every caching layer at its own shape."""
    full, sliding, chunked = cache_layer_counts(m)
    other = sliding * min(context, m.sliding_window or context) + chunked * min(context, m.attention_chunk or context)
    return (kv_bytes_per_token_layer(m, kv, tp, full=True) * full * context
            + kv_bytes_per_token_layer(m, kv, tp) * other)


def state_bytes(m: ModelSpec, tp: int = 1, dtype_bytes: int = 2) -> int:
    """Fixed state of the linear-attention / SSM layers for one sequence (model dtype), per rank."""
    return int(m.linear_layers * (m.linear_state_elems or 0) * dtype_bytes / tp)


def kv_cache_bytes(m: ModelSpec, kv: QuantFormat, context: int, batch: int = 1, tp: int = 1,
                   layers: int | None = None) -> int:
    """KV cache (and linear-layer state) for `batch` sequences of `context` tokens (per TP rank).
    `layers` restricts to a share of the layers (a device holding n of the model's layers holds
    n/layers of it)."""
    total = (kv_bytes_per_token(m, kv, context, tp) + state_bytes(m, tp)) * batch
    if layers is not None:
        total = total * layers / m.layers
    return int(math.ceil(total))


def transformers_activation_bytes(m: ModelSpec, context: int, batch: int, dtype_bytes: int = 2) -> int:
    """transformers generate(): the first step runs the whole prompt through each layer (SDPA attention,
    so no ctx x ctx score matrix), keeping one layer's MLP intermediates for every prompt token; since
    transformers 4.45 generate() computes logits for the last position only (`logits_to_keep`), in
    fp32: batch x vocab x 4 (engines.TRANSFORMERS_LOGITS_LAST_TOKEN_ONLY)."""
    tokens = context * batch
    width = required(m, "moe_intermediate", m.moe_intermediate) * m.experts_active if m.is_moe else m.intermediate
    mlp = tokens * (2 * m.hidden + 3 * width) * dtype_bytes
    logit_rows = batch if engines.TRANSFORMERS_LOGITS_LAST_TOKEN_ONLY else tokens
    return int(mlp + logit_rows * m.vocab * 4)
