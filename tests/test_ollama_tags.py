"""Ollama tags resolve to what Ollama serves: the library's default quant, a spelled-out suffix, a
distill's real base; unknown tags and suffixes are usage errors with "did you mean"."""

import json

import pytest
from click.testing import CliRunner

from gpufit.catalog import Catalog, load_catalog
from gpufit.cli import cli
from gpufit.errors import CatalogError

CAT = load_catalog()


def plan(*args):
    r = CliRunner().invoke(cli, ["plan", *args, "--json"])
    assert "Traceback" not in r.output
    return r, (json.loads(r.stdout) if r.exit_code in (0, 3, 4) else None)


def test_qwen3_4b_is_served_as_q4_k_m_and_fits_an_8gb_card():
    """The issue's case: planned as bf16 it 'does not fit' an RTX 4060; Ollama serves Q4_K_M (~2.5 GB)."""
    r, d = plan("qwen3:4b", "--gpu", "rtx-4060")
    assert r.exit_code == 0, r.output
    assert (d["model"]["key"], d["quant"], d["engine"]) == ("qwen3-4b", "q4_k_m", "ollama")
    assert 2.2e9 < d["memory"]["weights_bytes"] < 2.8e9
    assert any("what Ollama serves for qwen3:4b" in n for n in (x["message"] for x in d["notes"]))


@pytest.mark.parametrize("name,model,quant", [
    ("qwen3", "qwen3-8b", "q4_k_m"),  # bare name = :latest = 8b (resolved as a tag under --engine ollama)
    ("qwen3:latest", "qwen3-8b", "q4_k_m"),
    ("llama3:8b", "llama3-8b", "q4_0"),  # the 2024 library default was Q4_0
    ("llama3.1:8b-instruct-q8_0", "llama3.1-8b", "q8_0"),
    ("gemma3:27b-it-fp16", "gemma3-27b", "fp16"),
    ("qwen3:30b-a3b-thinking-2507-q8_0", "qwen3-30b-a3b", "q8_0"),
    ("llama3.3:70b-instruct-q3_K_M", "llama3.3-70b", "q3_k_m"),
    ("gpt-oss:20b", "gpt-oss-20b", "mxfp4"),
    ("deepseek-r1:32b", "deepseek-r1-distill-qwen-32b", "q4_k_m"),
    ("deepseek-r1:8b-llama-distill-q4_K_M", "deepseek-r1-distill-llama-8b", "q4_k_m"),
])
def test_tags_resolve_to_model_and_format(name, model, quant):
    r, d = plan(name, "--gpu", "h100-sxm", "--engine", "ollama", "--context", "4096")
    assert r.exit_code in (0, 3, 4), r.output
    assert (d["model"]["key"], d["quant"]) == (model, quant)


def test_deepseek_r1_8b_is_the_qwen3_distill_since_the_0528_update():
    r, d = plan("deepseek-r1:8b", "--gpu", "rtx-4090")
    assert d["model"]["key"] == "qwen3-8b" and d["model"]["layers"] == 36
    assert "Qwen3-8B" in d["model"]["name"]


def test_a_bare_name_without_ollama_stays_the_catalog_model():
    r, d = plan("qwen3", "--gpu", "h100-sxm")
    assert (d["quant"], d["engine"]) == ("bf16", "vllm")


@pytest.mark.parametrize("name,words", [
    ("qwen3:5b", ["unknown Ollama tag 'qwen3:5b'", "did you mean", "qwen3:"]),
    ("llama3.1:8b-instruct-q9_9", ["unknown quantization 'q9_9'", "did you mean"]),
])
def test_unknown_tag_or_suffix_is_a_usage_error_with_suggestions(name, words):
    r = CliRunner().invoke(cli, ["plan", name, "--gpu", "rtx-4090"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    for w in words:
        assert w in r.output


def test_quant_option_cannot_contradict_a_spelled_suffix():
    r = CliRunner().invoke(cli, ["plan", "llama3.1:8b-instruct-q8_0", "--gpu", "rtx-4090", "--quant", "q4_k_m"])
    assert r.exit_code == 2 and "names q8_0" in r.output
    r, d = plan("qwen3:4b", "--gpu", "rtx-4090", "--quant", "q8_0")  # a default tag: --quant picks another
    assert d["quant"] == "q8_0"


def test_every_tag_names_a_catalog_model_and_an_ollama_format():
    assert len(CAT.ollama_tags) >= 50
    for t in CAT.ollama_tags.values():
        assert t.model in CAT.models and "ollama" in CAT.quants[t.quant].engines
        assert t.source.startswith("https://"), t.key


TAG = """
[[ollama_tag]]
key = "{key}"
model = "{model}"
quant = "q4_k_m"
source = "test"
"""


def test_a_tag_must_be_name_colon_tag(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(TAG.format(key="Qwen3 4B", model="qwen3-4b"))
    with pytest.raises(CatalogError) as e:
        Catalog().add_file(p)
    assert "t.toml" in str(e.value) and "NAME:TAG" in str(e.value)


def test_a_tag_naming_an_unknown_model_is_an_invalid_file(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(TAG.format(key="qwen9:4b", model="qwen9-4b"))
    c = Catalog()
    c.add_file(p)
    with pytest.raises(CatalogError) as e:
        c.check_references()
    assert "t.toml" in str(e.value) and "model 'qwen9-4b' is not in the catalog" in str(e.value)


def test_a_tag_naming_a_mistyped_model_names_the_nearest_catalog_models(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(TAG.format(key="qwen9:4b", model="qwen9-4b"))
    with pytest.raises(CatalogError) as e:
        load_catalog((p,))
    assert "t.toml" in str(e.value)
    assert "model 'qwen9-4b' is not in the catalog; did you mean qwen3-4b, qwen3-14b, qwen3-8b?" in str(e.value)


def test_another_engines_plan_prints_an_ollama_line_only_for_a_tag_that_serves_it():
    """The library serves llama3.1:8b as Q4_K_M, so a llama.cpp plan of Llama 3.1 8B Q4_K_M can name that
    tag; llama3:8b is Q4_0, so no tag serves Llama 3 8B Q4_K_M and no `ollama run <catalog key>` is made
    up; a plan that keeps experts in host RAM (which Ollama does not do on its own) gets none either."""
    import gpufit

    a = gpufit.plan("llama3.1-8b", ["rtx-4090"], quant="q4_k_m", engine="llama.cpp")
    assert a.engine_args["ollama"].endswith("ollama run llama3.1:8b")
    b = gpufit.plan("llama3-8b", ["rtx-4090"], quant="q4_k_m", engine="llama.cpp")
    assert "ollama" not in b.engine_args and "llama.cpp" in b.engine_args
    from gpufit.app.live import LiveOptions, fit_live

    from pathlib import Path

    snap = str(Path(__file__).parent / "fixtures" / "nvidia-smi" / "influxdata_telegraf__rtx-3090-v12.xml")
    line = ("llama-server", "-m", "Qwen3-30B-A3B-Q4_K_M.gguf", "-c", "8192")
    whole = fit_live(LiveOptions(server=line), snapshot_path=snap, env={})
    assert whole.engine_args["ollama"].endswith("ollama run qwen3:30b")
    experts = fit_live(LiveOptions(server=line + ("-ncmoe", "8")), snapshot_path=snap, env={})
    assert "--n-cpu-moe 8" in experts.engine_args["llama.cpp"] and "ollama" not in experts.engine_args
