"""Speed arithmetic pinned to hand-computed figures (Llama 3 8B: 8,030,261,248 parameters)."""

import dataclasses

import pytest

from gpufit.catalog import load_catalog
from gpufit.catalog.types import GpuSpec
from gpufit.estimator import engines, speed
from gpufit.estimator.engines import llama_cpp, profiles
from gpufit.estimator.placement import Sizer, choose
from gpufit.estimator.types import Device, FitRequest

CAT = load_catalog()
GIB = 2**30
FIT = llama_cpp.PREFILL_FIT
# the test card is GDDR6X: prefill's memory-bound passes (weights, scores) reach the bandwidth share
# llama.cpp's decode reaches on GDDR memory, 936 GB/s x this
GDDR = profiles.DECODE_EFFICIENCY_BY_MEMORY["llama.cpp"]["GDDR"]
# Llama 3 8B without embeddings and head: 8,030,261,248 - 2 x 128,256 x 4,096
BODY = 8030261248 - 2 * 128256 * 4096


def card(tdp=None, vendor="geforce", tf=71.0, bw=936.0, memory="GDDR6X"):
    return GpuSpec(key="t", name="T", vendor_class=vendor, architecture="Ampere", compute_capability="8.6",
                   memory_bytes=24 * GIB, memory_type=memory, bandwidth_gbps=bw, source="test",
                   fp16_tflops=tf, tdp_w=tdp)


def sized(model="llama3-8b", quant="fp16", spec=None, n=1, context=8192, engine="llama.cpp"):
    spec = spec or card()
    devs = tuple(Device.from_spec(spec, i) for i in range(n))
    req = FitRequest(model=CAT.model(model), quant=CAT.quant(quant), kv_dtype=CAT.kv_dtype("fp16"),
                     context=context, batch=1, engine=engine, devices=devs)
    return Sizer(req), choose(req)


def test_prefill_of_one_ubatch_is_gemm_weights_and_attention():
    s, plan = sized()
    rate, basis = speed.prefill_rate(s, plan, 512, flash_attn=True)
    assert basis["flops_per_token"] == 2 * BODY
    gemm = 71e12 * 2 * FIT["gemm_efficiency"]  # GeForce: FP16 accumulate runs at twice the datasheet figure
    # 512 tokens attend 512 cells on average ((0 + 512) / 2 + 256): 4 x 32 heads x 128 FLOPs per cell
    attention = 512 * 512 * 32 * 4 * 32 * 128
    seconds = (512 * 2 * BODY + attention) / gemm + 2 * BODY / (936e9 * GDDR)
    assert rate == pytest.approx(512 / seconds, rel=1e-9)


def test_without_flash_attention_the_scores_cost_bandwidth():
    s, plan = sized()
    fa, _ = speed.prefill_rate(s, plan, 512, flash_attn=True)
    plain, _ = speed.prefill_rate(s, plan, 512, flash_attn=False)
    extra = 512 * 512 * 32 * 32 * FIT["attn_bytes_per_head_cell"] / (936e9 * GDDR)  # tokens x cells x layers x heads
    assert 512 / plain - 512 / fa == pytest.approx(extra, rel=1e-9)


def test_prefill_weight_and_score_passes_run_at_the_memory_class_decode_bandwidth():
    """Same card but HBM: the one-ubatch F16 prefill (flash attention off) differs only in the
    weight pass (2 bytes x body parameters) and the scores (512 tokens x 512 cells x 32 layers x 32
    heads x bytes per cell), now at the HBM share of 936 GB/s."""
    hbm = profiles.DECODE_EFFICIENCY_BY_MEMORY["llama.cpp"]["HBM"]
    assert hbm != GDDR
    s, plan = sized()
    g, basis = speed.prefill_rate(s, plan, 512, flash_attn=False)
    assert basis["prefill_memory_efficiency"] == GDDR
    s2, plan2 = sized(spec=card(memory="HBM2e"))
    h, basis2 = speed.prefill_rate(s2, plan2, 512, flash_attn=False)
    assert basis2["prefill_memory_efficiency"] == hbm
    passes = 2 * BODY + 512 * 512 * 32 * 32 * FIT["attn_bytes_per_head_cell"]
    assert 512 / h - 512 / g == pytest.approx(passes / 936e9 * (1 / hbm - 1 / GDDR), rel=1e-9)


def test_board_power_caps_the_gemm_rate():
    rate, _ = speed.gemm_rate(Device.from_spec(card(tdp=40), 0), CAT.quant("fp16"), llama_cpp.for_version(None))
    assert rate == pytest.approx(FIT["tflops_per_watt"] * 1e12 * 40)  # 40 W: below 2 x 71 x gemm_efficiency
    pro, kind = speed.gemm_rate(Device.from_spec(card(vendor="workstation"), 0), CAT.quant("fp16"), llama_cpp.for_version(None))
    assert pro == pytest.approx(71e12 * FIT["gemm_efficiency"]) and kind == "fp16"


def split_stage(layers, cells, hop=False):
    """One 512-token ubatch on a device holding `layers` of Llama 3 8B's 32 (flash attention on):
    its GEMMs, one pass over its F16 weights, and its scores over `cells` cached cells."""
    gemm = 71e12 * 2 * FIT["gemm_efficiency"]
    share = layers / 32
    return (share * (512 * 2 * BODY / gemm + 2 * BODY / (936e9 * GDDR) + 512 * cells * 32 * 4 * 32 * 128 / gemm)
            + (engines.STAGE_HOP_LATENCY_S if hop else 0.0))


def test_a_layer_split_pipelines_the_ubatches_of_a_batch():
    """2048 tokens = 4 ubatches; ubatch j attends the (j + 1) x 512 cells cached up to its last token.
    The first device (17 layers) is the slower stage, so it works back to back and the second (15
    layers) only adds the last ubatch's time."""
    s, plan = sized(n=2)
    assert [d.layers for d in plan.used] == [17, 15]
    rate, basis = speed.prefill_rate(s, plan, 2048, flash_attn=True)
    assert basis["pipeline_depth"] == 4
    seconds = sum(split_stage(17, 512 * (j + 1)) for j in range(4)) + split_stage(15, 2048, hop=True)
    assert rate == pytest.approx(2048 / seconds, rel=1e-9)


def test_the_next_batch_follows_the_last_through_the_pipeline():
    """llama_context::decode does not synchronize: a 4096-token prompt's second batch of 2048 enters
    the first device as soon as it is free, so the 8 ubatches run back to back there too."""
    s, plan = sized(n=2)
    rate, _ = speed.prefill_rate(s, plan, 4096, flash_attn=True)
    seconds = sum(split_stage(17, 512 * (j + 1)) for j in range(8)) + split_stage(15, 4096, hop=True)
    assert rate == pytest.approx(4096 / seconds, rel=1e-9)


@pytest.mark.parametrize("settings", [{"no_kv_offload": True}, {"split_mode": "row"}, {"tensor_overrides": True},
                                      {"n_gpu_layers": 32}])
def test_without_pipeline_parallelism_the_host_waits_on_each_device(settings):
    """src/llama-context.cpp keeps one copy of the graph inputs with the KV cache in host RAM, -sm
    row, any -ot, or the output layer on the CPU (-ngl 32 of Llama 3 8B's 33). Over 4 GPUs the host
    then hands ubatch j + 1 to the first GPU only once the last has ubatch j: slower than the 4-deep
    pipeline, faster than none."""
    s, plan = sized(n=4, context=4096)
    on, basis_on = speed.prefill_rate(s, plan, 4096, flash_attn=True)
    assert basis_on["pipeline_depth"] == 4
    s1 = Sizer(dataclasses.replace(s.req, engine_settings=settings))
    rate, basis = speed.prefill_rate(s1, choose(s1.req), 4096, flash_attn=True)
    assert basis["pipeline_depth"] == 1
    assert rate < on


def test_one_gpu_has_no_pipeline():
    s, plan = sized()
    _, basis = speed.prefill_rate(s, plan, 4096, flash_attn=True)
    assert basis["pipeline_depth"] == 1


def test_pipeline_seconds_schedules_stages_in_order():
    # two stages, the second slower: it sets the pace once the first ubatch reaches it
    assert speed.pipeline_seconds([[1, 2], [1, 2], [1, 2]], 4) == 1 + 2 * 3
    # three equal stages, three ubatches, 4 copies: the classic pipeline, (3 + 3 - 1) x 1
    assert speed.pipeline_seconds([[1, 1, 1]] * 3, 4) == 5
    # one copy: ubatch 1 is queued on stage 2 once stage 2 is done with ubatch 0 (t=3), and only then
    # on stage 0 of ubatch 2: ubatch 0 leaves at 3, ubatch 1 at 4 (it waited on stage 1 for 0 to
    # leave at 2), ubatch 2 enters stage 0 at 3 (host) and leaves stage 2 at 6
    assert speed.pipeline_seconds([[1, 1, 1]] * 3, 1) == 6
    # a single stage: the ubatches back to back whatever the depth
    assert speed.pipeline_seconds([[2], [3]], 1) == speed.pipeline_seconds([[2], [3]], 4) == 5
    assert speed.pipeline_seconds([], 4) == 0.0


def test_a_tied_head_is_read_per_token_like_an_untied_one():
    """Llama 3.2 1B ties its head to the embeddings: the decode still reads 128,256 x 2,048 weights
    per token for the logits. In F16 a tied and an untied copy of the model read the same bytes."""
    tied = CAT.model("llama3.2-1b")
    assert tied.tie_embeddings
    untied = dataclasses.replace(tied, tie_embeddings=False, params=None)
    out = []
    for m in (tied, untied):
        req = FitRequest(model=m, quant=CAT.quant("fp16"), kv_dtype=CAT.kv_dtype("fp16"), context=4096,
                         batch=1, engine="llama.cpp", devices=(Device.from_spec(card(), 0),))
        _, _, basis = speed.estimate_speed(Sizer(req), choose(req), 1)
        out.append(basis["bytes_per_token"])
    assert out[0] == pytest.approx(out[1], rel=1e-6)
    assert out[0] > 128256 * 2048 * 2


def test_a_ubatch_fills_the_sms_in_whole_waves_of_tiles():
    """Llama 3 8B, 512 tokens (4 tile rows of 128): q and o are 4096 wide (4 x 32 = 128 tiles), k and v
    1024 (32 tiles), gate and up 14336 (448 tiles), down 4096 (128 tiles); weights = N x K."""
    m = CAT.model("llama3-8b")
    sq, skv, sff, sdown = 4096 * 4096, 1024 * 4096, 14336 * 4096, 4096 * 14336
    total = 2 * sq + 2 * skv + 2 * sff + sdown
    # 128 SMs: one full wave for 128 tiles, a quarter of one for 32, 448 of 4 waves x 128 = 512
    assert speed.wave_efficiency(m, 128, 512) == pytest.approx(
        (2 * sq + 2 * skv * 32 / 128 + 2 * sff * 448 / 512 + sdown) / total, rel=1e-12)
    # 114 SMs: 128 tiles take 2 waves (228 slots), 448 take 4 (456)
    assert speed.wave_efficiency(m, 114, 512) == pytest.approx(
        (2 * sq * 128 / 228 + 2 * skv * 32 / 114 + 2 * sff * 448 / 456 + sdown * 128 / 228) / total, rel=1e-12)
    assert speed.wave_efficiency(m, None, 512) == 1.0


def test_sm_count_from_tensor_or_fp32_cores():
    ada = dataclasses.replace(card(), compute_capability="8.9", tensor_cores=512)
    volta = dataclasses.replace(card(), compute_capability="7.0", tensor_cores=640)
    pascal = dataclasses.replace(card(), compute_capability="6.1", cuda_cores=3584)
    # both given: the CUDA cores decide (an L4 lists 7,424 = 58 SMs x 128)
    both = dataclasses.replace(card(), compute_capability="8.9", cuda_cores=7424, tensor_cores=240)
    assert [speed.sm_count(c) for c in (ada, volta, pascal, both, card())] == [128, 80, 28, 58, None]


def test_the_wave_share_scales_the_gemm_rate_before_the_power_cap():
    dev = Device.from_spec(dataclasses.replace(card(tdp=1000), tensor_cores=456, compute_capability="9.0"), 0)
    full, _ = speed.gemm_rate(dev, CAT.quant("fp16"), llama_cpp.for_version(None))
    part, _ = speed.gemm_rate(dev, CAT.quant("fp16"), llama_cpp.for_version(None), 0.5)
    assert full == pytest.approx(71e12 * 2 * FIT["gemm_efficiency"]) and part == pytest.approx(full / 2)


def test_the_per_layer_decode_time_is_cycles_at_the_boost_clock():
    """The RTX 3090's datasheet FP32 figure, 35.6 TFLOP/s on 10,496 cores, assumes 35.6e12 / (2 x 10,496)
    = 1.6959 GHz; llama.cpp's 220,000 cycles per layer take 129.73 us there, 87.4 us at the 4090's
    82.6e12 / (2 x 16,384) = 2.5208 GHz; a card without the figures gets the 1.7 GHz value."""
    r3090, r4090 = CAT.gpu("rtx-3090"), CAT.gpu("rtx-4090")
    assert speed.boost_clock_ghz(r3090) == pytest.approx(35.6e3 / (2 * 10496))
    prof = profiles.LLAMA_CPP
    assert prof.decode_layer_cycles == 195e3
    assert speed.layer_latency_s(prof, r3090) == pytest.approx(195e3 / 1.6959e9, rel=1e-4)
    assert speed.layer_latency_s(prof, r4090) == pytest.approx(195e3 / (82.6e12 / (2 * 16384)), rel=1e-12)
    assert speed.layer_latency_s(prof, card()) == speed.layer_latency_s(prof, None) == 195e3 / 1.7e9
    assert speed.layer_latency_s(profiles.VLLM, r3090) == 0.0  # vLLM has no fitted per-layer time


@pytest.mark.parametrize("n", [2, 4, 8])
def test_a_layer_split_adds_llama_cpps_split_latency_to_each_token(n):
    """Same card n times: the token reads the same bytes at the same bandwidth and runs the same
    layers, so the only difference from one card is profiles.LLAMA_CPP_DECODE_SPLIT_S, 0.75 ms +
    0.05 ms per hop (2 GPUs: 0.80 ms, 4: 0.90 ms, 8: 1.10 ms)."""
    s1, p1 = sized(quant="q4_k_m", context=4096)
    sn, pn = sized(quant="q4_k_m", context=4096, n=n)
    assert len(pn.used) == n
    one, _, _ = speed.estimate_speed(s1, p1, 1)
    many, _, basis = speed.estimate_speed(sn, pn, 1)
    assert basis["split_latency_s"] == pytest.approx(0.75e-3 + (n - 1) * 0.05e-3, rel=1e-12)
    assert 1 / many - 1 / one == pytest.approx(0.75e-3 + (n - 1) * 0.05e-3, rel=1e-6)


def test_other_engines_keep_the_plain_hop_latency():
    assert engines.REGISTRY[engines.EngineName.VLLM].for_version(None).split_latency_s(4) == 3 * profiles.STAGE_HOP_LATENCY_S
    assert llama_cpp.for_version(None).split_latency_s(1) == 0.0


def test_ollama_pipelines_a_prompt_over_its_gpus_like_llama_cpp():
    """num_batch 512 is one ubatch per llama_decode; the runner does not synchronize between a
    prompt's batches (runner/llamarunner/runner.go), so they flow through the GPUs as llama.cpp's
    ubatches of one batch do. Llama 3 70B Q4_K_M (about 40 GiB) needs two of the 24 GiB test cards
    (Ollama uses the fewest GPUs that hold the model)."""
    s, plan = sized(model="llama3-70b", quant="q4_k_m", n=2, context=4096, engine="ollama")
    assert len(plan.used) == 2 and not plan.head_on_host and not plan.cpu_layers
    rate, basis = speed.prefill_rate(s, plan, 2048, flash_attn=True)
    assert (basis["pipeline_depth"], basis["n_batch"], basis["n_ubatch"]) == (4, 512, 512)
    assert rate > 0


def _decode_s(spec, ecc=None):
    """Seconds per token of Llama 3 8B Q4_K_M on one `spec` card with the given ECC mode."""
    dev = dataclasses.replace(Device.from_spec(spec, 0), ecc=ecc)
    req = FitRequest(model=CAT.model("llama3-8b"), quant=CAT.quant("q4_k_m"), kv_dtype=CAT.kv_dtype("fp16"),
                     context=4096, batch=1, engine="llama.cpp", devices=(dev,))
    decode, _, basis = speed.estimate_speed(Sizer(req), choose(req), 1)
    return 1 / decode, basis


def test_in_band_ecc_on_gddr_leaves_15_16_of_the_bandwidth():
    """The same GDDR6 card as a datacenter part (ECC on by default) reads at 936 x 15/16 GB/s: the
    bandwidth term grows by 16/15, the per-layer time does not change."""
    workstation = card(vendor="workstation", memory="GDDR6")
    datacenter = dataclasses.replace(workstation, vendor_class="datacenter")
    off, b_off = _decode_s(workstation)
    on, b_on = _decode_s(datacenter)
    assert b_on["bandwidth_gbps"] == pytest.approx(936 * 15 / 16) and b_on["ecc_bandwidth_share"] == 15 / 16
    assert "ecc_bandwidth_share" not in b_off and b_off["bandwidth_gbps"] == 936
    bandwidth_term = b_off["bytes_per_token"] / (936e9 * GDDR)
    assert on - off == pytest.approx(bandwidth_term * (16 / 15 - 1), rel=1e-9)
    # what the driver reports wins over the class default, both ways
    assert _decode_s(datacenter, ecc=False)[0] == pytest.approx(off, rel=1e-12)
    assert _decode_s(workstation, ecc=True)[0] == pytest.approx(on, rel=1e-12)


def test_hbm_ecc_is_side_band_and_costs_no_bandwidth():
    hbm = card(vendor="datacenter", memory="HBM2e")
    assert _decode_s(hbm, ecc=True)[0] == pytest.approx(_decode_s(hbm, ecc=False)[0], rel=1e-12)
    assert "ecc_bandwidth_share" not in _decode_s(hbm, ecc=True)[1]


def test_current_llama_cpp_multiplies_quantized_weights_as_stored():
    """ggml-cuda/mmq.cu: from compute capability 7.5 the MMQ kernels run on the Q4_K_M weights as
    stored; a build forcing cuBLAS (and llama.cpp before June 2024) first dequantizes them to FP16,
    per ubatch: dequant_bytes_per_weight x body parameters more traffic at the decode bandwidth."""
    s, plan = sized(quant="q4_k_m")
    mmq, b_mmq = speed.prefill_rate(s, plan, 512, flash_attn=True)
    legacy = Sizer(dataclasses.replace(s.req, engine_settings={"force_cublas": True}))
    cublas, b_cublas = speed.prefill_rate(legacy, plan, 512, flash_attn=True)
    assert b_mmq["quantized_gemm"].startswith("mmq") and b_cublas["quantized_gemm"].startswith("dequantized")
    assert 512 / cublas - 512 / mmq == pytest.approx(FIT["dequant_bytes_per_weight"] * BODY / (936e9 * GDDR), rel=1e-9)
    # Volta has FP16 tensor cores but no int8 MMA: large batches go through cuBLAS there
    volta = dataclasses.replace(card(), compute_capability="7.0")
    sv, pv = sized(quant="q4_k_m", spec=volta)
    assert speed.prefill_rate(sv, pv, 512, flash_attn=True)[1]["quantized_gemm"].startswith("dequantized")
    # F16 weights have nothing to dequantize either way
    assert "quantized_gemm" not in speed.prefill_rate(*sized(), 512, flash_attn=True)[1]


def test_a_prompt_after_a_filled_cache_attends_to_it_too():
    """llama-bench pp512 @ d4096: each of the 512 tokens also attends the 4096 cells already cached,
    4 x 32 heads x 128 FLOPs per cell and layer at the GEMM rate (flash attention on)."""
    s, plan = sized(context=8192)
    fresh, b0 = speed.prefill_rate(s, plan, 512, flash_attn=True)
    deep, b1 = speed.prefill_rate(s, plan, 512, flash_attn=True, depth=4096)
    assert (b0["prefill_depth_tokens"], b1["prefill_depth_tokens"]) == (0, 4096)
    gemm = 71e12 * 2 * FIT["gemm_efficiency"]
    assert 512 / deep - 512 / fresh == pytest.approx(512 * 4096 * 32 * 4 * 32 * 128 / gemm, rel=1e-9)
    # the prompt is cut to what the context leaves after the cache
    _, b2 = speed.prefill_rate(s, plan, 8192, flash_attn=True, depth=4096)
    assert b2["prefill_prompt_tokens"] == 4096
