"""Issue 11, item 4: every input that used to end in "internal error (a bug)" or was accepted silently now
gets its documented exit code and a message naming the input. One test per case, named after it."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpufit.cli import cli
from gpufit.probe import load_snapshot

FIX = Path(__file__).parent / "fixtures" / "nvidia-smi"
XML = FIX / "influxdata_telegraf__rtx-3090-v12.xml"
ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None):
    r = CliRunner().invoke(cli, list(args), env=env)
    assert "internal error" not in r.output and "Traceback" not in r.output, r.output
    return r


def tiny_model(folder: Path, **changes) -> Path:
    """A two-layer Llama folder written with the real safetensors writer; `changes` edit config.json."""
    from safetensors.numpy import save_file
    import numpy as np

    folder.mkdir()
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2,
           "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128,
           "vocab_size": 1000, "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({"model.embed_tokens.weight": np.zeros((1000, 64), dtype=np.float16),
               "model.layers.0.mlp.up_proj.weight": np.zeros((128, 64), dtype=np.float16),
               "model.layers.1.mlp.up_proj.weight": np.zeros((128, 64), dtype=np.float16)},
              str(folder / "model.safetensors"))
    return folder


# ---- the 15 inputs that ended in "internal error" ---------------------------------------------------


def test_unicode_digit_gpu_count_is_a_usage_error():
    r = run("plan", "llama3-8b", "--gpu", "rtx-4090:²")
    assert r.exit_code == 2 and "--gpu rtx-4090:²" in r.stderr and "COUNT" in r.stderr


def test_unicode_digit_in_gpus_is_an_unknown_gpu():
    r = run("here", "llama3-8b", "--snapshot", str(XML), "--gpus", "²")
    assert r.exit_code == 2 and "unknown GPU '²' in --gpus" in r.stderr


def test_a_mistyped_gpu_in_gpus_gets_the_nearest_names():
    r = run("here", "llama3-8b", "--snapshot", str(XML), "--gpus", "GPU-12345678-aaab-bbbb-cccc-0123456789ab")
    assert r.exit_code == 2
    assert ("unknown GPU 'GPU-12345678-aaab-bbbb-cccc-0123456789ab' in --gpus; did you mean "
            "GPU-12345678-aaaa-bbbb-cccc-0123456789ab? (valid: 0, GPU-12345678-aaaa-bbbb-cccc-0123456789ab)"
            ) in r.stderr


def test_a_repo_id_not_in_the_catalog_says_how_to_fetch_it_and_the_nearest_names():
    r = run("plan", "meta-llama/llama3-8b", "--gpu", "rtx-3090")
    assert r.exit_code == 2
    assert "unknown model 'meta-llama/llama3-8b': not in the catalog nor in a local store" in r.stderr
    assert "hf download meta-llama/llama3-8b config.json" in r.stderr
    assert r.stderr.rstrip().endswith("--quant ...; did you mean llama3-8b, llama3.1-8b, mistral-small-24b?")


def test_unicode_digit_in_cuda_visible_devices_hides_every_gpu_like_cuda(monkeypatch):
    import gpufit.probe as probe

    live = dataclasses.replace(load_snapshot(XML), source="nvml")
    monkeypatch.setattr(probe, "take_snapshot", lambda *a, **k: live)
    r = run("here", "llama3-8b", env={"CUDA_VISIBLE_DEVICES": "²"})
    assert r.exit_code == 5 and "CUDA_VISIBLE_DEVICES hides every GPU (it is '²')" in r.stderr


def test_400_digit_reserve_is_a_usage_error():
    r = run("plan", "llama3-8b", "--gpu", "rtx-4090", "--reserve", "9" * 400)
    assert r.exit_code == 2 and "--reserve" in r.stderr and "larger than 1 EiB" in r.stderr
    assert len(r.stderr) < 300, "the 400 digits are not echoed whole"


def test_huge_batch_is_a_usage_error():
    r = run("plan", "llama3-8b", "--gpu", "rtx-4090", "--batch", "9" * 400)
    assert r.exit_code == 2 and "--batch" in r.stderr


def test_config_json_model_type_as_a_list_is_a_model_file_error(tmp_path):
    m = tiny_model(tmp_path / "m", model_type=["llama"])
    r = run("plan", str(m), "--gpu", "rtx-4090")
    assert r.exit_code == 6 and "config.json: model_type:" in r.stderr and "['llama']" in r.stderr


def test_config_json_vocab_size_10_to_the_400_is_a_model_file_error(tmp_path):
    m = tiny_model(tmp_path / "m", vocab_size=10**400)
    r = run("plan", str(m), "--gpu", "rtx-4090")
    assert r.exit_code == 6 and "vocab_size" in r.stderr and "401-digit" in r.stderr


def test_config_json_a_billion_layers_is_a_model_file_error(tmp_path):
    m = tiny_model(tmp_path / "m", num_hidden_layers=10**9)
    r = run("plan", str(m), "--gpu", "rtx-4090")
    assert r.exit_code == 6 and "num_hidden_layers = 1000000000" in r.stderr


def test_gguf_block_count_past_any_model_is_a_model_file_error(tmp_path):
    import gguf
    import numpy as np

    p = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_block_count(100_000)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_feed_forward_length(128)
    w.add_context_length(2048)
    w.add_tensor("token_embd.weight", np.zeros((1000, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = run("plan", str(p), "--gpu", "rtx-4090")
    assert r.exit_code == 6 and "llama.block_count" in r.stderr and "at most 10000" in r.stderr


def test_snapshot_nested_100000_deep_is_a_snapshot_error(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text('{"schema": ' + "[" * 100_000 + "]" * 100_000 + "}")
    r = run("here", "llama3-8b", "--snapshot", str(p))
    assert r.exit_code == 6 and "deep.json" in r.stderr and "nested too deep" in r.stderr
    x = tmp_path / "deep.xml"
    x.write_text("<nvidia_smi_log>" + "<a>" * 100_000 + "</a>" * 100_000 + "</nvidia_smi_log>")
    r = run("here", "llama3-8b", "--snapshot", str(x))
    assert r.exit_code == 5 and "no usable GPU" in r.stderr  # a valid capture of no GPU at all


def test_dev_zero_as_a_snapshot_is_refused_without_reading_it():
    r = run("here", "llama3-8b", "--snapshot", "/dev/zero")
    assert r.exit_code == 6 and "/dev/zero: is a device, not a regular file" in r.stderr


def test_type_corrupted_catalog_cache_is_discarded_and_rebuilt(tmp_path, monkeypatch):
    from gpufit.catalog import DATA_DIR, loader

    monkeypatch.setenv("GPUFIT_CACHE_DIR", str(tmp_path))
    src = DATA_DIR / "models.toml"
    good = loader.load_file(src)
    entry = loader._cache_entry(src.read_bytes())
    head, payload = entry.read_bytes().split(b"\n", 1)
    data = json.loads(payload)
    data["model"][0]["layers"] = "32"  # a string where an int belongs, the checksum line left as it was
    entry.write_bytes(head + b"\n" + json.dumps(data).encode())
    again = loader.load_file(src)
    assert again == good and isinstance(again["model"][0].layers, int)
    assert json.loads(entry.read_bytes().split(b"\n", 1)[1])["model"][0]["layers"] == good["model"][0].layers, \
        "the entry is rewritten"
    entry.write_bytes(head + b'\n{"model": [{"key": 1}]')  # truncated JSON
    assert loader.load_file(src) == good
    entry.write_bytes(b'{"gpu": [], "model": [], "quant": []}')  # an entry of the old layout: no checksum
    assert loader.load_file(src) == good
    # and the CLI never notices: the run that finds the corrupt entry plans as usual
    entry.write_bytes(head + b"\n" + json.dumps(data).encode())
    r = subprocess.run([sys.executable, "-m", "gpufit", "plan", "llama3-8b", "--gpu", "rtx-4090", "--json"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "GPUFIT_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0 and "internal error" not in r.stderr


def test_prometheus_report_needs_no_extra(tmp_path):
    """prometheus_client is a base dependency: the installed metadata requires it without an extra."""
    from importlib.metadata import requires

    reqs = requires("gpufit") or []
    base = [r for r in reqs if "extra ==" not in r]
    assert any(r.lower().replace("-", "_").startswith("prometheus_client") for r in base), reqs
    assert any(r.lower().startswith("gguf") for r in base), reqs


# ---- accepted silently before ---------------------------------------------------------------------


def _json_snapshot(tmp_path, **memory):
    s = load_snapshot(XML)
    g = dataclasses.replace(s.gpus[0], memory=dataclasses.replace(s.gpus[0].memory, **memory))
    p = tmp_path / "box.json"
    p.write_text(dataclasses.replace(s, gpus=(g,)).to_json())
    return p


def test_negative_memory_in_a_snapshot_is_a_snapshot_error(tmp_path):
    r = run("here", "llama3-8b", "--snapshot", str(_json_snapshot(tmp_path, free=-5)))
    assert r.exit_code == 6 and "gpus[0].memory.free: negative memory (-5 bytes)" in r.stderr


def test_free_above_total_in_a_snapshot_is_a_snapshot_error(tmp_path):
    r = run("here", "llama3-8b", "--snapshot", str(_json_snapshot(tmp_path, free=2**45)))
    assert r.exit_code == 6 and "gpus[0].memory.free: free memory" in r.stderr and "exceeds total" in r.stderr
    x = tmp_path / "x.xml"
    x.write_text(XML.read_text().replace("<free>", "<free>9", 1))
    r = run("here", "llama3-8b", "--snapshot", str(x))
    assert r.exit_code == 6 and "exceeds total" in r.stderr


@pytest.mark.parametrize("line", ["temperature_warn_c = nan", "temperature_crit_c = inf",
                                  "power_near_limit_ratio = -inf", "ecc_volatile_corrected_warn = 99999999999999999999"])
def test_nan_or_inf_threshold_in_the_config_is_a_config_error(tmp_path, line):
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text(f"[thresholds]\n{line}\n")
    r = run("report", "--config", str(cfg), "--snapshot", str(XML))
    key = line.split(" =")[0]
    assert r.exit_code == 6 and f"line 2: thresholds.{key}" in r.stderr


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nan_or_inf_probe_timeout_in_the_config_is_a_config_error(tmp_path, value):
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text(f"[report]\nprobe_timeout_s = {value}\n")
    r = run("report", "--config", str(cfg), "--snapshot", str(XML))
    assert r.exit_code == 6 and "report.probe_timeout_s" in r.stderr


@pytest.mark.parametrize("option", ["--min-headroom", "--ram"])
def test_empty_min_headroom_or_ram_is_a_usage_error(option):
    r = run("here", "llama3-8b", "--snapshot", str(XML), option, "")
    assert r.exit_code == 2 and f"{option}: an empty value" in r.stderr
    r = run("plan", "llama3-8b", "--gpu", "rtx-4090", option, "")
    assert r.exit_code == 2


def test_gpus_of_only_commas_is_a_usage_error():
    r = run("here", "llama3-8b", "--snapshot", str(XML), "--gpus", ",,,")
    assert r.exit_code == 2 and "--gpus ',,,' names no GPU" in r.stderr


def test_two_watched_models_with_one_name_and_quant_is_a_config_error(tmp_path):
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text('[[model]]\nname = "llama3-8b"\nquant = "int8"\n\n'
                   '[[model]]\nname = "llama3-8b"\nquant = "int8"\ncontext = 4096\n')
    r = run("report", "--format", "prometheus", "--config", str(cfg), "--snapshot", str(XML))
    assert r.exit_code == 6 and "duplicate [[model]] name='llama3-8b' quant='int8' (first at line 1)" in r.stderr
    assert "line 6: [[model]] #2 name" in r.stderr


def test_broken_model_entry_exits_6_not_4(tmp_path):
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text('[[model]]\nname = "llama3-8b"\ncontext = 1000000\n')
    r = run("report", "--config", str(cfg), "--snapshot", str(XML))
    assert r.exit_code == 6 and "line 1: [[model]] name='llama3-8b'" in r.stderr and "1000000" in r.stderr


# ---- signals: a real process, a real signal -------------------------------------------------------

# blocks inside the atomic write, after the temp file is written and before the rename
_BLOCK_IN_WRITE = """
import os, sys, time
def slow_fsync(fd):
    sys.stderr.write("WRITING\\n"); sys.stderr.flush()
    time.sleep(60)
os.fsync = slow_fsync
from gpufit.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_exits_128_plus_n_without_traceback_or_partial_file(tmp_path, sig, code):
    out = tmp_path / "box.json"
    out.write_text("old\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUFIT_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.Popen([sys.executable, "-c", _BLOCK_IN_WRITE, "probe", "--snapshot", str(XML), "--save", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert p.stderr.readline() == "WRITING\n"
        temps = [f for f in tmp_path.iterdir() if f.name.startswith(".box.json.")]
        assert len(temps) == 1, "the temp file exists while the write is in flight"
        p.send_signal(sig)
        rc = p.wait(timeout=30)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == code, err
    assert "Traceback" not in err and ("interrupted" in err or "terminated" in err)
    assert out.read_text() == "old\n", "the old file is kept whole"
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".box.json")] == [], "no temp file left"


@pytest.mark.parametrize("option,value", [("--min-tokens-per-s", "nan"), ("--min-bits", "inf"), ("--min-bits", "-1")])
def test_non_finite_recommend_bounds_are_usage_errors(option, value):
    r = run("recommend", "--gpu", "rtx-4090", option, value)
    assert r.exit_code == 2 and option in r.stderr


def test_ollama_manifest_nested_100000_deep_is_a_model_file_error(tmp_path, monkeypatch):
    """The store readers share the bounded reader and the RecursionError guard of the other JSON files."""
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    for k in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "LLAMA_CACHE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    m = tmp_path / "ollama" / "manifests" / "registry.ollama.ai" / "library" / "tinyllama" / "latest"
    m.parent.mkdir(parents=True)
    m.write_text('{"layers": ' + "[" * 100_000 + "]" * 100_000 + "}")
    r = run("plan", "tinyllama", "--gpu", "rtx-3090")
    assert r.exit_code == 6 and str(m) in r.stderr and "nested too deep" in r.stderr
