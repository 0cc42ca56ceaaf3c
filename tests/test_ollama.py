"""Ollama as its scheduler places a model: version families and their defaults, the memory.go estimate
(KV per layer, graph sizes, per-GPU admission, layers from the last block down, the output layer last),
its environment and `ollama run` command lines. Figures by hand, or from the public server log named."""

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


def test_gpt_oss_20b_at_4k_keeps_4096_plus_a_batch_on_its_sliding_layers():
    """fs/ggml/ggml.go: gpt-oss's even layers slide with 4096 x slots + batch cells; 8 KV heads x 64
    x (K + V) x 2 bytes = 2 KiB a cell."""
    r = req("gpt-oss-20b", "mxfp4", 4096)
    kv = 12 * (4096 + 512) * 2048 + 12 * 4096 * 2048
    assert Sizer(r).kv(24) == kv == 213909504
    # no flash attention: graph = 2 x heads / KV heads x kv / 6, partial and full alike
    est = O.estimate_gpu_layers(r, [24 * GIB], 4096, 1, "f16", False)
    assert est.required_kv == kv and est.graph_partial == est.graph_full == 2 * 64 // 8 * kv // 6
    # with it, Ollama's rough flash-attention graph: (4 x slots + ctx / 1024 + 110) MiB
    fa = O.estimate_gpu_layers(r, [24 * GIB], 4096, 1, "f16", True)
    assert fa.graph_partial == (4 + 4 + 110) * MIB


def test_a_2_gpu_split_as_the_deepseek_r1_32b_log_shows():
    """github.com/ollama/ollama/issues/8961: deepseek-r1:32b (Q4_K_M) at num_ctx 128000 on two GPUs
    with 23.4 / 23.2 GiB available: layers.offload=24 split=12,12, kv 31.2 GiB, graph 12.5 GiB."""
    r = req("deepseek-r1-distill-qwen-32b", "q4_k_m", 128000, free_gib=(23.4, 23.2))
    used, est = O.schedule(r, [int(23.4 * GIB), int(23.2 * GIB)], 128000, 1, "f16", False)
    assert used == [0, 1] and est.layers == 24 and est.split == (12, 12)
    assert est.required_kv == 64 * 128000 * 2 * 8 * 128 * 2  # 31.25 GiB
    assert round(est.graph_partial / GIB, 1) == 12.5
    assert [round(a / GIB, 1) for a in est.allocations] == [22.8, 22.8]  # the log: 22.9;22.8


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
