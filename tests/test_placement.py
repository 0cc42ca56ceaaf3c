"""Placement and verdicts on hand-made cards, with the splits computed by hand."""

import dataclasses

import pytest

from gpufit.catalog import load_catalog
from gpufit.catalog.types import GpuSpec
from gpufit.estimator.engines import LLAMA_CPP
from gpufit.estimator.engines import get as _engine
from gpufit.estimator.fit import estimate
from gpufit.estimator.types import Device, FitRequest
from gpufit.render.words import word

tp_valid = _engine("vllm").tp_valid

CAT = load_catalog()
GIB = 2**30


def card(key, gib, bw, nvlink=False):
    return GpuSpec(key=key, name=key.upper(), vendor_class="geforce", architecture="Ampere",
                   compute_capability="8.6", memory_bytes=gib * GIB, memory_type="GDDR6X",
                   bandwidth_gbps=bw, source="test", fp16_tflops=71.0,
                   nvlink_gbps=600.0 if nvlink else None)


R3090 = card("rtx-3090", 24, 936)
R4090 = card("rtx-4090", 24, 1008)
R3060 = card("rtx-3060", 12, 360)

# Llama 3 / 3.1 8B at Q4_K_M on llama.cpp, by hand: token_embd stays on the host, so the GPU holds the output
# matrix (128,256 x 4,096 = 525,336,576 weights at Q6_K, 6.5625 bits) and the body (8,030,261,248 - 2 x 525,336,576
# = 6,979,588,096 weights at 4.7995 bits): 4,618,256,793 bytes. KV at f16: 2 (K, V) x 32 layers x 8 KV heads x 128
# x 2 bytes = 131,072 bytes per token.
Q4KM_GPU_WEIGHTS = round(525_336_576 * 6.5625 / 8 + 6_979_588_096 * 4.7995 / 8)
KV_PER_TOKEN = 2 * 32 * 8 * 128 * 2


def dev(spec, i, free=None, mig=None):
    return Device(index=str(i), name=spec.name, total_bytes=spec.memory_bytes,
                  free_bytes=spec.memory_bytes if free is None else free, spec=spec,
                  bandwidth_gbps=spec.bandwidth_gbps, nvlink=bool(spec.nvlink_gbps), mig_profile=mig)


def req(model, quant, devices, engine="vllm", context=8192, batch=1, kv="bf16", **kw):
    return FitRequest(model=CAT.model(model), quant=CAT.quant(quant), kv_dtype=CAT.kv_dtype(kv),
                      context=context, batch=batch, engine=engine, devices=tuple(devices), **kw)


def test_tp_needs_power_of_two_dividing_heads():
    m = CAT.model("qwen2.5-32b")  # 40 heads, 8 KV heads
    assert m.heads == 40
    assert tp_valid(m, 2) and tp_valid(m, 4) and tp_valid(m, 8)
    assert not tp_valid(m, 3) and not tp_valid(m, 5) and not tp_valid(m, 16)


def test_llama3_70b_int8_on_four_3090s_is_tensor_parallel_4_by_hand():
    r = estimate(req("llama3-70b", "int8", [dev(R3090, i) for i in range(4)]))
    assert r.verdict in ("fits", "tight")
    assert (r.placement.strategy, r.placement.tensor_parallel) == ("tensor_parallel", 4)
    # per rank by hand: weights / 4 (the 128256 vocabulary is already a multiple of 64 x 4, no
    # padding; 8 KV heads / 4 = 2 per rank, so K/V split like the rest), KV with 2 KV heads
    m = CAT.model("llama3-70b")
    embed = 128256 * 8192
    weights = (70_553_706_496 - 2 * embed) * 1 + 2 * embed * 2
    # vLLM's pages: 2 x 16 tokens x 2 heads x 128 x 2 bytes per block and layer, 8192/16 blocks, 80 layers
    kv = (2 * 16 * 2 * 128 * 2) * (8192 // 16) * 80
    # a 24 GiB card gets vLLM's small scheduler defaults: 2048 batched tokens, 256 sequences. The
    # profile peak is the larger of the MLP step (3 x 28672 / 4 + 3 x 8192 values x 2 bytes per token)
    # and the sampler's ten fp32-sized vocabulary copies for each of 256 rows
    mlp_step = 2048 * (3 * 28672 // 4 + 3 * 8192) * 2
    sampler = 256 * 128256 * 4 * 10
    act = max(mlp_step, sampler)
    assert act == sampler == 1_313_341_440
    overhead = int(0.25 * GIB) + 512 * 2**20  # non-torch with TP (NCCL) + the CUDA-graph pool
    per_rank = round(weights / 4) + kv + act + overhead
    assert m.params == 70_553_706_496
    for d in r.devices:
        assert d.needed_bytes == per_rank
        assert d.headroom_bytes == 24 * GIB - per_rank
    assert r.engine_args["vllm"].count("--tensor-parallel-size 4") == 1


def test_4090_plus_3060_splits_a_20gb_model_about_two_to_one():
    # Qwen2.5 32B Q4_K_M ~ 19 GB: does not fit the 4090 alone, does across both, layers ~2:1
    r = estimate(req("qwen2.5-32b", "q4_k_m", [dev(R4090, 0), dev(R3060, 1)], engine="llama.cpp", kv="fp16"))
    assert r.verdict in ("fits", "tight")
    assert r.placement.strategy == "layer_split"
    a, b = r.placement.layers_per_device
    assert a + b == 64
    assert 1.7 <= a / b <= 2.5
    assert "-ts " in r.engine_args["llama.cpp"]


def test_forty_head_model_on_three_cards_never_uses_tp3():
    # Qwen2.5 32B BF16 (~65 GB) on three 24 GiB cards: TP needs 2 or 4, two cannot hold it -> PP 3
    r = estimate(req("qwen2.5-32b", "bf16", [dev(R3090, i) for i in range(3)], context=2048))
    assert r.placement.tensor_parallel != 3
    if r.verdict != "no_fit":
        assert r.placement.strategy == "pipeline_parallel"
        assert r.placement.pipeline_parallel == 3


def test_card_half_used_by_another_process_gets_fewer_layers():
    busy = dev(R3090, 0, free=12 * GIB)
    idle = dev(R3090, 1)
    r = estimate(req("llama3-70b", "q4_k_m", [busy, idle], engine="llama.cpp", kv="fp16", context=4096,
                     host_ram_available_bytes=64 * GIB))
    assert r.verdict == "offload"  # ~40 GB of weights, 36 GiB free in all
    lay = dict(zip([d.index for d in r.devices], r.placement.layers_per_device))
    # llama.cpp style split in proportion to what each card can hold after its fixed costs
    assert lay["1"] > lay["0"] > 0
    # each card's need stays within its free memory
    for d in r.devices:
        if d.needed_bytes:
            assert d.needed_bytes <= d.free_bytes


def test_mig_slices_are_separate_units_never_split_across():
    a100 = card("a100-sxm4-80gb", 80, 2039)
    slices = [Device(index=f"0/{i}", name="MIG 3g.40gb", total_bytes=40 * GIB, free_bytes=40 * GIB, spec=a100,
                     bandwidth_gbps=1000, mig_profile="3g.40gb") for i in range(2)]
    r = estimate(req("llama3-70b", "int8", slices))  # ~73 GB: would need both slices together
    assert r.placement.strategy not in ("tensor_parallel", "pipeline_parallel", "layer_split")
    assert r.verdict == "no_fit" and "mig_one_at_a_time" in [w.code for w in r.warnings]
    small = estimate(req("llama3-8b", "bf16", slices))
    assert small.verdict == "fits" and small.placement.strategy == "single"


def test_only_fits_with_offload_then_says_how_many_layers_and_host_bytes():
    r = estimate(req("llama3-70b", "q4_k_m", [dev(R4090, 0)], engine="llama.cpp", kv="fp16", context=4096,
                     host_ram_available_bytes=64 * GIB))
    assert r.verdict == "offload"
    assert r.placement.strategy == "cpu_offload"
    assert 0 < r.placement.gpu_layers < 80
    assert r.placement.cpu_bytes > 15 * GIB
    assert f"-ngl {r.placement.gpu_layers}" in r.engine_args["llama.cpp"]
    # offloaded layers run at host bandwidth: slower than the GPU-only figure would be
    assert r.performance.basis["host_bandwidth_gbps"] > 0
    assert r.performance.decode_tokens_per_s < 10


def test_offload_is_not_assumed_when_host_ram_is_unknown():
    r = estimate(req("llama3-70b", "q4_k_m", [dev(R4090, 0)], engine="llama.cpp", kv="fp16", context=4096))
    assert r.verdict == "no_fit"
    assert any("host RAM" in w and "--ram" in w for w in map(word, r.warnings))


def test_vllm_prefers_pure_tp_inside_a_node_then_tp_times_pp_on_fewest_cards():
    h100 = card("h100-sxm", 80, 3350, nvlink=True)
    # 410 GB of INT8 weights: TP 8 holds it on one node of H100s (TP 4 cannot): pure TP, not PP
    r = estimate(req("llama3.1-405b", "int8", [dev(h100, i) for i in range(16)]))
    p = r.placement
    assert r.verdict in ("fits", "tight")
    assert (p.strategy, p.tensor_parallel, p.pipeline_parallel) == ("tensor_parallel", 8, 1)
    # on 24 GiB cards no TP size inside a node holds it: TP x PP on the fewest cards, largest TP first
    r = estimate(req("llama3.1-405b", "int8", [dev(R3090, i) for i in range(32)]))
    p = r.placement
    assert p.strategy == "pipeline_parallel" and p.tensor_parallel in (4, 8)
    n = p.tensor_parallel * p.pipeline_parallel
    assert sum(1 for d in r.devices if d.needed_bytes) == n
    # n is the fewest cards on which a TP x PP layout starts
    from gpufit.estimator.placement import Sizer, _tp_pp_plan

    fewer = req("llama3.1-405b", "int8", [dev(R3090, i) for i in range(n - 1)])
    assert _tp_pp_plan(Sizer(fewer), list(fewer.devices)) is None
    assert f"--pipeline-parallel-size {p.pipeline_parallel}" in r.engine_args["vllm"]


def test_offload_refused_when_host_ram_is_too_small():
    r = estimate(req("llama3-70b", "q4_k_m", [dev(R4090, 0)], engine="llama.cpp", kv="fp16", context=4096,
                     host_ram_available_bytes=8 * GIB))
    assert r.verdict == "no_fit"


def test_single_card_fit_is_the_whole_model_plus_engine_costs():
    r = estimate(req("llama3-8b", "q4_k_m", [dev(R3090, 0)], engine="llama.cpp", kv="fp16"))
    # llama.cpp keeps token_embd on the host
    gpu_weights = Q4KM_GPU_WEIGHTS
    kv = KV_PER_TOKEN * 8192
    # current llama.cpp runs flash attention (-fa auto): the largest peak of the compute buffer is the
    # logits of one ubatch, 512 x 4 x (128,256 + 4,096) bytes
    need = gpu_weights + kv + 512 * 4 * (128256 + 4096) + LLAMA_CPP.cuda_context_bytes
    assert r.devices[0].needed_bytes == need
    assert r.verdict == "fits"
    # without it, the 8192 x 32 f32 attention scores of a ubatch: 560 MiB, the May 2024 logs' buffer
    r = estimate(req("llama3-8b", "q4_k_m", [dev(R3090, 0)], engine="llama.cpp", kv="fp16",
                     engine_settings={"flash_attn": False}))
    assert r.devices[0].needed_bytes == need - 512 * 4 * (128256 + 4096) + 560 * 2**20


def test_tight_when_headroom_below_minimum_and_fits_otherwise():
    m = CAT.model("llama3-8b")
    # transformers claims nothing up front, so headroom alone decides (vLLM would refuse at 0.9 x 24 GiB)
    base = req("llama3-8b", "bf16", [dev(R3090, 0)], context=2048, engine="transformers")
    r = estimate(base)
    need = r.devices[0].needed_bytes
    # free just above the need: fits, but under max(1 GiB, 5 %) headroom -> tight
    tight = estimate(dataclasses.replace(base, devices=(dev(R3090, 0, free=need + 100 * 2**20),)))
    assert tight.verdict == "tight"
    roomy = estimate(dataclasses.replace(base, devices=(dev(R3090, 0, free=need + 3 * GIB),)))
    assert roomy.verdict == "fits"
    # one byte short: no fit, since offloading a layer needs host RAM, and a plan does not know it (--ram)
    short = estimate(dataclasses.replace(base, devices=(dev(R3090, 0, free=need - 1),)))
    assert short.verdict == "no_fit"
    assert [w.code for w in short.warnings] == ["gpu_short", "offload_ram_unknown"]
    assert short.warnings[0].data["usable_bytes"] == need - 1
    assert m.layers == 32


def test_reserve_is_kept_free_on_every_card():
    base = req("llama3-8b", "bf16", [dev(R3090, 0)], context=2048)
    r0 = estimate(base)
    r1 = estimate(dataclasses.replace(base, reserve_bytes=2 * GIB))
    assert r0.devices[0].headroom_bytes - r1.devices[0].headroom_bytes == 2 * GIB


def test_context_and_batch_move_kv_linearly():
    a = estimate(req("llama3-8b", "bf16", [dev(R3090, 0)], context=4096))
    b = estimate(req("llama3-8b", "bf16", [dev(R3090, 0)], context=8192))
    c = estimate(req("llama3-8b", "bf16", [dev(R3090, 0)], context=4096, batch=2))
    assert b.memory.kv_cache_bytes == 2 * a.memory.kv_cache_bytes == c.memory.kv_cache_bytes
    fp8 = estimate(req("llama3-8b", "bf16", [dev(R3090, 0)], context=4096, kv="fp8"))
    assert fp8.memory.kv_cache_bytes * 2 == a.memory.kv_cache_bytes


def test_max_context_and_max_batch_are_the_edges_of_fitting_by_hand():
    # Llama 3.1 8B's window is 131,072 tokens, so memory, not the model, bounds the context on a 12 GiB card.
    # What does not grow with context or batch: the GPU weights, the logits of one ubatch (flash attention),
    # 512 x 4 x (128,256 + 4,096) = 271,056,896, and the CUDA context, 300 MiB: 5,203,886,489 bytes together.
    assert Q4KM_GPU_WEIGHTS == 4_618_256_793 and KV_PER_TOKEN == 131_072
    fixed = Q4KM_GPU_WEIGHTS + 512 * 4 * (128256 + 4096) + 300 * 2**20
    assert fixed == 5_203_886_489
    left = 12 * GIB - fixed  # 7,681,015,399 bytes for the KV cache
    base = req("llama3.1-8b", "q4_k_m", [dev(R3060, 0)], engine="llama.cpp", kv="fp16", context=4096)
    r = estimate(base)
    assert r.devices[0].needed_bytes == fixed + 4096 * KV_PER_TOKEN
    # 7,681,015,399 / 131,072 = 58,601.5 tokens at batch 1; / (4,096 x 131,072) = 14.3 sequences at 4,096
    assert (r.performance.max_context, r.performance.max_batch) == (58_601, 14) == (left // 131_072, left // 2**29)
    assert estimate(dataclasses.replace(base, batch=2)).performance.max_context == 29_300  # left / (2 x 131,072)
    # they are the edges: at them the card starts the model with almost nothing spare; one more does not fit
    assert estimate(dataclasses.replace(base, context=58_601)).verdict == "tight"
    assert estimate(dataclasses.replace(base, context=58_602)).verdict == "no_fit"
    assert estimate(dataclasses.replace(base, batch=14)).verdict == "tight"
    assert estimate(dataclasses.replace(base, batch=15)).verdict == "no_fit"


def test_decode_speed_is_bandwidth_over_bytes_per_token():
    r = estimate(req("llama3-8b", "q4_k_m", [dev(R3090, 0)], engine="llama.cpp", kv="fp16"))
    b = r.performance.basis
    # by hand: each token reads the GPU weights and the KV of the 64 tokens decode is measured at,
    # 4,618,256,793 + 64 x 131,072 = 4,626,645,401 bytes, at 936 GB/s x 0.91 (llama.cpp on GDDR, calibrated in
    # engines/profiles.py), plus 32 layers x llama.cpp's fixed time per layer, 195,000 cycles (same file)
    # at 1.7 GHz (this test card gives no FP32 figure to derive its clock from) = 114.71 us:
    # 1 / (4,626,645,401 / 851.76e9 + 32 x 114.71e-6) = 1 / (5.43187 + 3.67059 ms) = 109.86 tokens/s
    assert b["bytes_per_token"] == Q4KM_GPU_WEIGHTS + 64 * KV_PER_TOKEN == 4_626_645_401
    assert (b["efficiency"], b["decode_context_tokens"]) == (0.91, 64)
    assert b["layer_latency_s"] == pytest.approx(114.71e-6, abs=0.01e-6)
    assert r.performance.decode_tokens_per_s == pytest.approx(109.86, abs=0.06)  # reported to 0.1


def test_vllm_refuses_when_free_memory_is_below_its_utilisation_budget():
    # another process holds 8 GiB: vLLM's 0.9 x 24 GiB claim cannot be met, so it refuses to start
    # even though the model itself would fit in what is free (vllm/v1/worker/gpu_worker.py init_device)
    busy = dev(R3090, 0, free=16 * GIB)
    r = estimate(req("llama3-8b", "awq", [busy], context=4096), candidates=_cands())
    assert r.verdict == "no_fit"
    assert r.refusal.code == "free_memory_below_utilization"
    assert "Free memory on device (16.00/24.00 GiB) on startup is less than desired GPU memory utilization (0.9, 21.60 GiB)" in r.refusal.message
    # 16 / 24 = 0.666..: the largest utilisation that passes is 0.66, and at it the model starts
    alt = [a for a in r.alternatives if a.kind == "engine_setting"]
    assert alt and alt[0].changes == {"gpu_memory_utilization": 0.66} and alt[0].verdict in ("fits", "tight")
    ok = estimate(req("llama3-8b", "awq", [busy], context=4096, gpu_memory_utilization=0.66))
    assert ok.verdict in ("fits", "tight") and "--gpu-memory-utilization 0.66" in ok.engine_args["vllm"]


def _cands():
    from gpufit.estimator.alternatives import Candidates

    return Candidates(quants=tuple(CAT.quants.values()))


def test_vllm_kv_pool_in_blocks_by_hand():
    # Llama 3 8B bf16 on an empty 24 GiB card (no reserved memory known): budget 0.9 x 24 GiB
    r = estimate(req("llama3-8b", "bf16", [dev(R3090, 0)], context=8192))
    em = r.engine_memory
    budget = int(0.9 * 24 * GIB)
    weights = 8_030_261_248 * 2  # all bf16; 128256 = 64 x 2004, no vocabulary padding
    act = 256 * 128256 * 4 * 10  # the sampler's fp32 copies beat 2048 x (3 x 14336 + 3 x 4096) x 2
    assert 2048 * (3 * 14336 + 3 * 4096) * 2 < act
    non_torch, graphs = int(0.075 * GIB), 512 * 2**20
    avail = budget - weights - act - non_torch - graphs
    page = 2 * 16 * 8 * 128 * 2  # one block of 16 tokens of one layer
    blocks = avail // (page * 32)
    assert (em.budget_bytes, em.weights_bytes, em.activation_peak_bytes) == (budget, weights, act)
    assert em.kv_pool_tokens == blocks * 16 == 39_680
    assert em.max_concurrency == round(blocks / (8192 // 16), 2) == 4.84
    assert em.refusal is None and r.verdict in ("fits", "tight")
    # five sequences of 8192 at once are more than the pool holds: vLLM queues them, no fit
    many = estimate(req("llama3-8b", "bf16", [dev(R3090, 0)], context=8192, batch=5))
    assert many.verdict == "no_fit" and many.refusal.code == "batch_exceeds_pool"


def test_llama_cpp_split_counts_the_output_layer_as_a_part():
    from gpufit.estimator.placement import llama_cpp_split

    # memory.csv: Llama 3 8B over 2 / 6 equal cards loads 17/15 and 6/5/6/5/6/4 layers, head on the last
    assert llama_cpp_split(32, [24, 24]) == ([17, 15], 1)
    assert llama_cpp_split(32, [24] * 6) == ([6, 5, 6, 5, 6, 4], 5)
    # in proportion to free memory
    counts, out = llama_cpp_split(64, [24, 12])
    assert counts == [44, 20] and out == 1  # il / 65 < 2/3 for il = 0..43


def test_fp8_on_a_card_without_fp8_kernels_is_warned():
    a100 = GpuSpec(key="a100-sxm4-80gb", name="A100", vendor_class="datacenter", architecture="Ampere",
                   compute_capability="8.0", memory_bytes=80 * GIB, memory_type="HBM2e", bandwidth_gbps=2039,
                   source="test", fp16_tflops=312.0)
    r = estimate(req("llama3-8b", "fp8", [dev(a100, 0)]))
    assert any("compute capability 8.9" in w for w in map(word, r.warnings))
    ok = estimate(req("llama3-8b", "bf16", [dev(a100, 0)]))
    assert not any("compute capability" in w for w in map(word, ok.warnings))


def test_too_many_sequences_offers_the_batch_that_fits():
    from gpufit.estimator.alternatives import Candidates

    r = estimate(req("llama3-8b", "bf16", [dev(R3090, 0)], batch=64), candidates=Candidates())
    assert r.verdict == "no_fit"
    alt = next(a for a in r.alternatives if a.kind == "batch")
    fits = estimate(dataclasses.replace(r.request, batch=alt.changes["batch"]))
    assert fits.verdict in ("fits", "tight")
    over = estimate(dataclasses.replace(r.request, batch=alt.changes["batch"] + 1))
    assert over.verdict not in ("fits", "tight")


def test_a_mig_slice_prefills_at_its_share_of_the_card():
    a100 = GpuSpec(key="a100-sxm4-80gb", name="A100", vendor_class="datacenter", architecture="Ampere",
                   compute_capability="8.0", memory_bytes=80 * GIB, memory_type="HBM2e", bandwidth_gbps=2000,
                   source="test", fp16_tflops=312.0, bf16_tflops=312.0)
    whole = estimate(req("llama3-8b", "bf16", [dev(a100, 0)], context=2048))
    half = Device(index="0/0", name="MIG 3g.40gb", total_bytes=40 * GIB, free_bytes=40 * GIB, spec=a100,
                  bandwidth_gbps=1000, mig_profile="3g.40gb")
    sliced = estimate(req("llama3-8b", "bf16", [half], context=2048))
    assert sliced.performance.basis["tflops"] == pytest.approx(156.0)
    assert sliced.performance.prefill_tokens_per_s == pytest.approx(whole.performance.prefill_tokens_per_s / 2, rel=1e-3)
