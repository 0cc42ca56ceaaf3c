"""llama.cpp as it really places a model: per-layer KV cells, flash attention, cache types, slots,
host-side KV and experts. Every figure is worked out by hand from the model's shape."""

import pytest

from gpufit.catalog import load_catalog
from gpufit.estimator import speed
from gpufit.estimator.engines import llama_cpp
from gpufit.estimator.fit import estimate
from gpufit.estimator.placement import Sizer, choose
from gpufit.estimator.types import Device, FitRequest

CAT = load_catalog()
GIB = 2**30


def req(model, context, quant="q4_k_m", gpu="rtx-4090", batch=1, kv="fp16", engine="llama.cpp", **settings):
    return FitRequest(model=CAT.model(model), quant=CAT.quant(quant), kv_dtype=CAT.kv_dtype(kv), context=context,
                      batch=batch, engine=engine, devices=(Device.from_spec(CAT.gpu(gpu), 0),),
                      engine_settings=settings)


def kv(r):
    return Sizer(r).kv(r.model.layers)


def test_mistral_7b_v01_window_is_not_applied_so_32k_caches_4_gib():
    # 32 layers x 32,768 cells x (K + V: 2 x 8 heads x 128) x 2 bytes
    r = req("mistral-7b", 32768)
    assert kv(r) == 32 * 32768 * 2 * 8 * 128 * 2 == 4 * GIB
    assert any("does not apply Mistral 7B v0.1's sliding window" in n for n in Sizer(r).engine.notes(r))
    # the case: it no longer 'fits, tight' on an 8 GB card at 32k
    res = estimate(req("mistral-7b", 32768, gpu="rtx-4060", engine="ollama"))
    assert res.verdict in ("no_fit", "offload")


def test_gemma3_27b_sliding_layers_keep_window_plus_ubatch_cells():
    # 62 layers, 10 global + 52 sliding (window 1024); 16 KV heads x 128 x 2 (K, V) x 2 bytes = 8 KiB a cell
    cell = 2 * 16 * 128 * 2
    assert kv(req("gemma3-27b", 4096)) == (10 * 4096 + 52 * (1024 + 512)) * cell == 989855744
    assert kv(req("gemma3-27b", 32768)) == (10 * 32768 + 52 * (1024 + 512)) * cell == 3338665984
    # --swa-full: every layer holds the whole context
    assert kv(req("gemma3-27b", 4096, swa_full=True)) == 62 * 4096 * cell
    # four slots share -c 16384: the sliding cache holds 4 windows + one ubatch
    assert kv(req("gemma3-27b", 4096, batch=4)) == (10 * 16384 + 52 * (4 * 1024 + 512)) * cell


def test_gemma3_1b_and_gpt_oss_pad_the_sliding_cache_to_256_cells():
    # gemma3-1b: 4 global + 22 sliding of 512 (+ 512 ubatch), 1 KV head x 256 -> 1 KiB a cell
    assert kv(req("gemma3-1b", 4096)) == (4 * 4096 + 22 * 1024) * 1024
    # gpt-oss-20b: 12 full + 12 sliding of 128 + 512 = 640 -> padded to 768; 8 x 64 x 2 x 2 = 2 KiB a cell
    assert kv(req("gpt-oss-20b", 4096, quant="mxfp4")) == (12 * 4096 + 12 * 768) * 2048


def test_cache_type_k_and_v_are_counted_apart():
    # Llama 3 8B, 8192 cells x 32 layers x 1024 elements for K and for V: q8_0 8.5 bits, q4_0 4.5 bits
    r = req("llama3-8b", 8192, cache_type_k="q8_0", cache_type_v="q4_0")
    assert kv(r) == 32 * 8192 * 1024 * (8.5 + 4.5) / 8


def test_mla_cache_as_llama_cpp_stores_it():
    # DeepSeek-V2-Lite: 27 layers, K = kv_lora_rank 512 + rope 64, V = 512, one head, f16
    assert kv(req("deepseek-v2-lite", 4096)) == 27 * 4096 * (576 + 512) * 2


def test_no_kv_offload_keeps_the_cache_in_host_ram():
    r = req("llama3-8b", 8192, no_kv_offload=True)
    s = Sizer(r)
    assert s.kv(32) == 0
    assert s.host_embed == s.ws.embed + 32 * 8192 * 2048 * 2


def test_flash_attention_and_ubatch_size_the_compute_buffer():
    on = Sizer(req("llama3-8b", 8192)).activation()
    off = Sizer(req("llama3-8b", 8192, flash_attn=False)).activation()
    assert on == 512 * 4 * (128256 + 4096)  # logits of one ubatch
    assert off == 512 * 4 * (8192 * 32 + 8192 + 4 * 4096) == 560 * 2**20  # the f32 scores
    assert Sizer(req("llama3-8b", 8192, n_ubatch=2048)).activation() == 4 * on


def test_qwen3_30b_a3b_with_every_expert_on_the_host_fits_a_12_gb_card():
    """--n-cpu-moe 48: the routed experts of all 48 layers stay in host RAM; the GPU keeps attention,
    router, norms and the head. Each layer's 128 experts hold 3 x 2,048 x 768 weights at Q4_K_M."""
    bits = CAT.quant("q4_k_m").bits_per_weight
    experts = 48 * 128 * 3 * 2048 * 768 * bits / 8
    full = req("qwen3-30b-a3b", 4096, gpu="rtx-3060")
    off = req("qwen3-30b-a3b", 4096, gpu="rtx-3060", cpu_moe_layers=tuple(range(48)))
    sf, so = Sizer(full), Sizer(off)
    assert so.weights(48) == pytest.approx(sf.weights(48) - experts, abs=2)
    assert so.host_embed == pytest.approx(sf.host_embed + experts, abs=2)
    assert estimate(full).verdict not in ("fits", "tight")
    res = estimate(off, alternatives=False)
    assert res.verdict in ("fits", "tight"), res.warnings
    # a decoded token reads its 8 active experts per layer from host RAM
    _, _, basis = speed.estimate_speed(so, choose(off), 1)
    assert basis["host_expert_bytes_per_token"] == int(48 * 8 * 3 * 2048 * 768 * bits / 8)


def test_a_tied_head_is_duplicated_onto_the_gpu():
    s = Sizer(req("llama3.2-1b", 4096, quant="q8_0"))
    assert s.ws.output == s.ws.embed > 0
    assert s.weights(16) == pytest.approx(s.ws.output + s.ws.per_layer * 16, abs=1)
