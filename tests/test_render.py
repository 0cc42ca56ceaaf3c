"""The output-format registry and the text renderers on pinned results."""

import importlib

import pytest

from gpufit.render import FORMATS, KINDS, formats_for, render
from gpufit.errors import UsageError


def test_every_format_renders_what_the_registry_says():
    for fmt, mod in FORMATS.items():
        assert set(importlib.import_module(mod).RENDERERS) == set(KINDS[fmt]), fmt
    assert formats_for("report") == ("text", "json", "prometheus")
    assert formats_for("fit") == ("text", "json")


def test_unknown_format_or_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="did you mean"):
        render("fit", None, "jsno")
    with pytest.raises(UsageError, match="no prometheus output"):
        render("fit", None, "prometheus")


# ---- the text renderer on pinned results ------------------------------------------------------------
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import gpufit  # noqa: E402
from gpufit.render.words import word  # noqa: E402

MIG = Path(__file__).parent / "fixtures" / "nvidia-smi" / \
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-mig__590.48.01.txt"


def test_a_model_that_does_not_fit_shows_no_placement_and_no_layer_count():
    res = gpufit.plan("llama3.1-405b", ["rtx-3090"], quant="int8", engine="vllm")
    text = render("fit", res)
    assert res.verdict == "no_fit" and "Placement:" not in text
    row = next(line for line in text.splitlines() if line.startswith("0 "))
    assert row.split()[-1] == "-"


def test_a_mig_headline_names_the_slice_not_the_sum_of_slices():
    res = gpufit.fit("llama3-8b", gpufit.load_snapshot(MIG), engine="vllm", alternatives=False)
    head = render("fit", res).splitlines()[1]
    used = [d for d in res.devices if d.needed_bytes]
    assert len(used) == 1 and head.count(" x ") == 1 and "MIG 3g.40gb" in head
    assert f"({used[0].free_bytes / 2**30:.1f} GiB) free" in head


def test_no_alternative_repeats_the_request():
    res = gpufit.plan("llama3-70b", ["rtx-4090"], quant="q4_k_m", context=8192, engine="llama.cpp")
    assert res.verdict != "fits"
    assert not any(a.kind == "context" and a.changes.get("context") == 8192 for a in res.alternatives)


def test_the_moe_caveat_is_said_only_for_moe_models():
    dense = render("fit", gpufit.plan("llama3-8b", ["h100-sxm"], engine="vllm"))
    moe = render("fit", gpufit.plan("qwen3-30b-a3b", ["h100-sxm"], engine="vllm"))
    assert "likely optimistic for MoE" not in dense and "likely optimistic for MoE" in moe


def test_no_raw_floats_in_text_output():
    text = render("fit", gpufit.plan("llama3-8b", ["h100-sxm"], engine="vllm"))
    assert not re.search(r"\d\.\d{4,}", text), re.findall(r"\S*\d\.\d{4,}\S*", text)


def test_warnings_are_data_with_a_stable_code_and_words():
    res = gpufit.plan("llama3-70b", ["rtx-4090"], quant="bf16", engine="llama.cpp", alternatives=False)
    d = res.to_dict()
    short = [w for w in d["warnings"] if w["code"] == "gpu_short"]
    assert short and set(short[0]) == {"code", "message", "data"}
    data = short[0]["data"]
    dev = res.devices[0]
    assert (data["needed_bytes"], data["usable_bytes"]) == (dev.needed_bytes, dev.free_bytes)
    assert short[0]["message"] == word(res.warnings[0]) and "GiB usable on GPU 0" in short[0]["message"]
    # notes carry their statement under code "assumed"
    assert all(set(n) == {"code", "message", "data"} for n in d["notes"])
    assert any(n["code"] == "assumed" and n["message"].startswith("context 8192") for n in d["notes"])


def test_each_engine_memory_block_is_worded_as_its_own_log():
    """vLLM's figures in the words of its start-up log, Ollama's in the words of its scheduler line; neither
    borrows the other's."""
    v = render("fit", gpufit.plan("llama3-8b", ["rtx-4090"], quant="int8", engine="vllm", context=8192))
    assert "vllm at start-up" in v and "GPU KV cache size:" in v and "Available KV cache memory:" in v
    assert "memory.required.full=" not in v
    o = render("fit", gpufit.plan("llama3-8b", ["rtx-4090"], quant="q4_k_m", engine="ollama@0.12", context=8192))
    assert "ollama@0.12 scheduler estimate" in o and "memory.required.full=" in o and "layers.offload=" in o
    assert "GPU KV cache size" not in o and "CUDA total" not in o
    # llama.cpp gives no start-up accounting of its own: no engine block at all
    c = render("fit", gpufit.plan("llama3-8b", ["rtx-4090"], quant="q4_k_m", engine="llama.cpp", context=8192))
    assert "at start-up" not in c and "scheduler estimate" not in c


def test_fleet_reasons_are_data_worded_by_the_renderer():
    """A node's reason is a Message with the figures (bytes, layer counts); render/words.py words it,
    so the fleet's app layer formats no GiB. 3 GiB on GPU 0 and 1.5 GiB on GPU 1 are in use."""
    from gpufit.estimator.types import Message

    gib = 2**30
    now = Message("node_offload", {"gpu_layers": 20, "layers": 32, "cpu_bytes": 6 * gib})
    m = Message("node_fits_if_empty", {"in_use": [{"gpu": "0", "bytes": 3 * gib}, {"gpu": "1", "bytes": 3 * gib // 2}],
                                       "now": now, "verdict": "offload"})
    assert word(m) == ("would fit if its GPUs were empty (GPU 0 3.0 GiB, GPU 1 1.5 GiB in use now); now: only with "
                       "CPU offload: 20 of 32 layers on the GPUs, 6.0 GiB in host RAM")
    three = [{"gpu": str(i), "bytes": gib} for i in range(3)]
    assert "(3.0 GiB on 3 GPUs in use now); now: no_fit" in word(
        Message("node_fits_if_empty", {"in_use": three, "now": None, "verdict": "no_fit"}))
    assert word(Message("node_cannot", {"empty": Message("node_no_fit", {"warning": None}), "verdict": "no_fit"})) \
        == "not even with its GPUs empty: does not fit"


def test_the_speed_basis_names_the_split_latency_where_there_is_one():
    """4 x RTX 4090 llama.cpp: 0.75 + 3 x 0.05 ms per token between the GPUs
    (profiles.LLAMA_CPP_DECODE_SPLIT_S)."""
    split = gpufit.plan("llama3-70b", ["rtx-4090:4"], quant="q4_k_m", context=8192, engine="llama.cpp")
    basis = next(line for line in render("fit", split).splitlines() if line.startswith("  basis:"))
    assert "+ 0.90 ms between GPUs" in basis
    one = gpufit.plan("llama3-8b", ["rtx-4090"], quant="q4_k_m", context=8192, engine="llama.cpp")
    basis = next(line for line in render("fit", one).splitlines() if line.startswith("  basis:"))
    assert "between GPUs" not in basis


def test_the_speed_basis_says_when_in_band_ecc_takes_bandwidth():
    """L40S (datacenter GDDR6, ECC on by default): 864 GB/s x 15/16 = 810; the RTX 6000 Ada (same
    AD102, a workstation card with ECC off by default) keeps its 960."""
    def basis(gpu):
        res = gpufit.plan("llama3-8b", [gpu], quant="q4_k_m", context=4096, engine="llama.cpp")
        return next(line for line in render("fit", res).splitlines() if line.startswith("  basis:"))
    assert "(810 GB/s left by in-band ECC x 0.91 efficiency)" in basis("l40s")
    assert "(960 GB/s x 0.91 efficiency)" in basis("rtx-6000-ada")
