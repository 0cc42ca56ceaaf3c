"""Ollama as its scheduler places a model: version families and their defaults, the memory.go estimate
(KV per layer, graph sizes, per-GPU admission, layers from the last block down, the output layer last),
its environment and `ollama run` command lines. Figures by hand, or from the public server log named."""

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpufit.catalog import load_catalog
from gpufit.cli import cli
from gpufit.errors import UsageError
from gpufit.estimator.engines import ollama as O
from gpufit.estimator.fit import estimate
from gpufit.estimator.placement import Sizer
from gpufit.estimator.types import Device, FitRequest

CAT = load_catalog()
GIB = 2**30
MIB = 2**20
SNAP = Path(__file__).parent / "fixtures" / "nvidia-smi" / "influxdata_telegraf__dual_a5000-v13.xml"


def req(model, quant, context, free_gib=(24.0,), batch=1, version="0.12", **settings):
    devs = tuple(Device(index=str(i), name="gpu", total_bytes=int(f * GIB), free_bytes=int(f * GIB))
                 for i, f in enumerate(free_gib))
    return FitRequest(model=CAT.model(model), quant=CAT.quant(quant), kv_dtype=CAT.kv_dtype("fp16"),
                      context=context, batch=batch, engine="ollama", devices=devs, engine_version=version,
                      engine_settings=settings)


# gpt-oss-20b's blocks as Ollama converts it (convert/convert_gptoss.go): the experts MXFP4, the rest
# BF16. Attention 2880 x 4096 (q) + 2 x 2880 x 512 (k, v) + 4096 x 2880 (o) + (64 + 16) x 64 bias
# = 26,547,200 and the router 2880 x 32 = 92,160, 2 bytes each; 32 experts x 3 x 2880 x 2880 at 17 bytes
# / 32; two F32 norms. The log of ollama/ollama#11711 shows 10.7 GiB of blocks (24 x 0.446 GiB).
GPT_OSS_20B_BLOCK = (26547200 + 92160) * 2 + 32 * 3 * 2880 * 2880 * 17 // 32 + 2 * 2880 * 4
SWA_CELL = 8 * 64 * 2 * 2  # 8 KV heads x 64 x (K + V) x 2 bytes = 2 KiB a cell


def test_gpt_oss_20b_block_is_mxfp4_experts_and_bf16_attention():
    assert GPT_OSS_20B_BLOCK == 476316160
    assert O.layer_weights(CAT.model("gpt-oss-20b"), CAT.quant("mxfp4")) == [GPT_OSS_20B_BLOCK] * 24


def test_gpt_oss_20b_on_ollama_at_4k():
    """fs/ggml/ggml.go (v0.12.x): gpt-oss's even layers slide with 4096 x slots + batch cells; its graph
    is 2 x heads / KV heads x kvTotal / 6, kvTotal being the full context on every layer (summed before
    the sliding layers' sizes replace it), and with flash attention (4 x slots + ctx / 1024 + 110) MiB."""
    r = req("gpt-oss-20b", "mxfp4", 4096)
    kv = 12 * (4096 + 512) * SWA_CELL + 12 * 4096 * SWA_CELL
    assert Sizer(r).kv(24) == kv == 213909504
    est = O.estimate_gpu_layers(r, [24 * GIB], 4096, 1, "f16", False)
    kv_total = 24 * 4096 * SWA_CELL  # 192 MiB
    assert est.required_kv == kv and est.graph_partial == est.graph_full == 16 * kv_total // 6 == 512 * MIB
    # 24 GiB holds it all: 457 MiB + blk.0 (with its KV) + every block with its KV + the output layer
    # (output_norm F32 + a BF16 201088 x 2880 head) + the full graph
    output = 2880 * 4 + 201088 * 2880 * 2
    assert est.layers == 25 and est.output_bytes == output
    assert est.required_full == (457 * MIB + GPT_OSS_20B_BLOCK + (4096 + 512) * SWA_CELL
                                 + 24 * GPT_OSS_20B_BLOCK + kv + output + 512 * MIB)
    fa = O.estimate_gpu_layers(r, [24 * GIB], 4096, 1, "f16", True)
    assert fa.graph_partial == (4 + 4 + 110) * MIB


def test_gpt_oss_20b_on_ollama_0_11_3_with_3_6_gib_takes_one_layer():
    """ollama/ollama#11769 (0.11.3): gpt-oss:20b, 3.6 GiB available -> layers.offload=1,
    memory.required.partial 3.4 GiB. Before v0.11.4 gpt-oss gets num_ctx 8192 whatever the VRAM; at
    0.11.3 its graph is 4 x 64 / 8 x kvTotal / 6 for full and partial alike (fcec04bf4), kvTotal =
    24 x 8192 x 2 KiB = 384 MiB -> 2 GiB."""
    eng = O.for_version("0.11.3")
    devs = (Device(index="0", name="g", total_bytes=4 * GIB, free_bytes=int(3.6 * GIB)),)
    assert eng.default_context(CAT.model("gpt-oss-20b"), devs)[0] == 8192
    r = req("gpt-oss-20b", "mxfp4", 8192, free_gib=(3.6,), version="0.11.3")
    est = O.estimate_gpu_layers(r, [int(3.6 * GIB)], 8192, 1, "f16", False, fam=eng.family)
    assert est.graph_partial == est.graph_full == 2 * GIB
    # the minimum, blk.0 (a sliding layer: 4096 + 512 cells) held back, blk.23 (full: 8192 cells), the graph
    partial = 457 * MIB + (GPT_OSS_20B_BLOCK + 4608 * SWA_CELL) + (GPT_OSS_20B_BLOCK + 8192 * SWA_CELL) + 2 * GIB
    assert est.layers == 1 and est.required_partial == partial == 3605529600  # 3.36 GiB, "3.4 GiB"
    # 0.11.0 - 0.11.2 charged the partial graph twice the full (before fcec04bf4)
    old = O.estimate_gpu_layers(r, [int(3.6 * GIB)], 8192, 1, "f16", False, fam=O.for_version("0.11.2").family)
    assert old.graph_partial == 2 * old.graph_full == 4 * GIB


def test_a_2_gpu_split_as_the_deepseek_r1_32b_log_shows():
    """github.com/ollama/ollama/issues/8961 (memory.go:356, 2025-02-13: v0.5.8): deepseek-r1:32b (Q4_K_M)
    at num_ctx 128000 on two GPUs with 23.4 / 23.2 GiB available: layers.offload=24 split=12,12,
    kv 31.2 GiB, graph 12.5 GiB, allocations 22.9 / 22.8 GiB."""
    fam = O.for_version("0.5.8").family
    assert fam.ascending and fam.uniform_kv and fam.num_ctx == 2048 and fam.parallel == 4
    r = req("deepseek-r1-distill-qwen-32b", "q4_k_m", 128000, free_gib=(23.4, 23.2), version="0.5.8")
    # Qwen2.5-32B blk.0 in Q4_K_M: attn_q / attn_k / attn_output (+ q/k/v bias) and ffn_gate / ffn_up in
    # Q4_K (4.5 bits); attn_v and ffn_down in Q6_K (6.5625 bits) on the first eighth of the layers;
    # two F32 norms
    q, k, o, bias, gate_up, down = 5120 * 5120, 5120 * 1024, 5120 * 5120, 56 * 128, 2 * 5120 * 27648, 5120 * 27648
    heavy = ((q + k + o + bias + gate_up) * 4.5 + (k + down) * 6.5625 + 2 * 5120 * 32) / 8
    light = ((q + k + o + bias + gate_up + k + down) * 4.5 + 2 * 5120 * 32) / 8
    blks = O.layer_weights(r.model, r.quant)
    assert blks[0] == int(heavy) == 312160192 and blks[8] == int(light) == 274313152
    used, est = O.schedule(r, [int(23.4 * GIB), int(23.2 * GIB)], 128000, 1, "f16", False, fam=fam)
    assert used == [0, 1] and est.layers == 24 and est.split == (12, 12)
    assert est.required_kv == 64 * 128000 * 2 * 8 * 128 * 2  # 31.25 GiB
    assert round(est.graph_partial / GIB, 1) == 12.5
    assert [round(a / GIB, 1) for a in est.allocations] == [22.9, 22.8]


def test_before_0_7_layers_fill_from_blk_0_and_the_rest_count_at_the_last_blocks_size():
    """llm/memory.go before v0.7.0: blocks placed from blk.0 up; each layer left over counted at the last
    block's size. DeepSeek-R1 671B's first three (dense) blocks fit a 6.9 GiB card, the fourth (MoE) does
    not (ollama/ollama#8667: layers.offload=3); required.full is the partial figure plus 58 x the last
    block with its KV plus the output layer."""
    fam = O.for_version("0.5.11").family
    r = req("deepseek-r1", "q4_k_m", 2048, free_gib=(6.9,), version="0.5.11")
    est = O.estimate_gpu_layers(r, [int(6.9 * GIB)], 2048, 1, "f16", False, fam=fam)
    blks = O.layer_weights(r.model, r.quant)
    kv_layer = 2048 * 128 * (128 + 64 + 128) * 2  # 2048 cells x 128 heads x (K 192 + V 128) x 2 bytes
    assert est.layers == 3 and est.required_kv == 61 * kv_layer
    assert est.required_full - est.required_partial == 58 * (blks[-1] + kv_layer) + est.output_bytes
    # the last block is a use_more_bits layer (Q6_K ffn_down_exps), larger than the MoE blocks between
    assert blks[-1] > blks[10] > blks[0]


def test_a_gpu_too_small_for_graph_minimum_and_two_layers_gets_none():
    r = req("llama3.1-8b", "q4_k_m", 4096)
    big, est = O.schedule(r, [20 * GIB, int(0.6 * GIB)], 4096, 1, "f16", False)
    assert big == [0] and est.split == (33,)  # the whole model fits the larger card alone
    est = O.estimate_gpu_layers(r, [int(2.5 * GIB), int(0.6 * GIB)], 4096, 1, "f16", False)
    assert est.split[1] == 0 and 0 < est.split[0] < 33


def test_partial_offload_is_what_the_engine_plans():
    r = req("llama3.1-8b", "q4_k_m", 4096, free_gib=(3.0,))
    r = FitRequest(**{**r.__dict__, "host_ram_available_bytes": 32 * GIB})
    res = estimate(r, alternatives=False)
    est = res.engine_memory.extra
    assert res.placement.strategy == "cpu_offload"
    assert res.placement.gpu_layers == est["layers"]["offload"] < 33


@pytest.mark.parametrize("version,total_gib,ctx", [
    (None, 8, 4096), (None, 24, 32768), (None, 48, 131072),  # by VRAM, capped at Llama 3.1's 131072
    ("0.6", 24, 2048), ("0.9", 24, 4096), ("0.12", 80, 4096),
])
def test_default_num_ctx_per_version(version, total_gib, ctx):
    eng = O.for_version(version)
    devs = (Device(index="0", name="g", total_bytes=total_gib * GIB, free_bytes=total_gib * GIB),)
    assert eng.default_context(CAT.model("llama3.1-8b"), devs)[0] == ctx


def test_the_current_release_is_said_and_older_ones_are_asked_for():
    r = CliRunner().invoke(cli, ["plan", "qwen3:4b", "--gpu", "rtx-4090", "--json"])
    d = json.loads(r.stdout)
    assert d["context"] == 32768 and any("current release" in n for n in (x["message"] for x in d["notes"]))
    r = CliRunner().invoke(cli, ["plan", "qwen3:4b", "--gpu", "rtx-4090", "--engine", "ollama@0.6", "--json"])
    d = json.loads(r.stdout)
    assert d["engine"] == "ollama@0.6" and d["context"] == 2048
    assert d["engine_memory"]["layers"]["offload"] == 37 and d["engine_memory"]["required"]["kv_bytes"] > 0
    bad = CliRunner().invoke(cli, ["plan", "qwen3:4b", "--gpu", "rtx-4090", "--engine", "ollama@0.2"])
    assert bad.exit_code == 2 and "did you mean" in bad.output


def test_ollama_run_and_its_environment():
    env = {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_FLASH_ATTENTION": "1",
           "OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_GPU_OVERHEAD": "536870912", "OLLAMA_SCHED_SPREAD": "true",
           "CUDA_VISIBLE_DEVICES": "1"}
    c = O.parse_command(["run", "qwen3", "--verbose"], env)
    assert (c.model, c.context, c.batch, c.kv_dtype, c.gpus) == ("qwen3:latest", 8192, 2, "q8_0", "1")
    assert c.settings["gpu_overhead"] == 512 * MIB and c.settings["flash_attn"] and c.settings["sched_spread"]
    c = O.parse_command(["run", "qwen3:4b"], {"OLLAMA_KV_CACHE_TYPE": "q4_0"})
    assert c.kv_dtype is None and "ignored without OLLAMA_FLASH_ATTENTION" in c.notes[0]


@pytest.mark.parametrize("argv,env,words", [
    (["run", "qwen3:4b"], {"OLLAMA_NUM_PARALLEL": "two"}, "OLLAMA_NUM_PARALLEL='two'"),
    (["run", "qwen3:4b"], {"OLLAMA_FLASH_ATTENTION": "sometimes"}, "OLLAMA_FLASH_ATTENTION"),
    (["run", "qwen3:4b"], {"OLLAMA_KV_CACHE_TYPE": "q5_0"}, "OLLAMA_KV_CACHE_TYPE"),
    (["serve"], {}, "ollama serve loads models on request"),
    (["run"], {}, "names no model"),
])
def test_bad_ollama_input_is_a_usage_error(argv, env, words):
    with pytest.raises(UsageError) as e:
        O.parse_command(argv, env)
    assert words in str(e.value)


def test_check_reads_ollama_run_with_the_server_environment():
    r = CliRunner().invoke(cli, ["check", "--snapshot", str(SNAP), "--json", "--", "ollama", "run", "qwen3:4b"],
                           env={"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_CONTEXT_LENGTH": "2048"})
    assert "Traceback" not in r.output
    d = json.loads(r.stdout)
    assert (d["engine"], d["model"]["key"], d["quant"], d["context"], d["batch"]) == (
        "ollama", "qwen3-4b", "q4_k_m", 2048, 2)


def test_here_reads_the_ollama_environment_of_the_box():
    env = {"OLLAMA_NUM_PARALLEL": "3", "OLLAMA_CONTEXT_LENGTH": "2048"}
    r = CliRunner().invoke(cli, ["here", "qwen3:4b", "--snapshot", str(SNAP), "--json"], env=env)
    d = json.loads(r.stdout)
    assert (d["engine"], d["context"], d["batch"]) == ("ollama", 2048, 3)
    assert any("OLLAMA_NUM_PARALLEL=3" in n for n in (x["message"] for x in d["notes"]))
    bad = CliRunner().invoke(cli, ["here", "qwen3:4b", "--snapshot", str(SNAP)], env={"OLLAMA_NUM_PARALLEL": "x"})
    assert bad.exit_code == 2 and "OLLAMA_NUM_PARALLEL" in bad.output


def test_older_releases_try_their_default_slots_first():
    """github.com/ollama/ollama/issues/9415 (0.5.13, gemma2:9b on a 30.9 GiB RTX 5090): with
    OLLAMA_NUM_PARALLEL unset the scheduler tries 4 slots of num_ctx 2048 first; they fit, so the
    runner caches 8192 cells: 42 layers x 8192 x (8 KV heads x 256 x 2) x 2 bytes = 2.625 GiB (the
    log's kv 2.6 GiB)."""
    fam = O.FAMILIES["0.6"]
    r = req("gemma2-9b", "q4_0", 2048, free_gib=(30.9,), version="0.6")
    par, used, est = O.schedule_default_parallel(r, [int(30.9 * GIB)], fam, 2048, "f16", False)
    assert par == 4 and est.required_kv == 42 * 8192 * 8 * 256 * 2 * 2
    # on a card that cannot hold 4 slots it falls back to one
    par, _, _ = O.schedule_default_parallel(r, [int(6.2 * GIB)], fam, 2048, "f16", False)
    assert par == 1


@pytest.mark.parametrize("version,release,ctx,par,ascending", [
    ("0.5", (0, 5, 13), 2048, 4, True),
    ("0.6", (0, 6, 6), 2048, 4, True),
    ("0.6.8", (0, 6, 8), 4096, 2, True),  # the defaults moved in 0.6.7, the placement order in 0.7.0
    ("0.7", (0, 9, 6), 4096, 2, False),
    ("0.10", (0, 11, 11), 4096, 1, False),
    ("v0.5.4-0-g2ddc32d-dirty", (0, 5, 4), 2048, 4, True),
])
def test_a_release_or_a_line_selects_its_family(version, release, ctx, par, ascending):
    fam = O.for_version(version).family
    assert (fam.release, fam.num_ctx, fam.parallel, fam.ascending) == (release, ctx, par, ascending)


@pytest.mark.parametrize("version", ["0.2", "0.13.0", "0.1.30", "1.0", "0.11.99", "garbage"])
def test_releases_outside_the_memory_go_estimate_are_refused(version):
    with pytest.raises(UsageError) as e:
        O.for_version(version)
    assert "did you mean" in str(e.value) or "Ollama version" in str(e.value)


def test_before_0_6_3_the_kv_is_one_total_spread_evenly():
    """fs/ggml/ggml.go before v0.6.3 returns one KV total (no sliding-window cells): Gemma 3 27B at 2048
    is 62 x 2048 x 16 KV heads x 128 x (K + V) x 2 bytes, 16 MiB a layer; from v0.6.3 its local layers
    keep 1024 + 512 cells and every 6th layer the whole context."""
    r = req("gemma3-27b", "q4_k_m", 2048, version="0.6.2")
    old = O.kv_per_layer(r, "f16", 2048, 1, O.for_version("0.6.2").family)
    assert old == [2048 * 16 * 128 * 2 * 2] * 62
    new = O.kv_per_layer(r, "f16", 2048, 1, O.for_version("0.6.5").family)
    assert new[5] == old[5] and new[0] == 1536 * 8192 and sum(new) == (52 * 1536 + 10 * 2048) * 8192


def test_before_0_7_1_the_vision_projector_is_charged_to_gpu_0_first():
    """ollama/ollama#10765 (v0.7.0): gemma3 4B on 3.2 GiB gets 0 layers -- the card must hold the
    projector's weights and graph (795.9 MiB + 1.0 GiB) beside the graph, the minimum and two layers
    up front -- and required.full (2.6 GiB) leaves out the projector no GPU took. Since v0.7.1 the
    projector rides with the output layer."""
    fam = O.for_version("0.7.0").family
    r = req("gemma3-4b", "q4_k_m", 4096, free_gib=(3.2,), version="0.7.0")
    est = O.estimate_gpu_layers(r, [int(3.2 * GIB)], 4096, 1, "f16", False, fam=fam)
    proj_w, proj_g = O.projector_bytes(r.model)
    blocks, kv = sum(O.layer_weights(r.model, r.quant)), sum(O.kv_per_layer(r, "f16", 4096, 1, fam))
    assert est.layers == 0 and est.required_full == blocks + kv + O.output_layer_bytes(r.model, r.quant)
    assert round(est.required_full / GIB, 1) == 2.6 and proj_w + proj_g > GIB
    later = O.estimate_gpu_layers(r, [int(3.2 * GIB)], 4096, 1, "f16", False, fam=O.for_version("0.7.1").family)
    assert later.output_bytes == O.output_layer_bytes(r.model, r.quant) + proj_w + proj_g and later.layers > 0


def test_a_2_gpu_split_from_blk_0_up_as_the_llama_70b_log_shows():
    """ollama/ollama#7403 (memory.go:326, v0.3.10 - 0.3.14): a Llama 3.x 70B Q4_K_M at num_ctx 2048 on
    11.5 + 10.7 GiB: layers.split=19,17, allocations 11.2 / 10.3 GiB, graph 1.1 GiB. Blocks go round-robin
    from blk.0 (even ones to the first GPU) until the second is full. Each layer's KV: 2048 x 8 x 128 x 2
    x 2 = 8 MiB; the partial graph is llama's vocab term, 4 x 512 x (8192 + 128256) + 8192 x 128256 x
    105 / 128, plus 4 x 512 x 8192."""
    fam = O.for_version("0.3.14").family
    r = req("llama3.1-70b", "q4_k_m", 2048, free_gib=(11.5, 10.7), version="0.3.14")
    assert O.kv_per_layer(r, "f16", 2048, 1, fam) == [8 * MIB] * 80
    partial, full = O.graph_sizes(r, 2048, 1, 80 * 8 * MIB, False, fam)
    assert partial == 4 * 512 * (8192 + 128256) + 8192 * 128256 * 105 // 128 + 4 * 512 * 8192 == 1158103040
    used, est = O.schedule(r, [int(11.5 * GIB), int(10.7 * GIB)], 2048, 1, "f16", False, fam=fam)
    assert used == [0, 1] and est.layers == 36 and est.split == (19, 17)
    assert [round(a / GIB, 1) for a in est.allocations] == [11.2, 10.3]


def test_plan_names_the_release_and_its_figures():
    """`--engine ollama@0.11.2`: gpt-oss gets num_ctx 8192 (before 0.11.4 whatever the VRAM) and a partial
    graph twice the full one (2 and 4 GiB at 8192: 32 x 24 x 8192 x 2 KiB / 6)."""
    r = CliRunner().invoke(cli, ["plan", "gpt-oss:20b", "--gpu", "rtx-4060-ti-16gb", "--engine", "ollama@0.11.2",
                                 "--json"])
    d = json.loads(r.stdout)
    assert d["engine"] == "ollama@0.11.2" and d["context"] == 8192
    g = d["engine_memory"]["graph"]
    assert g["full_bytes"] == 2 * GIB and g["partial_bytes"] == 4 * GIB


def test_the_weights_the_gpus_hold_are_the_blocks_placed():
    """ollama/ollama#11769 (0.11.3, 3.6 GiB): one block (blk.23) on the GPU, nothing else."""
    r = req("gpt-oss-20b", "mxfp4", 8192, free_gib=(3.6,), version="0.11.3")
    est = O.estimate_gpu_layers(r, [int(3.6 * GIB)], 8192, 1, "f16", False, fam=O.for_version("0.11.3").family)
    assert est.gpu_weights == GPT_OSS_20B_BLOCK


@pytest.mark.parametrize("version,env,fa", [
    ("0.11.7", None, False), ("0.11.8", None, True), ("0.11.8", False, True),  # the model's wish wins ...
    ("0.12.4", False, False), ("0.12.4", None, True),  # ... until OLLAMA_FLASH_ATTENTION=0 may refuse it
])
def test_gpt_oss_flash_attention_by_release(version, env, fa):
    settings = {} if env is None else {"flash_attn": env}
    r = req("gpt-oss-20b", "mxfp4", 8192, version=version, **settings)
    assert O.for_version(version).flash_attn(r) is fa


def test_an_output_layer_left_in_host_ram_is_said():
    """#11711's card (0.11.2, gpt-oss:20b, 16 GiB free): the estimate places all 24 blocks but not the
    1.1 GiB BF16 output layer (graph 4 GiB partial): layers.offload=24 of 25."""
    r = req("gpt-oss-20b", "mxfp4", 8192, free_gib=(16.0,), version="0.11.2")
    eng = O.for_version("0.11.2")
    assert eng.estimate(r)[1].layers == 24
    from gpufit.render.words import word

    assert any("output layer (1.1 GiB) in host RAM: layers.offload=24 of 25" in word(n) for n in eng.notes(r))
    res = estimate(dataclasses.replace(r, host_ram_available_bytes=64 * 2**30), alternatives=False)
    assert res.verdict == "offload" and res.placement.gpu_layers == 24  # the head is computed on the CPU
    note = next(n for n in res.notes if n.code == "ollama_output_on_host")
    assert (note.data["offload"], note.data["layers"]) == (24, 25)  # figures, worded by render
