"""Issue 12's catalog additions: new state types (linear attention with a fixed state per sequence),
aliases for shapes the catalog has, fixed facts. Parameter counts and KV bytes are checked against hand
arithmetic written out from the models' config.json values, as functions of the catalog fields, so the
engine modules can be checked against the same numbers."""

from __future__ import annotations

import pytest

from gpufit.catalog import load_catalog
from gpufit.estimator.params import count_params, linear_attention_params
from config_helpers import spec_from_config

BF16 = 2
CTX = 32768


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


# ---- Qwen3-Next-80B-A3B -------------------------------------------------------------------------
QWEN3_NEXT_CONFIG = {  # Qwen/Qwen3-Next-80B-A3B-Instruct config.json, the keys gpufit reads
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": 2048,
    "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
    "intermediate_size": 5120, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
    "num_experts": 512, "num_experts_per_tok": 10, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "vocab_size": 151936, "max_position_embeddings": 262144, "full_attention_interval": 4,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
    "linear_num_key_heads": 16, "linear_num_value_heads": 32, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def test_qwen3_next_deltanet_layer_params_by_hand(cat):
    m = cat.model("qwen3-next-80b-a3b")
    # in_proj_qkvz 2048 x (2*2048 + 2*4096) + in_proj_ba 2048 x 64 + conv1d 8192 x 4 + dt_bias/A_log 2 x 32
    # + gated norm 128 + out_proj 4096 x 2048
    hand = 2048 * 12288 + 2048 * 64 + 8192 * 4 + 64 + 128 + 4096 * 2048
    assert hand == 33_718_464 == linear_attention_params(m)


def test_qwen3_next_params_within_half_a_percent_of_the_published_80b(cat):
    m = cat.model("qwen3-next-80b-a3b")
    moe = 512 * 3 * 2048 * 512 + 3 * 2048 * 512 + 2048 * 512  # routed experts + shared expert + router
    full_attn = 2048 * 16 * 256 * 2 + 2 * 2048 * 2 * 256 + 16 * 256 * 2048  # gated q, k, v, o
    layers = 36 * (33_718_464 + moe + 2 * 2048) + 12 * (full_attn + moe + 2 * 2048)
    hand = layers + 2 * 151936 * 2048 + 2048  # embeddings, untied head, final norm
    assert count_params(m).computed_total == hand == 79_674_286_848
    published = 80e9  # model card: 80B total, 3B activated
    assert abs(hand - published) / published < 0.005  # -0.41 %
    pc = count_params(m)
    # "3B activated": 10 of 512 experts + the shared one, outside embeddings and head, counts 3.25B
    assert 3.0e9 <= pc.body_active <= 3.5e9


def kv_bytes_per_sequence(m, tokens: int, dtype_bytes: int = BF16) -> int:
    """Hand model of the cache a hybrid needs for one sequence, from the catalog fields: full-attention
    layers 2 x kv_heads x head_dim x tokens; linear layers their fixed state (tokens do not matter);
    MLP-only layers (Nemotron-H '-') nothing."""
    full = m.layers - m.linear_layers - m.sliding_layers - m.chunked_layers - m.mlp_only_layers
    return full * 2 * m.kv_heads * m.head_dim * tokens * dtype_bytes + \
        m.linear_layers * m.linear_state_elems * dtype_bytes


def test_qwen3_next_kv_at_32k_by_hand(cat):
    m = cat.model("qwen3-next-80b-a3b")
    # 12 full-attention layers x 2 (K, V) x 2 KV heads x 256 x 32768 tokens x 2 bytes
    full = 12 * 2 * 2 * 256 * 32768 * 2
    assert full == 805_306_368
    # 36 DeltaNet layers x (conv (2*16*128 + 32*128) * 3 + recurrent 32*128*128) elements x 2 bytes
    state = 36 * ((2 * 16 * 128 + 32 * 128) * 3 + 32 * 128 * 128) * 2
    assert state == 36 * 548_864 * 2 == 39_518_208
    assert kv_bytes_per_sequence(m, CTX) == full + state == 844_824_576
    # a plain 48-layer full-attention model of the same heads would need 4x the attention part
    assert 48 * 2 * 2 * 256 * CTX * 2 == 4 * full


def test_qwen3_next_config_json_gives_the_catalog_shape(tmp_path, cat):
    spec = spec_from_config(tmp_path, QWEN3_NEXT_CONFIG)
    m = cat.model("Qwen/Qwen3-Next-80B-A3B-Instruct")
    for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "vocab", "max_context", "experts",
              "experts_active", "shared_experts", "moe_intermediate", "linear_layers", "linear_state_elems",
              "linear_key_heads", "linear_value_heads", "linear_key_head_dim", "linear_value_head_dim",
              "linear_conv_kernel", "attn_output_gate"):
        assert getattr(spec, f) == getattr(m, f), f
    assert count_params(spec).computed_total == 79_674_286_848


def test_layer_types_list_wins_over_the_interval(tmp_path):
    cfg = dict(QWEN3_NEXT_CONFIG, num_hidden_layers=4,
               layer_types=["linear_attention", "full_attention", "full_attention", "linear_attention"])
    assert spec_from_config(tmp_path, cfg).linear_layers == 2


# ---- aliases and fixed facts --------------------------------------------------------------------
@pytest.mark.parametrize("alias,key", [
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b-2507"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-30b-a3b-2507"),
    ("Qwen/Qwen3-235B-A22B-Thinking-2507", "qwen3-235b-a22b-2507"),
    ("Qwen/QwQ-32B", "qwen2.5-32b"),
    ("deepseek-ai/DeepSeek-V3.1", "deepseek-v3"),
    ("mistralai/Mistral-Small-3.2-24B-Instruct-2506", "mistral-small-3.2-24b"),
    ("mistralai/Magistral-Small-2509", "mistral-small-3.2-24b"),
    ("mistralai/Devstral-Small-2507", "mistral-small-3.2-24b"),
    ("microsoft/Phi-4-reasoning", "phi4"),
    ("deepseek-r1:7b", "qwen2.5-7b"),
    ("deepseek-r1:8b", "qwen3-8b"),
    ("deepseek-r1:14b", "qwen2.5-14b"),
    ("deepseek-r1:70b", "llama3.3-70b"),
])
def test_new_aliases(cat, alias, key):
    assert cat.model(alias).key == key


def test_2507_variants_have_the_262k_context_and_the_original_shape(cat):
    for new, old in (("qwen3-30b-a3b-2507", "qwen3-30b-a3b"), ("qwen3-235b-a22b-2507", "qwen3-235b-a22b")):
        a, b = cat.models[new], cat.models[old]
        assert a.max_context == 262144
        assert count_params(a).computed_total == count_params(b).computed_total


def test_mistral_nemo_max_context_is_the_instruct_configs(cat):
    assert cat.model("mistral-nemo-12b").max_context == 1024000


def test_gemma3_entries_say_the_gguf_carries_the_vision_tower(cat):
    for k in ("gemma3-4b", "gemma3-12b", "gemma3-27b"):
        assert "vision tower" in cat.models[k].notes


# ---- Llama 4 (chunked local attention) ----------------------------------------------------------
LLAMA4_SCOUT_TEXT = {  # meta-llama/Llama-4-Scout-17B-16E-Instruct config.json text_config
    "model_type": "llama4_text", "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40,
    "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
    "num_local_experts": 16, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1,
    "attention_chunk_size": 8192, "no_rope_layers": [1, 1, 1, 0] * 12, "vocab_size": 202048,
    "max_position_embeddings": 10485760, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def _spec(tmp_path, cfg):
    return spec_from_config(tmp_path, cfg)


def test_llama4_scout_text_shape_plus_vision_encoder_is_the_published_total(cat):
    m = cat.model("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    attn = 5120 * 40 * 128 * 2 + 2 * 5120 * 8 * 128
    moe = 16 * 3 * 5120 * 8192 + 3 * 5120 * 8192 + 5120 * 16  # routed + shared expert + router
    text = 48 * (attn + moe + 2 * 5120) + 2 * 202048 * 5120 + 5120
    assert count_params(m).computed_total == text == 107_769_861_120
    # vision: 34 ViT layers of 1408 (q k v o + fc1/fc2 of 5632, with biases, 2 LayerNorms), patch
    # embedding 3*14*14 -> 1408, class token, 577 positions, pre/post LayerNorm, pixel-shuffle adapter
    # 5632 -> 4096 -> 4096, projector 4096 -> 5120
    layer = 4 * (1408 * 1408 + 1408) + (1408 * 5632 + 5632) + (5632 * 1408 + 1408) + 4 * 1408
    vision = 34 * layer + 3 * 14 * 14 * 1408 + 1408 + 577 * 1408 + 4 * 1408 + 5632 * 4096 + 4096 * 4096 + 4096 * 5120
    assert vision == 871_932_416
    assert text + vision == m.params == 108_641_793_536  # HF safetensors.total: exact


def test_llama4_maverick_within_half_a_percent_of_the_published_400b(cat):
    m = cat.model("llama4-maverick")
    attn = 5120 * 40 * 128 * 2 + 2 * 5120 * 8 * 128
    moe = 128 * 3 * 5120 * 8192 + 3 * 5120 * 8192 + 5120 * 128
    dense = 3 * 5120 * 16384
    text = 24 * (attn + moe + 2 * 5120) + 24 * (attn + dense + 2 * 5120) + 2 * 202048 * 5120 + 5120
    assert count_params(m).computed_total == text == 400_711_848_960
    assert abs(text - 400e9) / 400e9 < 0.005  # +0.18 %


def test_llama4_scout_kv_at_32k_by_hand(cat):
    m = cat.model("llama4-scout")
    glob = 12 * 2 * 8 * 128 * 32768 * 2  # 12 NoPE layers, full context
    chunk = 36 * 2 * 8 * 128 * 8192 * 2  # 36 chunked layers keep one 8192-token chunk
    assert (glob, chunk) == (1_610_612_736, 1_207_959_552)
    full = m.layers - m.chunked_layers
    by_fields = (full * 2 * m.kv_heads * m.head_dim * CTX * BF16
                 + m.chunked_layers * 2 * m.kv_heads * m.head_dim * min(CTX, m.attention_chunk) * BF16)
    assert by_fields == glob + chunk == 2_818_572_288


def test_llama4_config_json_gives_the_catalog_shape(tmp_path, cat):
    full = {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4",
            "text_config": LLAMA4_SCOUT_TEXT, "vision_config": {"hidden_size": 1408}}
    spec = _spec(tmp_path, full)
    m = cat.model("llama4-scout")
    for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab", "max_context",
              "experts", "experts_active", "shared_experts", "moe_intermediate", "dense_layers",
              "attention_chunk", "chunked_layers"):
        assert getattr(spec, f) == getattr(m, f), f
    maverick = dict(LLAMA4_SCOUT_TEXT, num_local_experts=128, interleave_moe_layer_step=2, no_rope_layers=[])
    spec = _spec(tmp_path, {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4",
                            "text_config": maverick})
    assert (spec.dense_layers, spec.chunked_layers) == (24, 36)  # no_rope_layers [] takes the default
    assert count_params(spec).computed_total == 400_711_848_960


# ---- Granite 4.0-H (Mamba2 hybrid) --------------------------------------------------------------
GRANITE_H_SMALL = {  # ibm-granite/granite-4.0-h-small config.json, the keys gpufit reads
    "architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid", "hidden_size": 4096,
    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 768,
    "shared_intermediate_size": 1536, "num_local_experts": 72, "num_experts_per_tok": 10,
    "layer_types": (["mamba"] * 9 + ["attention"]) * 4, "mamba_n_heads": 128, "mamba_d_head": 64,
    "mamba_d_state": 128, "mamba_n_groups": 1, "mamba_d_conv": 4, "mamba_conv_bias": True,
    "vocab_size": 100352, "max_position_embeddings": 131072, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}


def test_granite_4_h_small_counts_exactly_to_the_published_figure(cat):
    m = cat.model("ibm-granite/granite-4.0-h-small")
    # Mamba2 mixer: in_proj 4096 -> z|x|B|C|dt = 8192 + (8192 + 2*128) + 128, conv1d (8448 x 4 + bias),
    # dt_bias/A_log/D 3 x 128, gated norm 8192, out_proj 8192 x 4096
    mamba = 4096 * (8192 + 8448 + 128) + 8448 * 4 + 8448 + 3 * 128 + 8192 + 8192 * 4096
    assert mamba == 102_286_976
    attn = 4096 * 4096 * 2 + 2 * 4096 * 8 * 128
    moe = 72 * 3 * 4096 * 768 + 3 * 4096 * 1536 + 4096 * 72  # routed + shared MLP + router
    hand = 36 * (mamba + moe + 2 * 4096) + 4 * (attn + moe + 2 * 4096) + 100352 * 4096 + 4096  # tied head
    assert count_params(m).computed_total == hand == m.params == 32_207_337_984


def test_granite_4_h_small_kv_and_state_at_32k_by_hand(cat):
    m = cat.model("granite-4.0-h-small")
    attn = 4 * 2 * 8 * 128 * 32768 * 2
    state = 36 * ((8192 + 2 * 1 * 128) * (4 - 1) + 128 * 64 * 128) * 2
    assert (attn, state) == (536_870_912, 77_322_240)
    assert kv_bytes_per_sequence(m, CTX) == attn + state == 614_193_152


def test_granite_hybrid_config_json_gives_the_catalog_shape(tmp_path, cat):
    spec = _spec(tmp_path, GRANITE_H_SMALL)
    m = cat.model("granite-4.0-h-small")
    for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "vocab", "experts", "experts_active",
              "shared_experts", "moe_intermediate", "linear_layers", "linear_state_elems", "mamba_heads",
              "mamba_head_dim", "mamba_state", "mamba_groups", "linear_conv_kernel"):
        assert getattr(spec, f) == getattr(m, f), f
    # a layer_types list of the wrong length names the key
    from gpufit.errors import ModelFileError

    with pytest.raises(ModelFileError) as e:
        _spec(tmp_path, dict(GRANITE_H_SMALL, layer_types=["mamba"] * 39))
    assert "layer_types" in str(e.value)


# ---- GLM-4.5 / Air, Kimi K2, MiniMax-M2: standard layer kinds, counts against published totals -----
def _glm_attn(h):
    return h * 96 * 128 * 2 + 2 * h * 8 * 128 + (96 + 2 * 8) * 128  # q, o, k, v, q/k/v bias


def test_glm_4_5_shape_plus_mtp_layer_is_the_hf_total(cat):
    m = cat.model("zai-org/GLM-4.5")
    moe = 160 * 3 * 5120 * 1536 + 3 * 5120 * 1536 + 5120 * 160
    dense_layer = _glm_attn(5120) + 3 * 5120 * 12288 + 2 * 5120
    moe_layer = _glm_attn(5120) + moe + 2 * 5120
    shape = 3 * dense_layer + 89 * moe_layer + 2 * 151552 * 5120 + 5120
    assert count_params(m).computed_total == shape == 352_797_791_232
    mtp = moe_layer + 2 * 5120 * 5120 + 3 * 5120 + 2 * 151552 * 5120  # eh_proj, norms, embed + head copy
    assert shape + mtp + 90 * 160 + 93 * 2 * 128 == 358_337_791_296  # HF safetensors.total, exact


def test_glm_4_5_air_shape_plus_mtp_layer_is_the_hf_total(cat):
    m = cat.model("zai-org/GLM-4.5-Air")
    moe = 128 * 3 * 4096 * 1408 + 3 * 4096 * 1408 + 4096 * 128
    dense_layer = _glm_attn(4096) + 3 * 4096 * 10944 + 2 * 4096
    moe_layer = _glm_attn(4096) + moe + 2 * 4096
    shape = dense_layer + 45 * moe_layer + 2 * 151552 * 4096 + 4096
    assert count_params(m).computed_total == shape == 106_852_245_504
    mtp = moe_layer + 2 * 4096 * 4096 + 3 * 4096 + 2 * 151552 * 4096
    assert shape + mtp + 46 * 128 == 110_468_824_832  # HF safetensors.total, exact


def test_glm_4_6_and_4_7_keep_the_shape_with_a_202k_context(cat):
    a, b = cat.model("zai-org/GLM-4.7"), cat.model("glm-4.5")
    assert a.key == "glm-4.6" and a.max_context == 202752
    assert count_params(a).computed_total == count_params(b).computed_total


def test_kimi_k2_within_half_a_percent_of_the_hf_total(cat):
    m = cat.model("moonshotai/Kimi-K2-Instruct")
    q = 7168 * 1536 + 1536 + 1536 * 64 * (128 + 64)
    kv = 7168 * (512 + 64) + 512 + 512 * 64 * (128 + 128)
    attn = q + kv + 64 * 128 * 7168
    moe = 384 * 3 * 7168 * 2048 + 3 * 7168 * 2048 + 7168 * 384
    shape = (attn + 3 * 7168 * 18432 + 2 * 7168) + 60 * (attn + moe + 2 * 7168) + 2 * 163840 * 7168 + 7168
    assert count_params(m).computed_total == shape == 1_026_408_209_408
    assert abs(shape - m.params) / m.params < 0.005  # 26,456 short of 1,026,408,235,864


def test_minimax_m2_against_the_rounded_230b(cat):
    m = cat.model("MiniMaxAI/MiniMax-M2")
    layer = 3072 * 48 * 128 * 2 + 2 * 3072 * 8 * 128 + 256 * 3 * 3072 * 1536 + 3072 * 256 + 2 * 3072
    shape = 62 * layer + 2 * 200064 * 3072 + 3072
    assert count_params(m).computed_total == shape == 228_689_304_576
    # no exact count is published; the card's "230B" is rounded: 0.57 % above the shape (reported, not hidden)
    assert abs(shape - 230e9) / 230e9 < 0.006


# ---- DeepSeek-V3.2: sparse attention with the lightning indexer ----------------------------------
def test_deepseek_v3_2_is_v3_plus_61_indexers(cat):
    v32, v3 = cat.model("deepseek-ai/DeepSeek-V3.2-Exp"), cat.model("deepseek-v3")
    indexer = 1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64  # wq_b, wk, k_norm, weights_proj
    assert indexer == 13_959_424
    assert count_params(v32).computed_total - count_params(v3).computed_total == 61 * indexer
    # DeepSeek's 671B main-model figure, plus the indexers: +0.13 %
    assert abs(count_params(v32).computed_total - 671e9) / 671e9 < 0.005


def test_deepseek_v3_2_cache_at_32k_by_hand(cat):
    m = cat.model("deepseek-v3.2")
    mla = 61 * (512 + 64) * 32768 * 2  # latent + rope key, bf16
    indexer = 61 * (128 + 128 // 128 * 4) * 32768  # fp8 key + one fp32 scale per 128 elements
    assert (mla, indexer) == (2_302_672_896, 263_847_936)
    by_fields = (m.layers * (m.kv_lora_rank + m.qk_rope_head_dim) * CTX * BF16
                 + m.layers * (m.indexer_head_dim + m.indexer_head_dim // 128 * 4) * CTX)
    assert by_fields == mla + indexer == 2_566_520_832


def test_deepseek_v32_config_json_reads_the_indexer(tmp_path):
    cfg = {"architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32", "hidden_size": 7168,
           "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
           "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256,
           "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3, "kv_lora_rank": 512,
           "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
           "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048, "vocab_size": 129280,
           "max_position_embeddings": 163840}
    spec = _spec(tmp_path, cfg)
    assert (spec.indexer_heads, spec.indexer_head_dim, spec.indexer_topk) == (64, 128, 2048)
    assert count_params(spec).computed_total == 671_877_929_216


# ---- dense newcomers: counts against the published (HF) totals ----------------------------------
@pytest.mark.parametrize("key,published,why", [
    ("qwen3-vl-8b", 8_190_735_360, "Qwen3-8B HF total; the shape leaves out 36 x 256 q/k-norm weights"),
    ("qwen3-vl-4b", 4_022_468_096, "Qwen3-4B-Instruct-2507 HF total; 36 x 256 q/k-norm weights left out"),
    ("smollm3-3b", 3_075_098_624, "HF total, exact"),
    ("olmo2-7b", 7_298_617_344, "HF total; 32 x 8192 q/k-norm weights left out"),
    ("olmo2-13b", 13_716_198_400, "HF total; 40 x 10240 q/k-norm weights left out"),
    ("granite-3.3-8b", 8.2e9, "Ollama's rounded 8.2B (no exact count published)"),
])
def test_new_dense_models_within_half_a_percent(cat, key, published, why):
    computed = count_params(cat.model(key)).computed_total
    assert abs(computed - published) / published < 0.005, why


def test_smollm3_counts_by_hand(cat):
    layer = 2048 * 2048 * 2 + 2 * 2048 * 512 + 3 * 2048 * 11008 + 2 * 2048
    assert count_params(cat.model("smollm3")).computed_total == 36 * layer + 128256 * 2048 + 2048 == 3_075_098_624


def test_qwen3_vl_text_config_reads_like_qwen3(tmp_path, cat):
    cfg = {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
           "text_config": {"model_type": "qwen3_vl_text", "hidden_size": 4096, "intermediate_size": 12288,
                           "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                           "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 262144},
           "tie_word_embeddings": False, "vision_config": {"depth": 27}}
    spec = _spec(tmp_path, cfg)
    m = cat.model("Qwen/Qwen3-VL-8B-Instruct")
    assert count_params(spec).computed_total == count_params(m).computed_total
    assert spec.max_context == m.max_context == 262144


def test_qwen3_6_35b_a3b_text_tower_by_hand(cat):
    m = cat.model("Qwen/Qwen3.6-35B-A3B")
    moe = 256 * 3 * 2048 * 512 + 3 * 2048 * 512 + 2048 * 256
    full_attn = 2048 * 16 * 256 * 2 + 2 * 2048 * 2 * 256 + 16 * 256 * 2048
    shape = 30 * (33_718_464 + moe + 2 * 2048) + 10 * (full_attn + moe + 2 * 2048) + 2 * 248320 * 2048 + 2048
    assert count_params(m).computed_total == shape == 34_660_523_648
    # the published "35B" includes the vision encoder this text shape leaves out (reported, not hidden)
    assert 0.005 < (35e9 - shape) / 35e9 < 0.015
    assert kv_bytes_per_sequence(m, CTX) == 10 * 2 * 2 * 256 * 32768 * 2 + 30 * 548_864 * 2


# ---- Nemotron-H: one sublayer per layer -----------------------------------------------------------
NEMOTRON_NANO_9B_V2 = {
    "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "num_hidden_layers": 56,
    "hybrid_override_pattern": "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
    "hidden_size": 4480, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 15680, "mamba_num_heads": 128, "mamba_head_dim": 80, "n_groups": 8,
    "ssm_state_size": 128, "conv_kernel": 4, "vocab_size": 131072, "max_position_embeddings": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def test_nemotron_nano_9b_v2_counts_exactly_to_the_hf_total(cat):
    m = cat.model("nvidia/NVIDIA-Nemotron-Nano-9B-v2")
    mamba = 4480 * (10240 + 12288 + 128) + 12288 * 4 + 12288 + 3 * 128 + 10240 + 10240 * 4480
    attn = 4480 * 5120 * 2 + 2 * 4480 * 1024
    mlp = 2 * 4480 * 15680  # squared ReLU: up + down
    hand = 27 * (mamba + 4480) + 4 * (attn + 4480) + 25 * (mlp + 4480) + 2 * 131072 * 4480 + 4480
    assert count_params(m).computed_total == hand == m.params == 8_888_227_328


def test_nemotron_nano_9b_v2_kv_and_state_at_32k_by_hand(cat):
    m = cat.model("nemotron-nano-9b-v2")
    attn = 4 * 2 * 8 * 128 * 32768 * 2
    state = 27 * ((10240 + 2 * 8 * 128) * 3 + 128 * 80 * 128) * 2
    assert (attn, state) == (536_870_912, 72_769_536)
    assert kv_bytes_per_sequence(m, CTX) == attn + state == 609_640_448


def test_nemotron_h_config_json_gives_the_catalog_shape(tmp_path, cat):
    spec = _spec(tmp_path, NEMOTRON_NANO_9B_V2)
    m = cat.model("nemotron-nano-9b-v2")
    for f in ("layers", "linear_layers", "mlp_only_layers", "single_sublayer", "linear_state_elems", "mamba_heads",
              "mamba_head_dim", "mamba_state", "mamba_groups", "linear_conv_kernel", "mlp"):
        assert getattr(spec, f) == getattr(m, f), f
    assert count_params(spec).computed_total == 8_888_227_328
    from gpufit.errors import ModelFileError

    with pytest.raises(ModelFileError) as e:
        _spec(tmp_path, dict(NEMOTRON_NANO_9B_V2, hybrid_override_pattern="M*E-" * 14))
    assert "hybrid_override_pattern" in str(e.value) and "MoE" in str(e.value)


def test_mistral_small_3_2_multimodal_config_reads_its_text_model(tmp_path, cat):
    cfg = {"architectures": ["Mistral3ForConditionalGeneration"], "model_type": "mistral3",
           "text_config": {"model_type": "mistral", "hidden_size": 5120, "num_hidden_layers": 40,
                           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                           "intermediate_size": 32768, "vocab_size": 131072, "max_position_embeddings": 131072,
                           "sliding_window": None},
           "vision_config": {"hidden_size": 1024}}
    spec = _spec(tmp_path, cfg)
    m = cat.model("mistralai/Mistral-Small-3.2-24B-Instruct-2506")
    assert count_params(spec).computed_total == count_params(m).computed_total
    assert spec.sliding_window is None and spec.max_context == 131072


def test_mistral_small_3_2_has_the_2501_shape_and_a_128k_window(cat):
    a, b = cat.model("mistral-small-3.2"), cat.model("mistral-small-24b")
    assert count_params(a).computed_total == count_params(b).computed_total
    assert (a.max_context, b.max_context) == (131072, 32768)
    # the HF total of 3.2 holds the vision encoder the text shape leaves out: 1.9 % over, said in the notes
    assert 0.018 < (24_011_361_280 - count_params(a).computed_total) / 24_011_361_280 < 0.019
