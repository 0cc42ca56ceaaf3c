"""Issue 12's catalog additions: new state types (linear attention with a fixed state per sequence),
aliases for shapes the catalog has, fixed facts. Parameter counts and KV bytes are checked against hand
arithmetic written out from the models' config.json values, as functions of the catalog fields, so the
engine modules can be checked against the same numbers."""

from __future__ import annotations

import json

import pytest

from gpufit.catalog import load_catalog
from gpufit.estimator.params import count_params, linear_attention_params
from gpufit.modelfile.hf_config import build_spec, read_config

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
    assert 3.0e9 <= pc.active - pc.embed - pc.output <= 3.5e9


def kv_bytes_per_sequence(m, tokens: int, dtype_bytes: int = BF16) -> int:
    """Hand model of the cache a hybrid needs for one sequence, from the catalog fields: full-attention
    layers 2 x kv_heads x head_dim x tokens; linear layers their fixed state (tokens do not matter)."""
    full = m.layers - m.linear_layers - m.sliding_layers - m.chunked_layers
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
    p = tmp_path / "config.json"
    p.write_text(json.dumps(QWEN3_NEXT_CONFIG))
    spec, _ = build_spec(p, read_config(p), key="x", name="x", source=str(p), tie=False, attn_bias=False,
                         native_dtype="bf16", params=None, params_source=None)
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
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    spec, _ = build_spec(p, read_config(p), key="x", name="x", source=str(p), tie=False, attn_bias=False,
                         native_dtype="bf16", params=None, params_source=None)
    assert spec.linear_layers == 2


# ---- aliases and fixed facts --------------------------------------------------------------------
@pytest.mark.parametrize("alias,key", [
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b-2507"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-30b-a3b-2507"),
    ("Qwen/Qwen3-235B-A22B-Thinking-2507", "qwen3-235b-a22b-2507"),
    ("Qwen/QwQ-32B", "qwen2.5-32b"),
    ("deepseek-ai/DeepSeek-V3.1", "deepseek-v3"),
    ("mistralai/Mistral-Small-3.2-24B-Instruct-2506", "mistral-small-24b"),
    ("mistralai/Magistral-Small-2509", "mistral-small-24b"),
    ("mistralai/Devstral-Small-2507", "mistral-small-24b"),
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
