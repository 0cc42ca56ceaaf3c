"""The command line as a user meets it: the seed questions, JSON contract, exit codes, bad input."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpufit.cli import cli
from gpufit.errors import ProbeError

FIX = Path(__file__).parent / "fixtures" / "nvidia-smi"
DUAL_A5000 = FIX / "influxdata_telegraf__dual_a5000-v13.xml"
V100S_8 = FIX / "GuanceCloud_datakit__gtx-8card.xml"
H100 = FIX / "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"
GIB = 2**30

FIT_KEYS = {"schema", "model", "quant", "kv_dtype", "context", "batch", "engine", "verdict", "memory",
            "devices", "placement", "performance", "alternatives", "engine_args", "warnings", "notes"}


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env)


def fit_json(*args, env=None):
    r = run(*args, "--json", env=env)
    assert "Traceback" not in r.output
    return r, json.loads(r.stdout)


def test_405b_int8_on_a_3090_does_not_fit_and_says_what_would():
    r, d = fit_json("plan", "llama3.1-405b", "--gpu", "rtx-3090", "--quant", "int8")
    assert r.exit_code == 3
    assert set(d) >= FIT_KEYS and d["schema"] == "gpufit.fit/1"
    assert d["verdict"] == "no_fit"
    # about 405 GB of weights against 24 GiB on the card
    assert 400e9 < d["memory"]["weights_bytes"] < 420e9
    assert d["devices"][0]["total_bytes"] == 24 * GIB
    assert d["devices"][0]["headroom_bytes"] < -350 * GIB
    kinds = {a["kind"]: a for a in d["alternatives"]}
    # not even 4-bit fits; N cards of this kind and of H100s would; a smaller Llama would
    assert "not even 4-bit" in kinds["quant"]["summary"]
    gpus = [a for a in d["alternatives"] if a["kind"] == "gpus"]
    assert any(a["changes"]["gpu"].startswith("rtx-3090:") for a in gpus)
    assert any(a["changes"]["gpu"].startswith("h100-sxm:") for a in gpus)
    h100 = next(a for a in gpus if a["changes"]["gpu"].startswith("h100-sxm:"))
    assert 6 <= int(h100["changes"]["gpu"].split(":")[1]) <= 8
    assert kinds["model"]["changes"]["model"] in ("llama3.1-8b", "llama3-8b")


def test_405b_text_output_states_the_deficit():
    r = run("plan", "llama3.1-405b", "--gpu", "rtx-3090", "--quant", "int8")
    assert r.exit_code == 3
    assert "DOES NOT FIT" in r.stdout and "short by" in r.stdout and "What would fit instead" in r.stdout


def test_8b_int8_on_a100_40gb_fits_with_about_30gb_headroom():
    r, d = fit_json("plan", "llama3-8b", "--gpu", "a100-sxm4-40gb", "--quant", "int8")
    assert r.exit_code == 0
    assert d["verdict"] == "fits"
    assert 8e9 < d["memory"]["weights_bytes"] < 9.5e9  # int8 body, 16-bit embeddings and head
    assert 28e9 < d["devices"][0]["headroom_bytes"] < 34e9
    perf = d["performance"]
    assert perf["decode_tokens_per_s"] > 50
    assert perf["max_context"] == 8192 and perf["max_batch"] >= 16
    assert perf["basis"]["bandwidth_gbps"] == 1555
    assert "vllm serve meta-llama/Meta-Llama-3-8B" in d["engine_args"]["vllm"]


def test_options_change_the_answer_the_way_they_should():
    _, base = fit_json("plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "4096")
    _, longer = fit_json("plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "8192")
    _, batch = fit_json("plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "4096", "--batch", "2")
    _, fp8kv = fit_json("plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "4096", "--kv-dtype", "fp8")
    _, q4 = fit_json("plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "4096", "--quant", "q4_k_m")
    kv = base["memory"]["kv_cache_bytes"]
    assert longer["memory"]["kv_cache_bytes"] == 2 * kv == batch["memory"]["kv_cache_bytes"]
    assert fp8kv["memory"]["kv_cache_bytes"] * 2 == kv
    assert q4["memory"]["weights_bytes"] < base["memory"]["weights_bytes"] / 3
    assert q4["engine"] == "llama.cpp" and base["engine"] == "vllm"


def test_repeated_gpu_and_count_describe_several_cards():
    r, d = fit_json("plan", "llama3-70b", "--gpu", "rtx-4090:2", "--gpu", "rtx-3060", "--quant", "q4_k_m")
    assert [x["catalog_key"] for x in d["devices"]] == ["rtx-4090", "rtx-4090", "rtx-3060"]
    assert sum(x["needed_bytes"] for x in d["devices"]) >= d["memory"]["weights_bytes"] - 2 * GIB


@pytest.mark.parametrize("args,needle", [
    (["plan", "llama3-8bb", "--gpu", "rtx-3090"], "did you mean llama3-8b"),
    (["plan", "llama3-8b", "--gpu", "rtx-3099"], "did you mean"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--quant", "q4_k_z"], "unknown quantization 'q4_k_z'"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "0"], "--context"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "-5"], "--context"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--context", "100000"], "maximum context of 8192"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--batch", "0"], "--batch"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090:0"], "COUNT"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--kv-dtype", "int4"], "KV-cache dtype"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--engine", "tgi"], "unknown engine"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--reserve", "lots"], "--reserve"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--quant", "awq", "--engine", "llama.cpp"], "does not run on llama.cpp"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
    (["plan", "llama3-8b"], "--gpu"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--kv-dtype", "q8_0", "--engine", "vllm"], "vllm has no such KV cache"),
    (["plan", "llama3-8b", "--gpu", "rtx-3090", "--min-headroom", "much"], "--min-headroom"),
    (["recommend", "--gpu", "rtx-3090", "--top", "0"], "--top"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, needle):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output


def test_here_from_a_capture_uses_free_memory_not_total():
    r, d = fit_json("here", "llama3-8b", "--snapshot", str(DUAL_A5000))
    # the capture's two A5000s have 1.6 and 6.7 GiB free of 24: bf16 8B cannot fit now
    assert r.exit_code == 3 and d["verdict"] == "no_fit"
    frees = sorted(x["free_bytes"] for x in d["devices"])
    assert frees[1] < 8 * GIB and all(x["total_bytes"] > 23 * GIB for x in d["devices"])
    assert any(a["kind"] == "quant" for a in d["alternatives"])


def test_here_honours_gpus_and_cuda_visible_devices():
    _, d = fit_json("here", "llama3-8b", "--quant", "q4_k_m", "--snapshot", str(V100S_8), "--gpus", "2,5")
    assert [x["index"] for x in d["devices"]] == ["2", "5"]
    # this shell's CUDA_VISIBLE_DEVICES says nothing about the box a snapshot describes (tests/test_captures.py)
    _, d = fit_json("here", "llama3-8b", "--quant", "q4_k_m", "--snapshot", str(V100S_8),
                    env={"CUDA_VISIBLE_DEVICES": "7"})
    assert len(d["devices"]) == 8


def test_check_prints_one_line_on_stderr_and_nothing_on_stdout():
    r = run("check", "llama3-8b", "--quant", "q4_k_m", "--snapshot", str(H100))
    assert r.exit_code == 0
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("gpufit check: llama3-8b q4_k_m")


def test_check_strict_turns_tight_into_exit_4():
    # ask for more headroom than the H100 keeps after Llama 3 8B bf16: tight
    args = ["check", "llama3-8b", "--snapshot", str(H100), "--min-headroom", "70GiB"]
    assert run(*args).exit_code == 0
    assert run(*args, "--strict").exit_code == 4


def test_check_json_goes_to_stdout():
    r = run("check", "llama3.1-70b", "--snapshot", str(H100), "--json")
    d = json.loads(r.stdout)
    # 141 GB of BF16 weights on one 80 GB H100: vLLM (the default) offloads only when told to, so no fit
    assert d["verdict"] == "no_fit" and r.exit_code == 3


def test_offload_exits_4_when_host_ram_holds_the_rest():
    r, d = fit_json("plan", "llama3-70b", "--gpu", "rtx-4090", "--quant", "q4_k_m", "--ram", "64GiB")
    assert r.exit_code == 4 and d["verdict"] == "offload"
    assert d["placement"]["strategy"] == "cpu_offload"


def test_could_not_probe_exits_5_with_what_to_check(monkeypatch):
    import gpufit.probe as probe

    def boom(*a, **k):
        raise ProbeError("could not probe the GPUs: NVML library not found. Check: is the NVIDIA driver installed?")

    monkeypatch.setattr(probe, "take_snapshot", boom)
    for cmd in (["here", "llama3-8b"], ["check", "llama3-8b"], ["probe"]):
        r = run(*cmd)
        assert r.exit_code == 5, cmd
        assert "NVIDIA driver" in r.stderr and "Traceback" not in r.output


def test_unknown_model_fails_before_probing(monkeypatch):
    import gpufit.probe as probe

    monkeypatch.setattr(probe, "take_snapshot", lambda *a, **k: pytest.fail("probed"))
    r = run("here", "lama3-8b")
    assert r.exit_code == 2 and "did you mean" in r.stderr


def test_garbage_snapshot_exits_6_naming_the_file(tmp_path):
    bad = tmp_path / "box.json"
    bad.write_text("{not json")
    r = run("here", "llama3-8b", "--snapshot", str(bad))
    assert r.exit_code == 6 and "box.json" in r.stderr and "Traceback" not in r.output


def test_probe_save_then_plan_from_the_saved_snapshot(tmp_path):
    out = tmp_path / "box.json"
    r = run("probe", "--snapshot", str(DUAL_A5000), "--save", str(out))
    assert r.exit_code == 0 and out.exists()
    d = json.loads(out.read_text())
    assert d["schema"] == "gpufit.snapshot/1" and len(d["gpus"]) == 2
    r2, fit = fit_json("here", "llama3.2-1b", "--snapshot", str(out), "--engine", "llama.cpp", "--quant", "q8_0")
    assert r2.exit_code == 0 and fit["verdict"] in ("fits", "tight")
    # vLLM's 0.9 claim is more than either card has free: it refuses, with the utilisation that passes
    r3, fit = fit_json("here", "llama3.2-1b", "--snapshot", str(out))
    assert r3.exit_code == 3 and fit["refusal"]["code"] == "free_memory_below_utilization"
    assert fit["engine_memory"]["refusal"]["code"] == "free_memory_below_utilization"


def test_models_and_gpus_list_the_catalog_as_json():
    r = run("models", "--json")
    ms = json.loads(r.stdout)
    assert r.exit_code == 0 and len(ms) >= 40
    assert {"key", "name", "params", "layers"} <= set(ms[0])
    r = run("gpus", "--json")
    gs = json.loads(r.stdout)
    assert len(gs) >= 60 and {"key", "name", "memory_bytes", "bandwidth_gbps"} <= set(gs[0])
    r = run("gpus", "4090")
    assert r.exit_code == 0 and "rtx-4090" in r.stdout
    r = run("models", "qwen3", "--json")
    assert all("qwen3" in m["key"] for m in json.loads(r.stdout))
    assert run("models", "no-such-thing").exit_code == 2


def test_recommend_ranks_largest_model_that_keeps_speed():
    r = run("recommend", "--gpu", "rtx-4090", "--json", "--top", "5")
    rows = json.loads(r.stdout)
    assert r.exit_code == 0 and 1 <= len(rows) <= 5
    params = [x["params"] for x in rows]
    assert params == sorted(params, reverse=True)
    assert all(x["verdict"] in ("fits", "tight") and x["decode_tokens_per_s"] >= 10 for x in rows)
    assert "largest model" in rows[0]["rule"]


def test_help_lists_exit_codes():
    r = run("--help")
    assert r.exit_code == 0 and "Exit codes" in r.stdout


def test_recommend_skips_tight_fits_low_bit_and_tensor_only_formats():
    rows = json.loads(run("recommend", "--gpu", "rtx-4090", "--json", "--top", "50").stdout)
    from gpufit.catalog import load_catalog

    cat = load_catalog()
    assert all(x["verdict"] == "fits" for x in rows)
    assert all(cat.quant(x["quant"]).bits_per_weight >= 4.0 and not cat.quant(x["quant"]).tensor_only for x in rows)
    low = json.loads(run("recommend", "--gpu", "rtx-4090", "--json", "--top", "50", "--min-bits", "2").stdout)
    assert max(x["params"] for x in low) > max(x["params"] for x in rows)  # a 70B fits at ~2.5 bits


def test_check_without_a_driver_is_still_one_line(monkeypatch):
    import gpufit.probe as probe

    def boom(*a, **k):
        raise ProbeError("could not probe the GPUs: NVML library not found. Check: is the NVIDIA driver installed?")

    monkeypatch.setattr(probe, "take_snapshot", boom)
    r = run("check", "llama3-8b")
    assert r.exit_code == 5 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "gpufit plan llama3-8b --gpu" in r.stderr


def test_min_headroom_makes_a_fit_tight_on_plan_and_here_too():
    _, d = fit_json("plan", "llama3-8b", "--gpu", "rtx-3090")
    room = d["devices"][0]["headroom_bytes"]
    _, tight = fit_json("plan", "llama3-8b", "--gpu", "rtx-3090", "--min-headroom", str(room + 1))
    assert d["verdict"] == "fits" and tight["verdict"] == "tight"
    _, h = fit_json("here", "llama3-8b", "--quant", "q4_k_m", "--snapshot", str(H100), "--min-headroom", "79GiB")
    assert h["verdict"] == "tight"


def test_quant_alternative_on_another_engine_carries_a_kv_dtype_it_has():
    # fp8 KV is vLLM's; a GGUF alternative on llama.cpp must say which cache it assumed
    _, d = fit_json("here", "llama3-8b", "--snapshot", str(DUAL_A5000), "--kv-dtype", "fp8")
    q = next(a for a in d["alternatives"] if a["kind"] == "quant")
    assert q["changes"]["engine"] == "llama.cpp"  # no vLLM format fits in 1.6 + 6.7 GiB
    assert q["changes"]["kv_dtype"] == "fp16" and "--kv-dtype fp16" in q["summary"]


@pytest.mark.gpu
def test_here_on_real_nvml_uses_the_cards_free_memory():
    from gpufit.probe import take_snapshot

    try:
        snap = take_snapshot()
    except ProbeError as e:
        pytest.skip(f"NVML cannot initialise here: {e}")
    r, d = fit_json("here", "llama3.2-1b", "--quant", "q4_k_m")
    assert r.exit_code in (0, 3, 4)
    live = {g.uuid: g for g in snap.gpus}
    for dev in d["devices"]:
        g = live.get(dev["uuid"])
        if g is not None and g.memory.total:
            # free memory moves between two reads; the total does not
            assert dev["total_bytes"] == g.memory.total
            assert 0 <= dev["free_bytes"] <= g.memory.total
    assert d["devices"] and d["verdict"] in ("fits", "tight", "offload", "no_fit")


# ---- `check -- SERVER COMMAND LINE` ------------------------------------------------------------------
RTX3090 = FIX / "influxdata_telegraf__3090-v13.xml"


def test_check_reads_the_vllm_command_line_and_carries_the_refusal():
    # the 29000-token start of the RTX 3090 thread, on V0 accounting: refused, vLLM's words on the line
    r = run("check", "--snapshot", str(RTX3090), "--engine", "vllm@0.6", "--",
            "vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "29000", "--port", "8000")
    assert r.exit_code == 3
    assert "(kv_too_small)" in r.stderr and "max seq len (29000)" in r.stderr
    # the same flags, 20000 tokens: starts
    ok = run("check", "--snapshot", str(RTX3090), "--engine", "vllm@0.6", "--",
             "vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "20000")
    assert ok.exit_code == 0, ok.stderr


def test_check_reads_python_m_vllm_and_the_checkpoint_format():
    r, fit = fit_json("check", "--snapshot", str(H100), "--json", "--",
                      "python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen3-8B-FP8",
                      "--max-model-len", "16384", "--served-model-name", "x")
    assert r.exit_code == 0, r.stderr
    assert (fit["model"]["key"], fit["quant"], fit["context"]) == ("qwen3-8b", "fp8", 16384)
    assert fit["engine_memory"]["kv_pool_tokens"] > 16384
    assert any("--served-model-name" in n for n in (x["message"] for x in fit["notes"]))


@pytest.mark.parametrize("argv, words", [
    (("--", "tgi-launcher", "--model", "x"), "server program"),
    (("--", "vllm", "serve"), "names no model"),
    (("--", "vllm", "serve", "llama3-8b", "--max-model-len", "x"), "--max-model-len 'x'"),
    (("--context", "4096", "--", "vllm", "serve", "llama3-8b", "--max-model-len", "8192"), "contradicts"),
    ((), "give MODEL"),
])
def test_check_server_command_bad_input_is_a_usage_error(argv, words):
    r = run("check", "--snapshot", str(RTX3090), *argv)
    assert r.exit_code == 2 and words in r.stderr and "Traceback" not in r.output


def test_plan_takes_the_servers_environment_from_env_options_only(monkeypatch):
    """`plan --env`: the Ollama server's variables as it will start. Qwen3 4B keeps K and V for 36 layers x
    8 KV heads x 128 dims: 147,456 bytes a token in f16, 78,336 in q8_0 (34 bytes per 32 values).
    4 slots x 4096 tokens = 16,384 cells."""
    args = ["plan", "qwen3:4b", "--gpu", "rtx-4060"]
    _, d = fit_json(*args, "--env", "OLLAMA_NUM_PARALLEL=4", "--env", "OLLAMA_KV_CACHE_TYPE=q8_0",
                    "--env", "OLLAMA_FLASH_ATTENTION=1")
    assert (d["batch"], d["kv_dtype"], d["context"]) == (4, "q8_0", 4096)
    assert d["memory"]["kv_cache_bytes"] == 16384 * 78336 == 1_283_457_024
    assert any("from the environment: OLLAMA_FLASH_ATTENTION=1" in n["message"] for n in d["notes"])
    # this shell's environment describes this box, not the one being planned: plan does not read it
    _, d = fit_json(*args, env={"OLLAMA_NUM_PARALLEL": "4"})
    assert (d["batch"], d["memory"]["kv_cache_bytes"]) == (1, 4096 * 147456)


@pytest.mark.parametrize("value,words", [("OLLAMA_NUM_PARALLEL", "write KEY=VALUE"), ("=4", "write KEY=VALUE"),
                                         ("OLLAMA_NUM_PARALLEL=x", "OLLAMA_NUM_PARALLEL='x'")])
def test_a_bad_env_option_is_a_usage_error_naming_it(value, words):
    r = run("plan", "qwen3:4b", "--gpu", "rtx-4060", "--env", value)
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output


def test_here_env_options_go_over_this_shells_environment():
    args = ["here", "qwen3:4b", "--snapshot", str(H100)]
    _, d = fit_json(*args, "--env", "OLLAMA_NUM_PARALLEL=2", env={"OLLAMA_NUM_PARALLEL": "4"})
    assert d["batch"] == 2
    _, d = fit_json(*args, env={"OLLAMA_NUM_PARALLEL": "4"})
    assert d["batch"] == 4


def test_check_a_llama_server_without_c_plans_the_context_fit_leaves_it():
    """No -c: llama.cpp starts from the model's training context; on a 3090 with 23.7 GiB free Llama 3.1 8B
    Q4_K_M keeps all 131,072 tokens, on the dual A5000 (1.6 and 6.7 GiB free) --fit cuts it."""
    def here(snap, *server):
        r = run("here", "--snapshot", str(snap), "--json", "--", "llama-server", "-m", "llama3.1-8b.Q4_K_M.gguf",
                *server)
        assert "Traceback" not in r.output
        return json.loads(r.stdout)

    assert here(FIX / "influxdata_telegraf__rtx-3090-v12.xml")["context"] == 131072
    d = here(DUAL_A5000)
    assert 4096 <= d["context"] < 131072 and d["context"] % 256 == 0
    assert any("llama.cpp --fit cut the model's 131072-token context" in n["message"] for n in d["notes"])
    d = here(DUAL_A5000, "--fit", "off")
    assert d["context"] == 131072 and d["verdict"] == "no_fit"
