"""Issue 12's remaining catalog part: Gemma 4 (per-layer-type attention shapes, KV-sharing layers,
per-layer embeddings) and Nemotron 3 Nano (Nemotron-H with MoE sublayers), plus the tensors the shape
arithmetic of MiniMax-M2 and Qwen3.6-35B-A3B leaves out. Parameter counts and KV bytes are written out by
hand from the models' config.json values (transformers' gemma4 converter for Gemma 4, the Nemotron 3 Nano
config.json), never taken from the code under test."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gpufit.catalog import load_catalog
from gpufit.catalog.loader import validate_tables
from gpufit.cli import cli
from gpufit.errors import CatalogError, ModelFileError
from gpufit.estimator import memory
from gpufit.estimator.engines import get as engine
from gpufit.estimator.engines import llama_cpp, vllm
from gpufit.estimator.fit import estimate
from gpufit.estimator.params import count_params
from gpufit.estimator.types import Device, FitRequest
from config_helpers import spec_from_config

CAT = load_catalog()
CTX = 32768
BF16 = 2


def _spec(tmp_path, cfg, tie=True):
    return spec_from_config(tmp_path, cfg, tie)


def card(key):
    spec = CAT.gpus[key]
    return Device(index="0", name=spec.name, total_bytes=spec.memory_bytes, free_bytes=spec.memory_bytes, spec=spec,
                  bandwidth_gbps=spec.bandwidth_gbps, bf16_tflops=spec.bf16_tflops, nvlink=False)


def req(model, engine_key, context=CTX, kv="bf16", quant="bf16", gpu="h100-sxm", **settings):
    return FitRequest(model=CAT.model(model), quant=CAT.quant(quant), kv_dtype=CAT.kv_dtype(kv), context=context,
                      batch=1, engine=engine_key, devices=(card(gpu),), engine_settings=settings, planning=True)


def _gemma4(text):
    return {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
            "text_config": dict(text, model_type="gemma4_text"), "vision_config": {"hidden_size": 1152},
            "tie_word_embeddings": True, "torch_dtype": "bfloat16"}


# transformers src/transformers/models/gemma4/convert_gemma4_weights.py _VARIANTS, the text_config keys
GEMMA4_31B = _gemma4(dict(
    hidden_size=5376, hidden_size_per_layer_input=0, intermediate_size=21504, num_hidden_layers=60,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 10, num_attention_heads=32,
    num_key_value_heads=16, num_global_key_value_heads=4, head_dim=256, global_head_dim=512,
    attention_k_eq_v=True, num_kv_shared_layers=0, sliding_window=1024, max_position_embeddings=262144,
    vocab_size=262144))
GEMMA4_26B = _gemma4(dict(
    hidden_size=2816, hidden_size_per_layer_input=0, intermediate_size=2112, num_hidden_layers=30,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 5, num_attention_heads=16,
    num_key_value_heads=8, num_global_key_value_heads=2, head_dim=256, global_head_dim=512,
    attention_k_eq_v=True, num_kv_shared_layers=0, enable_moe_block=True, num_experts=128,
    moe_intermediate_size=704, top_k_experts=8, sliding_window=1024, max_position_embeddings=262144,
    vocab_size=262144))
# E2B / E4B leave head_dim, global_head_dim, sliding_window, max_position_embeddings and the vocab sizes
# to the Gemma4TextConfig defaults (256, 512, 512, 131072, 262144)
GEMMA4_E2B = _gemma4(dict(
    hidden_size=1536, hidden_size_per_layer_input=256, intermediate_size=6144, num_hidden_layers=35,
    layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * 7, num_attention_heads=8,
    num_key_value_heads=1, num_global_key_value_heads=None, attention_k_eq_v=False, num_kv_shared_layers=20,
    use_double_wide_mlp=True))
GEMMA4_E4B = _gemma4(dict(
    hidden_size=2560, hidden_size_per_layer_input=256, intermediate_size=10240, num_hidden_layers=42,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 7, num_attention_heads=8,
    num_key_value_heads=2, num_global_key_value_heads=None, global_head_dim=512, attention_k_eq_v=False,
    num_kv_shared_layers=18))


# ---- Gemma 4 31B: full-attention layers of their own shape, K as V ----------------------------------
def test_gemma4_31b_params_by_hand_within_half_a_percent_of_the_card():
    h = 5376
    mlp = 3 * h * 21504
    sliding = h * 32 * 256 + 2 * h * 16 * 256 + 32 * 256 * h  # q, k, v, o
    full = h * 32 * 512 + h * 4 * 512 + 32 * 512 * h  # q, k (also V: attention_k_eq_v), o
    hand = 50 * (sliding + mlp + 2 * h) + 10 * (full + mlp + 2 * h) + 262144 * h + h  # tied head, final norm
    assert count_params(CAT.model("google/gemma-4-31B-it")).computed_total == hand == 30_696_664_320
    # the card's 30.7B language model; the 4 norms per layer (2 counted) and q/k norms add 0.7M more
    assert abs(hand - 30.7e9) / 30.7e9 < 0.005  # -0.01 %


def test_gemma4_31b_kv_at_32k_by_hand():
    m = CAT.model("gemma4-31b")
    full = 10 * 2 * 4 * 512 * CTX * BF16  # 10 full layers: 4 KV heads x 512, K and V both cached
    sliding = 50 * 2 * 16 * 256 * 1024 * BF16  # 50 sliding layers: 16 x 256 over the 1024-token window
    assert (full, sliding) == (2_684_354_560, 838_860_800)
    assert memory.kv_cache_bytes(m, CAT.kv_dtype("bf16"), CTX) == full + sliding
    # one shape for every layer (the sliding layers' 16 x 256) would have put 512 MiB on each full layer
    # instead of 256 MiB
    assert 10 * 2 * 16 * 256 * CTX * BF16 == 2 * full


def test_vllm_unifies_the_gemma4_page_sizes_by_a_larger_block():
    r = req("gemma4-31b", "vllm")
    layout = vllm.kv_layout(r, 1)
    kinds = {k.kind: k for k in layout.kinds}
    # a block of 16 tokens: sliding 2 x 16 x 256 x 2 x 16 = 262,144 B; full 2 x 4 x 512 x 2 x 16 = 131,072 B,
    # so the full layers' pages are doubled to 32 tokens (kv_cache_utils.unify_kv_cache_spec_page_size)
    assert kinds["sliding"].page_bytes == kinds["full"].page_bytes == 262_144
    assert (kinds["full"].block_scale, kinds["sliding"].block_scale) == (2, 1)
    assert (kinds["full"].count, kinds["sliding"].count) == (10, 50)
    # one request of 32k: the full layers 32768 / 32 = 1024 blocks each, the sliding ones
    # ceil((1024 - 1 + 2048) / 16) + 1 = 193 (window - 1 + max_num_batched_tokens, + 1 unaligned)
    batched = 2048
    assert layout.request_bytes(CTX, batched) == (10 * 1024 + 50 * 193) * 262_144


def test_gemma4_31b_config_json_gives_the_catalog_shape(tmp_path):
    spec = _spec(tmp_path, GEMMA4_31B)
    m = CAT.model("gemma4-31b")
    for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "global_head_dim", "global_kv_heads",
              "global_k_eq_v", "intermediate", "vocab", "max_context", "sliding_window", "sliding_layers",
              "kv_shared_layers", "per_layer_embed_dim", "family"):
        assert getattr(spec, f) == getattr(m, f), f
    assert count_params(spec).computed_total == 30_696_664_320


# ---- Gemma 4 26B-A4B: a dense MLP beside the routed experts ----------------------------------------
def test_gemma4_26b_a4b_params_by_hand():
    h = 2816
    sliding = h * 16 * 256 + 2 * h * 8 * 256 + 16 * 256 * h
    full = h * 16 * 512 + h * 2 * 512 + 16 * 512 * h
    moe = 128 * 3 * h * 704 + 3 * h * 2112 + h * 128  # routed experts, the dense MLP, router
    hand = 25 * (sliding + moe + 2 * h) + 5 * (full + moe + 2 * h) + 262144 * h + h
    pc = count_params(CAT.model("google/gemma-4-26B-A4B-it"))
    assert pc.computed_total == hand == 25_232_613_120
    assert abs(hand - 25.2e9) / 25.2e9 < 0.005  # the card's 25.2B: +0.13 %
    # "3.8B active": 8 of 128 experts + the dense MLP + attention + the (tied) head
    assert abs(pc.active - 3.8e9) / 3.8e9 < 0.01


def test_gemma4_26b_config_json_gives_the_catalog_shape(tmp_path):
    spec = _spec(tmp_path, GEMMA4_26B)
    m = CAT.model("gemma4-26b-a4b")
    for f in ("experts", "experts_active", "shared_experts", "moe_intermediate", "intermediate", "global_kv_heads",
              "sliding_layers"):
        assert getattr(spec, f) == getattr(m, f), f
    assert count_params(spec).computed_total == 25_232_613_120
    # without enable_moe_block the experts are not built (Gemma4TextDecoderLayer)
    off = json.loads(json.dumps(GEMMA4_26B))
    off["text_config"]["enable_moe_block"] = False
    assert _spec(tmp_path, off).experts == 0


# ---- Gemma 4 E2B / E4B: KV sharing and per-layer embeddings -----------------------------------------
def _e2b_hand():
    h, ple = 1536, 256
    sliding = h * 8 * 256 + 2 * h * 1 * 256 + 8 * 256 * h
    full = h * 8 * 512 + 2 * h * 1 * 512 + 8 * 512 * h
    mlp = 3 * h * 6144
    ple_layer = 2 * h * ple + h  # per_layer_input_gate, per_layer_projection, post_per_layer_input_norm
    # layers 0-14 compute their KV: 12 sliding, 3 full; layers 15-34 reuse it (no k/v projections) and run
    # the double-wide MLP: 16 sliding, 4 full
    own = 12 * (sliding + mlp) + 3 * (full + mlp)
    shared = 16 * (sliding - 2 * h * 256 + 2 * mlp) + 4 * (full - 2 * h * 512 + 2 * mlp)
    table = 262144 * 35 * ple
    body = own + shared + 35 * (2 * h + ple_layer) + h * 35 * ple + ple  # + per_layer_model_projection, norm
    return table, body + 262144 * h + h + table


def test_gemma4_e2b_params_by_hand():
    table, hand = _e2b_hand()
    pc = count_params(CAT.model("google/gemma-4-E2B-it"))
    assert pc.computed_total == hand == 4_628_446_464
    assert pc.per_layer_embed == table == 2_348_810_240
    # the body the GPU multiplies leaves out both embedding tables: the card's "2.3B effective" holds the
    # vision (~150M) and audio (~300M) encoders besides, which the text shape does not count
    assert pc.body == hand - table - 262144 * 1536 == 1_876_983_040


def test_gemma4_e4b_params_by_hand():
    h, ple = 2560, 256
    sliding = h * 8 * 256 + 2 * h * 2 * 256 + 8 * 256 * h
    full = h * 8 * 512 + 2 * h * 2 * 512 + 8 * 512 * h
    mlp = 3 * h * 10240
    own = 20 * (sliding + mlp) + 4 * (full + mlp)
    shared = 15 * (sliding - 2 * h * 2 * 256 + mlp) + 3 * (full - 2 * h * 2 * 512 + mlp)
    hand = (own + shared + 42 * (2 * h + 2 * h * ple + h) + h * 42 * ple + ple
            + 262144 * h + h + 262144 * 42 * ple)
    assert count_params(CAT.model("gemma4-e4b")).computed_total == hand == 7_462_778_624


def test_gemma4_e2b_kv_at_32k_by_hand_in_every_engine():
    # only layers 0-14 cache: 3 full layers x 1 KV head x 512, 12 sliding x 1 x 256 over 512 tokens;
    # the 20 sharing layers add nothing
    full = 3 * 2 * 1 * 512 * CTX * BF16
    sliding = 12 * 2 * 1 * 256 * 512 * BF16
    assert (full, sliding) == (201_326_592, 6_291_456)
    m = CAT.model("gemma4-e2b")
    assert memory.kv_cache_bytes(m, CAT.kv_dtype("bf16"), CTX) == full + sliding
    assert engine("transformers").kv_bytes(req("gemma4-e2b", "transformers")) == full + sliding
    # llama.cpp: the sliding cache holds pad(512 + 512 ubatch, 256) = 1024 cells, f16
    assert engine("llama.cpp").kv_bytes(req("gemma4-e2b", "llama.cpp", kv="fp16")) == \
        full + 12 * 2 * 1 * 256 * 1024 * 2
    # vLLM: 16-token pages; full 2 x 512 x 2 x 16 = 32,768 B, sliding 16,384 B (its block doubled to 32
    # tokens); a request of 32k: 2048 blocks per full layer, ceil((511 + 2048) / 32) + 1 = 81 per sliding
    layout = vllm.kv_layout(req("gemma4-e2b", "vllm"), 1)
    assert {k.kind: (k.count, k.block_scale) for k in layout.kinds} == {"full": (3, 1), "sliding": (12, 2)}
    assert layout.request_bytes(CTX, 2048) == (3 * 2048 + 12 * 81) * 32_768


def test_gemma4_e_model_kv_sharing_counts_come_from_layer_types(tmp_path):
    e2b, e4b = _spec(tmp_path, GEMMA4_E2B), _spec(tmp_path, GEMMA4_E4B)
    for spec, key in ((e2b, "gemma4-e2b"), (e4b, "gemma4-e4b")):
        m = CAT.model(key)
        for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "global_head_dim", "global_kv_heads",
                  "global_k_eq_v", "intermediate", "vocab", "max_context", "sliding_window", "sliding_layers",
                  "kv_shared_layers", "kv_shared_sliding", "kv_shared_double_mlp", "per_layer_embed_dim",
                  "per_layer_embed_vocab"):
            assert getattr(spec, f) == getattr(m, f), (key, f)
        assert count_params(spec).computed_total == count_params(m).computed_total
    assert (e2b.kv_shared_layers, e2b.kv_shared_sliding, e4b.kv_shared_layers, e4b.kv_shared_sliding) == (20, 16, 18, 15)


def test_llama_cpp_keeps_the_per_layer_embeddings_in_host_memory():
    # src/llama-arch.cpp: PER_LAYER_TOKEN_EMBD is an input-layer tensor, placed like token_embd
    m = CAT.model("gemma4-e2b")
    r = estimate(req("gemma4-e2b", "llama.cpp", kv="fp16", gpu="rtx-4090"))
    table_bytes = 262144 * 35 * 256 * 2
    embed_bytes = 262144 * 1536 * 2
    assert r.placement.cpu_bytes >= table_bytes + embed_bytes
    v = estimate(req("gemma4-e2b", "vllm", gpu="rtx-4090"))
    assert v.devices[0].needed_bytes > r.devices[0].needed_bytes + table_bytes // 2
    assert count_params(m).per_layer_embed * 2 == table_bytes


# ---- Nemotron 3 Nano 30B-A3B: Nemotron-H with MoE sublayers -----------------------------------------
NEMOTRON_3_NANO = {  # nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16 config.json, the keys gpufit reads
    "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "hidden_size": 2688,
    "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME", "num_hidden_layers": 52,
    "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 128, "intermediate_size": 1856,
    "mamba_num_heads": 64, "mamba_head_dim": 64, "n_groups": 8, "ssm_state_size": 128, "conv_kernel": 4,
    "moe_intermediate_size": 1856, "moe_shared_expert_intermediate_size": 3712, "n_routed_experts": 128,
    "n_shared_experts": 1, "num_experts_per_tok": 6, "vocab_size": 131072, "max_position_embeddings": 262144,
    "tie_word_embeddings": False, "use_conv_bias": True, "mlp_hidden_act": "relu2", "torch_dtype": "bfloat16",
    "mamba_ssm_cache_dtype": "float32",
}


def test_nemotron_3_nano_params_by_hand():
    h = 2688
    inner, conv = 64 * 64, 64 * 64 + 2 * 8 * 128
    mamba = h * (inner + conv + 64) + conv * 4 + conv + 3 * 64 + inner + inner * h
    attn = h * 32 * 128 * 2 + 2 * h * 2 * 128
    moe = 128 * 2 * h * 1856 + 2 * h * 3712 + h * 128  # squared-ReLU experts (up, down), shared expert, router
    hand = 23 * (mamba + h) + 6 * (attn + h) + 23 * (moe + h) + 2 * 131072 * h + h
    pc = count_params(CAT.model("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"))
    assert pc.computed_total == hand == 31_577_937_344
    assert abs(hand - 31.6e9) / 31.6e9 < 0.005  # the card's 31.6B: -0.07 %
    active = hand - 23 * 122 * 2 * h * 1856 - 131072 * h  # 6 of 128 experts, no input embedding
    assert pc.active == active == 3_227_751_872  # the card's 3.2B active (3.6B with the embeddings)


def test_nemotron_3_nano_kv_and_state_at_32k_by_hand():
    m = CAT.model("nemotron-3-nano-30b-a3b")
    attn = 6 * 2 * 2 * 128 * CTX * BF16
    state_elems = (4096 + 2 * 8 * 128) * 3 + 64 * 64 * 128
    assert state_elems == m.linear_state_elems == 542_720
    assert memory.kv_cache_bytes(m, CAT.kv_dtype("bf16"), CTX) == attn + 23 * state_elems * BF16 == 226_291_712
    # llama.cpp: the 23 MoE and 23 Mamba layers hold no KV cells; the recurrent states are f32
    got = llama_cpp.llama_cpp_kv_bytes(req("nemotron-3-nano-30b-a3b", "llama.cpp", kv="fp16"))
    assert got == attn + 23 * state_elems * 4
    kinds = {k.kind: k for k in vllm.layer_kinds(req("nemotron-3-nano-30b-a3b", "vllm"), 1)}
    assert {k: v.count for k, v in kinds.items()} == {"full": 6, "linear": 23}
    # vLLM keeps the SSM part in fp32 (config.json mamba_ssm_cache_dtype float32), the conv part in bf16
    assert kinds["linear"].page_bytes == 18_432 * 2 + 64 * 64 * 128 * 4 == 2_134_016


def test_nemotron_h_moe_config_json_is_read_not_refused(tmp_path):
    spec = _spec(tmp_path, NEMOTRON_3_NANO, tie=False)
    m = CAT.model("nemotron-3-nano-30b-a3b")
    for f in ("layers", "linear_layers", "mlp_only_layers", "dense_layers", "single_sublayer", "experts",
              "experts_active", "shared_experts", "moe_intermediate", "linear_state_elems", "mamba_heads",
              "mamba_head_dim", "mamba_state", "mamba_groups", "linear_conv_kernel", "mlp", "max_context"):
        assert getattr(spec, f) == getattr(m, f), f
    assert count_params(spec).computed_total == 31_577_937_344
    assert spec.mamba_ssm_fp32 == m.mamba_ssm_fp32 is True
    assert _spec(tmp_path, dict(NEMOTRON_3_NANO, mamba_ssm_cache_dtype="bfloat16"), tie=False).mamba_ssm_fp32 is False
    # 'E' layers without the experts' keys name the missing key
    bad = {k: v for k, v in NEMOTRON_3_NANO.items() if k != "n_routed_experts"}
    with pytest.raises(ModelFileError) as e:
        _spec(tmp_path, bad, tie=False)
    assert "n_routed_experts" in str(e.value) and e.value.exit_code == 6


# ---- bad input -------------------------------------------------------------------------------------
def test_unsupported_architecture_config_is_exit_6_naming_the_file_and_field(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"architectures": ["RecurrentGemmaForCausalLM"], "model_type": "recurrent_gemma",
                               "hidden_size": 2560}))
    r = CliRunner().invoke(cli, ["plan", str(cfg), "--gpu", "rtx-4090", "--quant", "bf16"])
    assert r.exit_code == 6, r.output
    assert str(cfg) in r.stderr and "model_type" in r.stderr and "recurrent_gemma" in r.stderr
    assert "Traceback" not in r.output


def test_gemma4_config_with_more_shared_layers_than_layers_names_the_key(tmp_path):
    cfg = json.loads(json.dumps(GEMMA4_E2B))
    cfg["text_config"]["num_kv_shared_layers"] = 36
    with pytest.raises(ModelFileError) as e:
        _spec(tmp_path, cfg)
    assert "text_config.num_kv_shared_layers" in str(e.value) and e.value.exit_code == 6


def test_catalog_rejects_kv_sharing_counts_the_model_has_no_layers_for():
    base = {k: getattr(CAT.models["gemma4-e2b"], k) for k in ("layers", "hidden", "heads", "kv_heads", "head_dim",
                                                              "intermediate", "vocab", "max_context", "sliding_window",
                                                              "sliding_layers", "per_layer_embed_dim")}
    table = dict(base, key="bad-gemma", name="bad", family="gemma4", source="test", kv_shared_layers=20,
                 kv_shared_sliding=29)
    with pytest.raises(CatalogError) as e:
        validate_tables("test.toml", {"model": [table]})
    assert "kv_shared_sliding" in str(e.value)
    with pytest.raises(CatalogError):
        validate_tables("test.toml", {"model": [dict(base, key="b", name="b", family="g", source="t",
                                                     kv_shared_double_mlp=True)]})


# ---- the shape misses of MiniMax-M2 and Qwen3.6-35B-A3B, found ---------------------------------------
def test_minimax_m2_tensors_beyond_the_shape_are_too_small_to_reach_230b():
    m = CAT.model("MiniMaxAI/MiniMax-M2")
    shape = count_params(m).computed_total
    # transformers modeling_minimax_m2.py: q_norm over 48 x 128, k_norm over 8 x 128 (qk_norm_type
    # per_layer) and the router's e_score_correction_bias (256) in each of the 62 layers
    extra = 62 * (48 * 128 + 8 * 128 + 256)
    assert shape + extra == 228_689_764_864
    # the card's "230B" is rounded; no exact total is published. The 3 MTP modules of config.json
    # (num_mtp_modules 3, mtp_transformer_layers 1) would be ~3 x 3.7B if they were MoE layers: the 230B
    # cannot hold them, so they are not counted; what is left is the rounding (-0.57 %), reported
    assert 0.005 < (230e9 - shape - extra) / 230e9 < 0.006


def test_qwen3_6_35b_a3b_is_its_text_tower_plus_the_vision_encoder():
    m = CAT.model("Qwen/Qwen3.6-35B-A3B")
    text = count_params(m).computed_total
    assert text == 34_660_523_648
    # left out of the text shape: q_norm / k_norm (256 each) of the 10 full-attention layers and the
    # shared_expert_gate (2048 -> 1) of the 40 MoE blocks (transformers modeling_qwen3_5_moe.py)
    norms_gates = 10 * 2 * 256 + 40 * 2048
    # and the vision encoder (Qwen3_5MoeVisionConfig: depth 27, hidden 1152, intermediate 4304, patch 16,
    # temporal patch 2, 2304 positions, spatial merge 2, out_hidden_size 2048 = the text hidden size):
    # per block 2 LayerNorms, qkv and proj, fc1 and fc2, all with biases
    h, i = 1152, 4304
    block = 4 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h)
    merger = 2 * h + (4 * h) * (4 * h) + 4 * h + 4 * h * 2048 + 2048
    vision = 27 * block + (3 * 2 * 16 * 16 * h + h) + 2304 * h + merger
    assert vision == 446_571_248
    total = text + norms_gates + vision
    assert abs(total - 35e9) / 35e9 < 0.005  # +0.31 % against the card's 35B (was -0.97 % for the text alone)


# ---- Gemma 3n: KV sharing and per-layer embeddings, AltUp and LAuReL ---------------------------------
def _gemma3n(layers, inter, shared):
    return {"architectures": ["Gemma3nForConditionalGeneration"], "model_type": "gemma3n",
            "text_config": {"model_type": "gemma3n_text", "hidden_size": 2048, "num_hidden_layers": layers,
                            "intermediate_size": [inter] * layers, "num_attention_heads": 8, "num_key_value_heads": 2,
                            "head_dim": 256, "num_kv_shared_layers": shared, "vocab_size": 262400,
                            "vocab_size_per_layer_input": 262144, "hidden_size_per_layer_input": 256,
                            "altup_num_inputs": 4, "laurel_rank": 64, "sliding_window": 512,
                            "max_position_embeddings": 32768,
                            "layer_types": ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention"
                                            for i in range(layers)]},
            "vision_config": {"model_type": "gemma3n_vision"}, "audio_config": {"model_type": "gemma3n_audio"}}


@pytest.mark.parametrize("key,layers,inter,shared,total", [
    ("gemma3n-e2b", 30, 8192, 10, 4_435_047_008),
    ("gemma3n-e4b", 35, 16384, 15, 6_835_078_128),
])
def test_gemma3n_params_by_hand(key, layers, inter, shared, total):
    h = 2048
    attn = h * 8 * 256 * 2 + 2 * h * 2 * 256  # q, o; k, v (absent in the sharing layers)
    altup = 4 * 4 + 4 * 16 + h * 4 + 2 * h  # correction / prediction coefs, router, output scale, router norm
    laurel = 2 * h * 64 + h
    ple = 2 * h * 256 + h
    per_layer = 3 * h * inter + 2 * h + altup + laurel + ple
    table = 262144 * layers * 256
    hand = ((layers - shared) * attn + shared * (attn - 2 * h * 2 * 256) + layers * per_layer
            + 2 * 3 * h * h  # altup_projections and altup_unembed_projections, 3 of each
            + h * layers * 256 + 256 + table + 262400 * h + h)
    pc = count_params(CAT.model(key))
    assert pc.computed_total == hand == total
    assert pc.per_layer_embed == table


def test_gemma3n_kv_at_32k_by_hand():
    # both sizes cache in their first 20 layers: 4 full x 2 x 2 x 256 over 32k, 16 sliding over 512
    full = 4 * 2 * 2 * 256 * CTX * BF16
    sliding = 16 * 2 * 2 * 256 * 512 * BF16
    for key in ("gemma3n-e2b", "gemma3n-e4b"):
        m = CAT.model(key)
        assert memory.kv_cache_bytes(m, CAT.kv_dtype("bf16"), CTX) == full + sliding == 285_212_672
        # llama.cpp's sliding cache: pad(512 + 512, 256) = 1024 cells
        assert engine("llama.cpp").kv_bytes(req(key, "llama.cpp", kv="fp16")) == \
            full + 16 * 2 * 2 * 256 * 1024 * 2


def test_gemma3n_config_json_gives_the_catalog_shape(tmp_path):
    for key, cfg in (("gemma3n-e2b", _gemma3n(30, 8192, 10)), ("gemma3n-e4b", _gemma3n(35, 16384, 15))):
        spec = _spec(tmp_path, cfg)
        m = CAT.model(key)
        for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab", "max_context",
                  "sliding_window", "sliding_layers", "kv_shared_layers", "kv_shared_sliding", "per_layer_embed_dim",
                  "per_layer_embed_vocab", "altup_inputs", "laurel_rank", "family"):
            assert getattr(spec, f) == getattr(m, f), (key, f)
    # per-layer widths that differ are not averaged: the key is named
    cfg = _gemma3n(30, 8192, 10)
    cfg["text_config"]["intermediate_size"][3] = 4096
    with pytest.raises(ModelFileError) as e:
        _spec(tmp_path, cfg)
    assert "text_config.intermediate_size" in str(e.value)


# ---- Gemma 4 / 3n GGUF (what Ollama and llama.cpp users have on disk) --------------------------------
def _write_gemma_gguf(path, arch, layers, sliding, kv_per_layer, shared, ple=0, v_on_full=True, altup=0):
    """A small GGUF written with the real gguf writer: H 64, 4 heads, sliding head_dim 16, full 32."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    h, heads, vocab = 64, 4, 128
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(h)
    w.add_feed_forward_length(128)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_per_layer)
    w.add_sliding_window(32)
    w.add_sliding_window_pattern(sliding)
    if arch == "gemma4":
        w.add_key_length(32)
        w.add_key_length_swa(16)
    else:
        w.add_key_length(16)
    if shared is not None:
        w.add_shared_kv_layers(shared)
    if ple:
        w.add_embedding_length_per_layer_input(ple)
    if altup:
        w.add_altup_num_inputs(altup)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_token_list([f"t{i}" for i in range(vocab)])
    f16 = np.float16
    w.add_tensor("token_embd.weight", np.zeros((vocab, h), f16))
    if ple:
        w.add_tensor("per_layer_token_embd.weight", np.zeros((vocab, layers * ple), f16))
    for i in range(layers):
        d = 16 if sliding[i] or arch == "gemma3n" else 32
        p = f"blk.{i}."
        w.add_tensor(p + "attn_q.weight", np.zeros((heads * d, h), f16))
        w.add_tensor(p + "attn_k.weight", np.zeros((kv_per_layer[i] * d, h), f16))
        if sliding[i] or v_on_full:
            w.add_tensor(p + "attn_v.weight", np.zeros((kv_per_layer[i] * d, h), f16))
        w.add_tensor(p + "attn_output.weight", np.zeros((h, heads * d), f16))
        for t in ("ffn_gate", "ffn_up"):
            w.add_tensor(p + t + ".weight", np.zeros((128, h), f16))
        w.add_tensor(p + "ffn_down.weight", np.zeros((h, 128), f16))
        if altup:
            w.add_tensor(p + "laurel_l.weight", np.zeros((8, h), f16))
            w.add_tensor(p + "laurel_r.weight", np.zeros((h, 8), f16))
    w.add_tensor("output_norm.weight", np.zeros(h, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gemma4_gguf_reads_both_attention_shapes_and_k_as_v(tmp_path):
    from gpufit.modelfile import load_model_file

    sliding = [True] * 5 + [False]
    mf = load_model_file(_write_gemma_gguf(tmp_path / "g4.gguf", "gemma4", 6, sliding, [2] * 5 + [1], 0,
                                           v_on_full=False))
    s = mf.spec
    assert (s.family, s.head_dim, s.kv_heads, s.global_head_dim, s.global_kv_heads, s.global_k_eq_v) == \
        ("gemma4", 16, 2, 32, 1, True)
    assert (s.sliding_layers, s.sliding_window, s.kv_shared_layers) == (5, 32, 0)
    assert not any("head_count_kv varies" in n for n in mf.notes)
    # KV of 1000 tokens: 5 sliding x 2 x 2 x 16 over the 32-token window + 1 full x 2 x 1 x 32 x 1000, f16
    bf16 = CAT.kv_dtype("bf16")
    assert memory.kv_cache_bytes(s, bf16, 1000) == 5 * 2 * 2 * 16 * 32 * 2 + 2 * 1 * 32 * 1000 * 2


def test_gemma3n_gguf_reads_kv_sharing_per_layer_embeddings_and_laurel(tmp_path):
    from gpufit.modelfile import load_model_file

    layers = 25
    sliding = [(i + 1) % 5 != 0 for i in range(layers)]
    # no shared_kv_layers key: llama.cpp's n_layer_kv_from_start 20 leaves the last 5 sharing
    mf = load_model_file(_write_gemma_gguf(tmp_path / "g3n.gguf", "gemma3n", layers, sliding, [2] * layers, None,
                                           ple=8, altup=4))
    s = mf.spec
    assert (s.kv_shared_layers, s.kv_shared_sliding) == (5, 4)
    assert (s.per_layer_embed_dim, s.per_layer_embed_vocab, s.altup_inputs, s.laurel_rank) == (8, 128, 4, 8)
    assert count_params(s).per_layer_embed == 128 * 25 * 8
    # 20 caching layers: 4 full over 1000 tokens, 16 sliding over 32, 2 KV heads x 16
    assert memory.kv_cache_bytes(s, CAT.kv_dtype("bf16"), 1000) == (4 * 1000 + 16 * 32) * 2 * 2 * 16 * 2
