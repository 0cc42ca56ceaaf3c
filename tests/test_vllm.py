"""vLLM's start-up arithmetic, pinned to hand-computed figures and to public start-up logs
(bench/data/vllm_startup.csv: the row's URL is named in each test)."""

import dataclasses

import pytest

from gpufit.catalog import load_catalog
from gpufit.errors import UsageError
from gpufit.estimator.engines import get as engine
from gpufit.estimator.engines import vllm
from gpufit.estimator.fit import estimate
from gpufit.estimator.types import Device, FitRequest

CAT = load_catalog()
GIB = 2**30


def card(key, total=None, free=None, reserved=None, i=0):
    spec = CAT.gpus[key]
    total = spec.memory_bytes if total is None else total
    return Device(index=str(i), name=spec.name, total_bytes=total, free_bytes=total if free is None else free,
                  spec=spec, bandwidth_gbps=spec.bandwidth_gbps, bf16_tflops=spec.bf16_tflops,
                  nvlink=bool(spec.nvlink_gbps), reserved_bytes=reserved)


def req(model, quant, devices, context, kv="bf16", version=None, util=None, **settings):
    return FitRequest(model=CAT.model(model), quant=CAT.quant(quant), kv_dtype=CAT.kv_dtype(kv), context=context,
                      batch=1, engine="vllm", devices=tuple(devices), engine_version=version,
                      gpu_memory_utilization=util, engine_settings=settings, planning=True)


# ---- the RTX 3090 thread (https://github.com/vllm-project/vllm/issues/10517, V0, v0.6.4's log format) -
# the log: total_gpu_memory=23.58GiB, weights 14.9888 GiB, util 0.90; 20000 starts (3.81 GiB KV),
# 29000 is refused ("larger than the maximum number of tokens that can be stored in KV cache (23648)")
LOGGED_TOTAL = int(23.58 * GIB)


def _v0_blocks(context):
    budget = int(0.9 * LOGGED_TOTAL)
    weights = 8_030_261_248 * 2
    act = context * (3 * 14336 + 3 * 4096) * 2  # the whole max_model_len is one profile batch in V0
    # non-torch memory: 0.075 GiB plus, up to v0.6.4, the CUDA context (300 MiB)
    avail = budget - weights - act - int(0.075 * GIB) - (300 << 20)
    return avail // (2 * 16 * 8 * 128 * 2 * 32)  # cache block: 16 tokens x 32 layers x K/V x 8 heads x 128 x 2 B


def test_rtx_3090_at_20000_tokens_starts_on_v0():
    r = estimate(req("llama3.1-8b", "bf16", [card("rtx-3090", LOGGED_TOTAL, reserved=0)], 20000, version="0.6"))
    assert r.refusal is None and r.verdict in ("fits", "tight")
    blocks = _v0_blocks(20000)
    assert r.engine_memory.kv_pool_tokens == blocks * 16
    # within 1 % of the logged 3.81 GiB
    assert r.engine_memory.kv_pool_bytes / GIB == pytest.approx(3.81, rel=0.01)


def test_rtx_3090_at_29000_tokens_is_refused_with_vllms_words():
    r = estimate(req("llama3.1-8b", "bf16", [card("rtx-3090", LOGGED_TOTAL, reserved=0)], 29000, version="0.6"))
    tokens = _v0_blocks(29000) * 16
    assert r.verdict == "no_fit" and r.refusal.code == "kv_too_small"
    assert r.engine_memory.kv_pool_tokens == tokens
    assert tokens < 29000 and tokens == pytest.approx(23648, rel=0.01)
    assert (f"The model's max seq len (29000) is larger than the maximum number of tokens that can be stored "
            f"in KV cache ({tokens})") in r.refusal.message
    # the same start on current vLLM (chunked prefill: a 2048-token profile batch) has room for it
    cur = estimate(req("llama3.1-8b", "bf16", [card("rtx-3090", LOGGED_TOTAL, reserved=0)], 29000))
    assert cur.refusal is None


def test_v1_refusal_names_the_estimated_maximum_model_length():
    r = estimate(req("llama3.1-8b", "bf16", [card("rtx-3090", LOGGED_TOTAL, reserved=0)], 131072))
    em = r.engine_memory
    # by hand, current V1 on a 24 GiB card (the small batch defaults: 2048 tokens, 256 sequences):
    budget = int(0.9 * LOGGED_TOTAL)  # 22,786,948,988
    weights = 8_030_261_248 * 2
    # the profile's peak is the dummy sampler run: 256 rows x 128,256 vocabulary x 4 B x 10 fp32 copies,
    # above the forward pass's 2048 x (3 x 14336 + 3 x 4096) x 2 B = 226,492,416
    act = 256 * 128256 * 4 * 10
    avail = budget - weights - act - int(0.075 * GIB) - (512 << 20)  # non-torch memory, CUDA graphs
    assert (budget, act, avail) == (22_786_948_988, 1_313_341_440, 4_795_683_504)
    assert (em.budget_bytes, em.activation_peak_bytes, em.extra["available_kv_bytes"]) == (budget, act, avail)
    per_block = 16 * 2 * 8 * 128 * 2 * 32  # 16 tokens x 131,072 B per token over 32 layers
    assert r.refusal.code == "kv_too_small"
    # the largest length whose blocks fit: 4,795,683,504 // 2,097,152 = 2,286 blocks of 16 tokens
    assert avail // per_block == 2286 and em.kv_pool_bytes == 2286 * per_block
    assert em.max_model_len_fit == 2286 * 16 == 36_576
    assert "the estimated maximum model length is 36576" in r.refusal.message


# ---- sliding windows: Gemma 3 27B at 32k -----------------------------------------------------------
def test_gemma3_27b_sliding_layers_keep_window_minus_one_plus_batched_tokens():
    h100 = card("h100-sxm")
    r = req("gemma3-27b", "bf16", [h100], 32768)
    layout = vllm.kv_layout(r, 1)
    page = 2 * 16 * 16 * 128 * 2  # one block of one layer: 16 KV heads x 128 x 2 B, K and V
    # an H100 gets vLLM's large defaults: 8192 batched tokens; a sliding layer keeps
    # min(1024 - 1 + 8192, 32768) = 9215 tokens = 576 blocks + 1 (the window need not start at a block)
    assert vllm.scheduler(r, vllm.CURRENT, h100) == (8192, 1024)
    full, sliding = 10 * (32768 // 16), 52 * (-(-9215 // 16) + 1)
    assert layout.request_bytes(32768, 8192) == (full + sliding) * page == 6_617_038_848
    # a counted window of 1024 would be 3.1 GB: 10 x 32768 + 52 x 1024 tokens x 8192 B
    assert (10 * 32768 + 52 * 1024) * 8192 == 3_120_562_176
    # the pool: groups of 10 layers (the full layers' count), 6 sliding groups (8 padding layers)
    assert layout.group_size == 10 and [g for _, g in layout.groups] == [1, 6]
    assert layout.blocks_per_request(32768, 8192) == 2048 + 6 * 577


# ---- tensor parallel past the KV heads: Qwen3-235B-A22B at TP 8 ------------------------------------
def test_qwen3_235b_at_tp8_replicates_its_4_kv_heads():
    devs = [card("h100-sxm", i=i) for i in range(8)]
    r = estimate(req("qwen3-235b-a22b", "fp8", devs, 32768, tensor_parallel_size=8))
    assert (r.placement.tensor_parallel, r.placement.pipeline_parallel) == (8, 1)
    # max(1, 4 // 8) = 1 KV head per rank: 2 x 1 x 128 x 2 B per token and layer, 94 layers
    per_rank_kv = 32768 * 94 * 2 * 1 * 128 * 2
    assert r.devices[0].needed_bytes - r.engine_memory.weights_bytes - r.engine_memory.activation_peak_bytes \
        - r.engine_memory.non_torch_bytes - r.engine_memory.cuda_graph_bytes == per_rank_kv
    # weights per rank: FP8 body split 8 ways, but each rank keeps a whole K/V head (1 of 4, not 1/8)
    m = CAT.model("qwen3-235b-a22b")
    embed = 151936 * 4096  # embeddings and head in BF16, 151936 = 64 x 8 x 296.75 -> padded to 152064
    padded = 152064 * 4096
    body = 235_093_634_560 - 2 * embed
    per_layer = round(body / 94)
    kv = 2 * 4096 * 4 * 128  # K and V projections of one layer
    qo = (4096 * 64 * 128) * 2
    expect = 2 * padded * 2 / 8 + 94 * per_layer * (qo / per_layer / 8 + kv / per_layer / 4
                                                      + (per_layer - qo - kv) / per_layer / 8)
    assert m.kv_heads == 4
    assert r.engine_memory.weights_bytes == pytest.approx(expect, abs=16)


# ---- MXFP4 as vLLM stores it: gpt-oss-20b -----------------------------------------------------------
def test_gpt_oss_20b_mxfp4_weights_as_vllm_loads_them():
    r = estimate(req("gpt-oss-20b", "mxfp4", [card("a100-sxm4-80gb")], 131072, util=0.65))
    per_layer = round((20_914_757_184 - 2 * 201088 * 2880) / 24)
    attn = 2880 * 64 * 64 * 2 + 2 * 2880 * 8 * 64 + (64 + 16) * 64  # q, o, k, v and their biases
    experts = per_layer - attn
    # experts in MXFP4 (4.25 bits) padded by Marlin: hidden 2880 -> 3072, intermediate 2880 -> 2944
    pad = (3072 / 2880) * (2944 / 2880)
    expect = 2 * 201088 * 2880 * 2 + 24 * (experts * 4.25 / 8 * pad + attn * 2)
    assert r.engine_memory.weights_bytes == pytest.approx(expect, rel=1e-6)
    # https://github.com/vllm-project/vllm (blog row, v0.19): "Model loading took 13.72 GiB"
    assert expect / GIB == pytest.approx(13.72, rel=0.01)
    assert r.refusal is None


# ---- the start-up checks ----------------------------------------------------------------------------
def test_bf16_is_refused_below_compute_capability_8():
    r = estimate(req("llama3.2-3b", "bf16", [card("rtx-2080-ti")], 4096))
    assert r.verdict == "no_fit" and r.refusal.code == "compute_capability"
    assert "Bfloat16 is only supported on GPUs with compute capability of at least 8.0" in r.refusal.message
    assert estimate(req("llama3.2-3b", "fp16", [card("rtx-2080-ti")], 4096)).refusal is None


def test_fp8_weights_are_refused_on_t4_and_p100_and_vllm_not_below_7():
    assert estimate(req("llama3-8b", "fp8", [card("t4")], 4096)).refusal.code == "compute_capability"
    p100 = estimate(req("llama3-8b", "fp16", [card("p100-pcie-16gb")], 2048))
    assert p100.refusal.code == "compute_capability" and "7.0" in p100.refusal.message


def test_utilisation_below_the_weights_means_no_cache_blocks():
    r = estimate(req("llama3-8b", "bf16", [card("rtx-3090")], 8192, util=0.3))
    assert r.verdict == "no_fit" and r.refusal.code == "no_cache_blocks"


def test_mig_slices_are_never_combined_for_tensor_parallelism():
    spec = CAT.gpus["h100-sxm"]
    slices = [Device(index=f"0/{i}", name="H100 MIG 2g.20gb", total_bytes=20 * GIB, free_bytes=20 * GIB,
                     spec=spec, bandwidth_gbps=spec.bandwidth_gbps * 0.25, parent="GPU-0") for i in range(3)]
    r = estimate(req("llama3-8b", "bf16", slices, 8192))
    assert r.placement.tensor_parallel == 1 and sum(1 for d in r.devices if d.needed_bytes) <= 1


def test_llama33_70b_fp8_on_two_h100s_is_tensor_parallel_2():
    r = estimate(req("llama3.3-70b", "fp8", [card("h100-sxm", i=i) for i in range(2)], 8192))
    assert r.verdict in ("fits", "tight") and r.placement.tensor_parallel == 2
    assert "--tensor-parallel-size 2" in r.engine_args["vllm"]


def test_flags_do_not_pin_max_num_seqs_unless_batch_was_given():
    r = estimate(req("llama3-8b", "bf16", [card("h100-sxm")], 8192))
    assert "--max-num-seqs" not in r.engine_args["vllm"]
    two = estimate(dataclasses.replace(req("llama3-8b", "bf16", [card("h100-sxm")], 8192), batch=2, batch_given=True))
    assert "--max-num-seqs 2" in two.engine_args["vllm"]


# ---- the server's own command line ---------------------------------------------------------------------
def test_parse_vllm_serve_flags():
    c = vllm.parse_command(["serve", "Qwen/Qwen3-8B", "--tensor-parallel-size", "2", "--max-model-len=32768",
                            "--gpu-memory-utilization", "0.85", "--kv-cache-dtype", "fp8", "--enforce-eager",
                            "--port", "8000", "--some-new-flag"], {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert (c.model, c.context, c.gpu_memory_utilization, c.kv_dtype, c.gpus) == ("Qwen/Qwen3-8B", 32768, 0.85, "fp8", "0,1")
    assert c.settings == {"tensor_parallel_size": 2, "enforce_eager": True}
    assert c.ignored == ("--port",) and c.unknown == ("--some-new-flag",)
    old = vllm.parse_command(["--model", "m", "--tensor_parallel_size", "4", "--dtype", "half"], {})
    assert old.model == "m" and old.settings["tensor_parallel_size"] == 4 and old.quant == "fp16"


@pytest.mark.parametrize("argv, words", [
    (["serve"], "names no model"),
    (["serve", "m", "--max-model-len", "lots"], "--max-model-len 'lots'"),
    (["serve", "m", "--gpu-memory-utilization", "1.5"], "must be in (0, 1]"),
    (["serve", "m", "--quantization", "fp9"], "did you mean"),
    (["serve", "m", "--tensor-parallel-size"], "needs a value"),
])
def test_bad_vllm_flags_are_usage_errors(argv, words):
    with pytest.raises(UsageError, match=None) as e:
        vllm.parse_command(argv, {})
    assert words in str(e.value)


def test_engine_versions_map_to_families():
    assert engine("vllm@0.18").version == "0.18" and engine("vllm@0.10.1").version == "0.18"
    assert engine("vllm@0.6.4").version == "0.6" and engine("vllm@0.6.6").version == "0.7"
    assert engine("vllm@0.19").version is None
    with pytest.raises(UsageError):
        engine("vllm@latest-ish")


def test_cpu_offload_gb_and_block_size_flags_change_the_pool():
    base = req("llama3-8b", "bf16", [card("rtx-3090")], 8192)
    r0 = estimate(base)
    off = estimate(dataclasses.replace(base, engine_settings={"cpu_offload_gb": 4}))
    # 4 GiB of weights per GPU in host memory: 4 GiB more for the KV pool (in 16-token blocks of 32 layers)
    assert off.engine_memory.weights_bytes == r0.engine_memory.weights_bytes - 4 * GIB
    assert off.engine_memory.kv_pool_bytes - r0.engine_memory.kv_pool_bytes == pytest.approx(4 * GIB, abs=2 * 2**21)
    big = estimate(dataclasses.replace(base, engine_settings={"block_size": 32}))
    # blocks of 32 tokens: the pool holds whole 32-token blocks
    assert big.engine_memory.kv_pool_tokens % 32 == 0
    assert abs(big.engine_memory.kv_pool_tokens - r0.engine_memory.kv_pool_tokens) <= 32


def test_weights_larger_than_the_free_memory_fail_at_load():
    r = estimate(req("llama3.1-405b", "int8", [card("rtx-3090")], 8192))
    assert r.refusal.code == "oom_at_load" and "CUDA out of memory while loading" in r.refusal.message


def test_a_tensor_parallel_size_that_does_not_divide_the_heads_is_refused():
    devs = [card("rtx-3090", i=i) for i in range(3)]
    r = estimate(req("llama3-8b", "bf16", devs, 8192, tensor_parallel_size=3))
    assert r.verdict == "no_fit" and r.refusal.code == "tensor_parallel_invalid"
    assert "Total number of attention heads (32) must be divisible by tensor parallel size (3)" in r.refusal.message
    more = estimate(req("llama3-8b", "bf16", devs[:1], 8192, tensor_parallel_size=2))
    assert more.refusal.code == "not_enough_gpus"


def test_qwen3_next_hybrid_pages_hold_a_deltanet_state():
    # 12 full-attention layers (2 KV heads x 256) and 36 gated-DeltaNet layers with a fixed state
    m = CAT.model("qwen3-next-80b-a3b")
    r = req("qwen3-next-80b-a3b", "bf16", [card("h100-sxm")], 32768)
    lay = vllm.kv_layout(r, 1)
    state = m.linear_state_elems * 2  # one sequence's state of one layer, bf16
    per_token = 2 * 2 * 256 * 2  # attention bytes per token and layer
    # vLLM raises the attention block to a multiple of 16 tokens whose page holds one state
    block = 16 * -(-state // (16 * per_token))
    assert (m.linear_layers, lay.block_size) == (36, block) and block == 544
    page = block * per_token
    attn_blocks = -(-32768 // block)
    assert lay.request_bytes(32768, 8192) == 12 * attn_blocks * page + 36 * page == 855_638_016


def test_deepseek_v32_mla_pages_carry_the_indexer_keys():
    m = CAT.model("deepseek-v3.2")
    r = req("deepseek-v3.2", "fp8", [card("h200")], 32768)
    lay = vllm.kv_layout(r, 1)
    per_token = (512 + 64) * 2 + m.indexer_head_dim + m.indexer_head_dim // 128 * 4  # latent bf16 + fp8 key + scale
    assert lay.request_bytes(32768, 8192) == 61 * 32768 * per_token == 2_566_520_832


def test_nemotron_h_mlp_only_layers_cache_nothing():
    m = CAT.model("nemotron-nano-9b-v2")
    kinds = {k.kind: k.count for k in vllm.layer_kinds(req("nemotron-nano-9b-v2", "bf16", [card("h100-sxm")], 32768), 1)}
    assert kinds == {"full": m.layers - m.linear_layers - m.mlp_only_layers, "linear": m.linear_layers}
    assert m.mlp_only_layers == 25 and kinds["full"] == 4


def test_vllm_reads_human_readable_integers_as_vllm_does():
    # vllm/engine/arg_utils.py human_readable_int: lower case decimal, upper case binary
    assert vllm.human_readable_int("32k") == 32_000 and vllm.human_readable_int("4G") == 4 * 2**30
    assert vllm.human_readable_int("1.5m") == 1_500_000 and vllm.human_readable_int("8192") == 8192
    c = vllm.parse_command(["serve", "m", "--max-model-len", "32k", "--kv-cache-memory-bytes", "4G"], {})
    assert c.context == 32_000 and c.settings["kv_cache_memory_bytes"] == 4 * 2**30
    with pytest.raises(UsageError, match="4 GiB"):
        vllm.parse_command(["serve", "m", "--kv-cache-memory-bytes", "1.5G"], {})


def test_a_bf16_refusal_offers_fp16_as_vllm_suggests():
    from gpufit.estimator.alternatives import Candidates

    r = estimate(req("llama3.2-3b", "bf16", [card("rtx-2080-ti")], 4096),
                 candidates=Candidates(quants=tuple(CAT.quants.values())))
    alt = [a for a in r.alternatives if a.kind == "engine_setting"]
    assert r.refusal.code == "compute_capability"
    assert alt and alt[0].changes == {"quant": "fp16"} and alt[0].verdict in ("fits", "tight")
