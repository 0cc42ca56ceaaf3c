"""Estimator memory arithmetic pinned to bytes computed by hand."""

import pytest

from gpufit.catalog import load_catalog
from gpufit.estimator import memory
from gpufit.estimator.engines import llama_cpp
from gpufit.estimator.params import count_params

CAT = load_catalog()
L3 = CAT.model("llama3-8b")
# Llama-3-8B by hand: vocab 128256 x hidden 4096 = 525,336,576 per embedding matrix (untied);
# the rest of the 8,030,261,248 parameters is the body.
EMBED = 128256 * 4096
BODY = 8_030_261_248 - 2 * EMBED


def test_llama3_8b_parameter_split_by_hand():
    pc = count_params(L3)
    assert EMBED == 525_336_576
    assert (pc.total, pc.embed, pc.output, pc.body) == (8_030_261_248, EMBED, EMBED, BODY)


def test_llama3_8b_bf16_weights_are_two_bytes_per_parameter():
    assert memory.weight_bytes(L3, CAT.quant("bf16")) == 16_060_522_496


def test_llama3_8b_int8_keeps_embeddings_and_head_in_16_bit():
    # 6,979,588,096 body bytes at 1 byte + 2 x 525,336,576 x 2 bytes
    assert BODY == 6_979_588_096
    assert memory.weight_bytes(L3, CAT.quant("int8")) == BODY + 4 * EMBED == 9_080_934_400


def test_gguf_q4_k_m_uses_its_own_embedding_and_head_types():
    q = CAT.quant("q4_k_m")
    expect = BODY * q.bits_per_weight / 8 + EMBED * 4.5 / 8 + EMBED * 6.5625 / 8
    assert memory.weight_bytes(L3, q) == round(expect)
    # and lands within 2 % of the measured 4.58 GiB Meta-Llama-3-8B Q4_K_M file (llama-bench size column)
    assert memory.weight_bytes(L3, q) == pytest.approx(4.58 * 2**30, rel=0.02)


def test_exact_file_bytes_win_over_the_computed_weights():
    assert memory.weight_bytes(L3, CAT.quant("bf16"), exact_total=123) == 123


def test_llama3_8b_kv_cache_gqa_by_hand():
    bf16 = CAT.kv_dtype("bf16")
    # 2 (K,V) x 8 KV heads x 128 head_dim x 2 bytes = 4096 bytes per token per layer
    assert memory.kv_bytes_per_token_layer(L3, bf16) == 4096
    # x 32 layers x 8192 tokens = 1 GiB
    assert memory.kv_cache_bytes(L3, bf16, 8192) == 1_073_741_824
    assert memory.kv_cache_bytes(L3, bf16, 8192, batch=4) == 4 * 1_073_741_824
    assert memory.kv_cache_bytes(L3, CAT.kv_dtype("fp8"), 8192) == 536_870_912


def test_kv_heads_per_rank_never_drop_below_one_under_tensor_parallel():
    bf16 = CAT.kv_dtype("bf16")
    assert memory.kv_bytes_per_token_layer(L3, bf16, tp=2) == 2048  # 4 KV heads per rank
    assert memory.kv_bytes_per_token_layer(L3, bf16, tp=8) == 512  # 1 per rank
    assert memory.kv_bytes_per_token_layer(L3, bf16, tp=16) == 512  # replicated, still 1


def test_sliding_window_layers_cap_their_cache_at_the_window():
    g = CAT.model("gemma2-9b")
    assert (g.layers, g.sliding_layers, g.sliding_window, g.kv_heads, g.head_dim) == (42, 21, 4096, 8, 256)
    bf16 = CAT.kv_dtype("bf16")
    per = 2 * 8 * 256 * 2  # 8192 bytes per token per layer
    assert memory.kv_cache_bytes(g, bf16, 8192) == per * (21 * 8192 + 21 * 4096) == 2_113_929_216
    # below the window both kinds of layer hold the whole context
    assert memory.kv_cache_bytes(g, bf16, 2048) == per * 42 * 2048


def test_mla_caches_one_latent_per_token_and_layer():
    d = CAT.model("deepseek-v3")
    assert d.is_mla
    bf16 = CAT.kv_dtype("bf16")
    per = (d.kv_lora_rank + d.qk_rope_head_dim) * 2
    assert per == (512 + 64) * 2
    assert memory.kv_cache_bytes(d, bf16, 1000) == per * d.layers * 1000
    # replicated on every tensor-parallel rank
    assert memory.kv_bytes_per_token_layer(d, bf16, tp=8) == per


def test_llama_cpp_compute_buffer_matches_the_llama3_8b_load_log():
    # memory.csv: CUDA0 compute buffer 560.00 MiB for Llama 3 8B Q4_K_M at n_ctx 8192 on one GPU
    assert llama_cpp.compute_bytes(L3, 8192, 512, flash_attn=False, multi_gpu=False) == 560 * 2**20
    # and 640 MiB per device when split over several GPUs
    assert llama_cpp.compute_bytes(L3, 8192, 512, flash_attn=False, multi_gpu=True) == pytest.approx(640 * 2**20, rel=1e-6)


def test_moe_active_parameters_are_fewer_than_total():
    m = CAT.model("mixtral-8x7b")
    pc = count_params(m)
    assert pc.active < pc.total
    # 2 of 8 experts: the expert share shrinks by 6/8
    expert = 3 * m.hidden * m.moe_intermediate
    ws = memory.weight_split(m, CAT.quant("bf16"))
    assert ws.per_layer_active < ws.per_layer
    assert (ws.per_layer - ws.per_layer_active) == pytest.approx(6 * expert * 2 * pc.total / pc.computed_total, rel=1e-6)


def test_transformers_counts_only_the_last_positions_logits():
    # 8192-token prompt: one layer's MLP tensors for every token, logits for 1 row (logits_to_keep=1)
    got = memory.transformers_activation_bytes(L3, 8192, 1)
    assert got == 8192 * (2 * 4096 + 3 * 14336) * 2 + 128256 * 4
