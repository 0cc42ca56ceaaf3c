"""Parameter counts from a model's architecture.

Counts every weight matrix, bias and norm vector of a decoder-only transformer (dense, MoE, MLA).
Where the catalog has a published exact count (`ModelSpec.params`) that figure wins for the total and
the architecture count is only used to split it (embeddings / output head / body / per-layer).
Check: Llama-3-8B counts to 8,030,261,248, the published figure (tests/test_memory.py, test_llama3_8b_parameter_split_by_hand).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog.types import ModelSpec


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model, split the way memory and speed need them."""
    total: int  # all parameters
    # used per token in matrix products: every layer's active weights plus the output head (the
    # embedding matrix itself where the head is tied); the input embedding is a row lookup, not a
    # product, so it is left out (gpt-oss-20b: 3.61 B, the published figure)
    active: int
    embed: int  # token embedding table (vocab x hidden)
    output: int  # output head (0 when tied to the embeddings)
    per_layer: int  # mean parameters per transformer layer (attention + MLP/MoE + norms)
    per_layer_active: int  # mean per-layer parameters used per token
    computed_total: int  # what the architecture adds up to, before a published total replaces it
    exact: bool  # True when `total` is a published figure
    # per-layer embedding table (Gemma 3n / Gemma 4 E-models): a row lookup like `embed`, 0 without one
    per_layer_embed: int = 0

    @property
    def body(self) -> int:
        """Everything but the embedding tables and the output head: the quantized transformer layers."""
        return self.total - self.embed - self.output - self.per_layer_embed

    @property
    def head(self) -> int:
        """Parameters of the output head as used per token: the embedding matrix when tied."""
        return self.output or self.embed

    @property
    def body_active(self) -> int:
        return self.active - self.head


def required(m: ModelSpec, name: str, value: int | None) -> int:
    """A shape field the model's kind requires (the catalog loader checks they go together: an MLA model
    has kv_lora_rank, a MoE model moe_intermediate, ...): its value, or ValueError naming the model and
    the field where a ModelSpec was built without it."""
    if value is None:
        raise ValueError(f"model {m.key}: {name} is not set, but its architecture needs it")
    return value


def attention_shape(m: ModelSpec, full: bool = False) -> tuple[int, int]:
    """(KV heads, head_dim) of a full-attention layer (`full`) or of the other attention layers: Gemma 4's
    full-attention layers have their own (global_kv_heads, global_head_dim); every other model one shape."""
    if full:
        return m.global_kv_heads or m.kv_heads, m.global_head_dim or m.head_dim
    return m.kv_heads, m.head_dim


def attention_params(m: ModelSpec, full: bool = False, shared: bool = False) -> int:
    """One attention block. `full`: a full-attention layer of a model whose full layers have their own
    shape (Gemma 4); `shared`: a layer that reuses an earlier layer's KV (Gemma 3n / 4 KV sharing), which
    loads no k/v projection."""
    h = m.hidden
    if m.is_mla:
        nope = m.qk_nope_head_dim or 0
        rope = m.qk_rope_head_dim or 0
        v = m.v_head_dim or m.head_dim
        qk = m.heads * (nope + rope)
        if m.q_lora_rank:
            q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * qk  # down, norm, up
        else:
            q = h * qk
        kv_rank = required(m, "kv_lora_rank", m.kv_lora_rank)
        kv = h * (kv_rank + rope) + kv_rank + kv_rank * m.heads * (nope + v)
        o = m.heads * v * h
        return q + kv + o + indexer_params(m)
    kv_heads, head_dim = attention_shape(m, full)
    q = h * m.heads * head_dim
    if m.attn_output_gate:  # Qwen3-Next: q_proj emits query and gate, heads x head_dim each
        q *= 2
    projections = 0 if shared else (1 if full and m.global_k_eq_v else 2)  # k (and v) projections
    kv = projections * h * kv_heads * head_dim
    o = m.heads * head_dim * h
    bias = (m.heads + projections * kv_heads) * head_dim if m.attn_bias else 0
    return q + kv + o + bias


def kv_shared_counts(m: ModelSpec) -> tuple[int, int]:
    """(full-attention, sliding) layers among the KV-sharing ones."""
    return m.kv_shared_layers - m.kv_shared_sliding, m.kv_shared_sliding


def attention_layer_counts(m: ModelSpec) -> tuple[int, int, int]:
    """(full-attention, sliding-window, chunked) layers: the ones that hold attention."""
    full = m.layers - m.sliding_layers - m.chunked_layers - m.linear_layers - m.mlp_only_layers
    return full, m.sliding_layers, m.chunked_layers


def attention_shape_delta(m: ModelSpec) -> int:
    """What the attention layers hold beyond `attention_params(m)` each: full-attention layers of their
    own shape (Gemma 4) and KV-sharing layers without k/v projections (Gemma 3n / 4). 0 for every
    model with one attention shape and no KV sharing."""
    if not (m.global_head_dim or m.global_kv_heads or m.global_k_eq_v or m.kv_shared_layers):
        return 0
    full, sliding, chunked = attention_layer_counts(m)
    shared_full, shared_sliding = kv_shared_counts(m)
    base = attention_params(m)
    return ((full - shared_full) * attention_params(m, full=True) + shared_full * attention_params(m, True, True)
            + (sliding - shared_sliding) * base + shared_sliding * attention_params(m, shared=True)
            + chunked * base - (full + sliding + chunked) * base)


def per_layer_embedding_params(m: ModelSpec) -> tuple[int, int]:
    """(table, the rest) of the per-layer embeddings (transformers Gemma3nTextModel / Gemma4TextModel):
    the table per_layer_embed_vocab x layers*dim; the projection hidden -> layers*dim and its norm (dim),
    and in every layer the gate hidden -> dim, the projection dim -> hidden and a norm (hidden)."""
    dim = m.per_layer_embed_dim
    if not dim:
        return 0, 0
    table = (m.per_layer_embed_vocab or m.vocab) * m.layers * dim
    return table, m.hidden * m.layers * dim + dim + m.layers * (2 * m.hidden * dim + m.hidden)


def gemma3n_block_params(m: ModelSpec) -> int:
    """Gemma 3n's AltUp and LAuReL weights, all layers and the model-level AltUp projections
    (transformers modeling_gemma3n.py): per layer AltUp correct_output_scale (hidden), correction_coefs
    (n x n), prediction_coefs (n x n^2), modality_router (hidden x n), router_norm (hidden) and LAuReL
    linear_left / linear_right (hidden x rank each), post_laurel_norm (hidden); altup_projections and
    altup_unembed_projections, n - 1 of hidden x hidden each. 0 for every other model."""
    n, r, h = m.altup_inputs, m.laurel_rank, m.hidden
    altup = m.layers * (2 * h + n * n + n ** 3 + h * n) + 2 * (n - 1) * h * h if n else 0
    laurel = m.layers * (2 * h * r + h) if r else 0
    return altup + laurel


def indexer_params(m: ModelSpec) -> int:
    """DeepSeek-V3.2's lightning indexer per layer (inference/model.py Indexer): wq_b from the q latent to
    heads x head_dim, wk from the hidden state to one head_dim key, its LayerNorm (weight + bias), and
    weights_proj to one weight per head. 0 without an indexer."""
    heads = m.indexer_heads
    if not heads:
        return 0
    d = required(m, "indexer_head_dim", m.indexer_head_dim)
    q_rank = required(m, "q_lora_rank", m.q_lora_rank)
    return q_rank * heads * d + m.hidden * d + 2 * d + m.hidden * heads


def linear_attention_params(m: ModelSpec) -> int:
    """One gated-DeltaNet layer (transformers Qwen3NextGatedDeltaNet): in_proj_qkvz (q, k, v and the
    z gate), in_proj_ba (beta and alpha per value head), the causal conv1d over q|k|v (no bias), dt_bias
    and A_log per value head, the gated RMSNorm over a value head, out_proj. 0 without the shape."""
    key_heads = m.linear_key_heads
    if not key_heads:
        return 0
    value_heads = required(m, "linear_value_heads", m.linear_value_heads)
    value_dim = required(m, "linear_value_head_dim", m.linear_value_head_dim)
    kd = key_heads * required(m, "linear_key_head_dim", m.linear_key_head_dim)
    vd = value_heads * value_dim
    conv_dim = 2 * kd + vd
    kernel = required(m, "linear_conv_kernel", m.linear_conv_kernel)
    return (m.hidden * (2 * kd + 2 * vd) + m.hidden * 2 * value_heads + conv_dim * kernel
            + 2 * value_heads + value_dim + vd * m.hidden)


def mamba2_params(m: ModelSpec) -> int:
    """One Mamba2 mixer (transformers Mamba2Mixer / GraniteMoeHybridMambaLayer): in_proj to z|x|B|C|dt,
    the depthwise conv1d over x|B|C (+ bias where mamba_conv_bias), dt_bias, A_log and D per head, the
    gated RMSNorm over the inner width, out_proj. 0 without the shape."""
    heads = m.mamba_heads
    if not heads:
        return 0
    inner = heads * required(m, "mamba_head_dim", m.mamba_head_dim)
    conv_dim = inner + 2 * required(m, "mamba_groups", m.mamba_groups) * required(m, "mamba_state", m.mamba_state)
    kernel = required(m, "linear_conv_kernel", m.linear_conv_kernel)
    conv = conv_dim * kernel + (conv_dim if m.mamba_conv_bias else 0)
    return m.hidden * (inner + conv_dim + heads) + conv + 3 * heads + inner + inner * m.hidden


def mlp_params(hidden: int, inter: int, mlp: str) -> int:
    return (3 if mlp == "gated" else 2) * hidden * inter


def count_params(m: ModelSpec) -> ParamCounts:
    embed = m.vocab * m.hidden
    output = 0 if m.tie_embeddings else m.vocab * m.hidden
    attn = attention_params(m)
    norms = 2 * m.hidden
    if m.is_moe:
        expert = mlp_params(m.hidden, required(m, "moe_intermediate", m.moe_intermediate), m.mlp)
        shared = m.shared_experts * expert
        router = m.hidden * m.experts
        moe_layers = m.layers - m.dense_layers
        dense_layer = attn + mlp_params(m.hidden, m.intermediate, m.mlp) + norms
        moe_layer = attn + m.experts * expert + shared + router + norms
        moe_layer_active = attn + m.experts_active * expert + shared + router + norms
        body = m.dense_layers * dense_layer + moe_layers * moe_layer
        body_active = m.dense_layers * dense_layer + moe_layers * moe_layer_active
    else:
        body = body_active = m.layers * (attn + mlp_params(m.hidden, m.intermediate, m.mlp) + norms)
    if m.single_sublayer:
        # Nemotron-H: each layer is one sublayer with its own norm: attention, a Mamba2 mixer or an MLP
        # ('E' MoE sublayers in Nemotron 3: `mlp_only_layers` less `dense_layers` of them hold the routed
        # experts, shared experts and router instead of a dense MLP)
        attn_layers = m.layers - m.linear_layers - m.mlp_only_layers
        mlp = mlp_params(m.hidden, m.intermediate, m.mlp)
        mixers = attn_layers * (attn + m.hidden) + m.linear_layers * (mamba2_params(m) + m.hidden) + m.mlp_only_layers * m.hidden
        if m.is_moe:
            moe_n = m.mlp_only_layers - m.dense_layers
            body = mixers + m.dense_layers * mlp + moe_n * (m.experts * expert + shared + router)
            body_active = mixers + m.dense_layers * mlp + moe_n * (m.experts_active * expert + shared + router)
        else:
            body = body_active = mixers + m.mlp_only_layers * mlp
    elif m.linear_layers and (m.linear_key_heads or m.mamba_heads):
        # those layers hold a DeltaNet / Mamba2 mixer instead of attention
        swap = m.linear_layers * (linear_attention_params(m) + mamba2_params(m) - attn)
        body += swap
        body_active += swap
    # Gemma 4 / 3n: full-attention layers of their own shape, KV-sharing layers without k/v (and, with
    # use_double_wide_mlp, an MLP twice as wide), per-layer embeddings
    extra = attention_shape_delta(m)
    if m.kv_shared_double_mlp:
        extra += m.kv_shared_layers * mlp_params(m.hidden, m.intermediate, m.mlp)
    ple_table, ple_rest = per_layer_embedding_params(m)
    extra += gemma3n_block_params(m)
    body += extra + ple_rest
    body_active += extra + ple_rest
    final_norm = m.hidden
    computed = embed + output + ple_table + body + final_norm
    computed_active = embed + output + body_active + final_norm
    total = m.params or computed
    if m.active_params:
        # published per-token counts include the input embedding, as model cards give them
        # (Mixtral 12.9 B, Qwen3-30B-A3B 3.3 B)
        active_all = m.active_params
    elif m.is_moe:
        # scale the computed active share onto the published total
        active_all = round(total * computed_active / computed)
    else:
        active_all = total - ple_table  # the per-layer table is read by row, not multiplied
    body_total = total - embed - output - ple_table
    per_layer = max(1, round(body_total / m.layers))
    per_layer_active = max(1, round((active_all - embed - output) / m.layers))
    active = active_all - (0 if m.tie_embeddings else embed)
    return ParamCounts(
        total=total,
        active=active,
        embed=embed,
        output=output,
        per_layer=per_layer,
        per_layer_active=per_layer_active,
        computed_total=computed,
        exact=m.params is not None,
        per_layer_embed=ple_table,
    )
