"""bench/data: the measurements bench/accuracy.py compares against load, carry a source, and every row
the benchmark maps onto the catalog has the fields it reads. A data test: no timings, no error bounds."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def acc():
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cat(acc):
    return acc.load_catalog()


def test_sources_file_names_every_csv_the_benchmark_reads():
    text = (BENCH / "data" / "SOURCES.md").read_text()
    for name in ("tokens_per_s.csv", "memory.csv", "tokens_per_s_holdout.csv", "llama_cpp_current.csv"):
        assert (BENCH / "data" / name).is_file()
        assert name in text


@pytest.mark.parametrize("name", ["tokens_per_s.csv", "memory.csv", "tokens_per_s_holdout.csv"])
def test_every_row_loads_and_names_its_source(acc, name):
    rows = acc.read(name)
    assert len(rows) > 100
    assert all(r["source"].strip() for r in rows), [r for r in rows if not r["source"].strip()][:3]


def _tokens_context(acc, row):
    test = row["test"].strip()
    m = acc.TG_RE.match(test) or acc.PP_RE.match(test)
    if m:
        return int(m.group(1))
    if test.startswith("main"):
        return int(row["context"]) if row["context"].isdigit() else None
    return "unplain"


def test_mapped_speed_rows_have_what_the_benchmark_reads(acc, cat):
    mapped = 0
    for row in acc.read("tokens_per_s.csv"):
        ctx = _tokens_context(acc, row)
        if ctx == "unplain":
            continue
        try:
            c = acc.config_for(cat, row, ctx)
        except acc.Skip:
            continue
        mapped += 1
        assert c.count >= 1 and c.context >= 1
        assert c.gpu in cat.gpus and c.model in cat.models and c.quant in cat.quants
        value = row["tokens_per_s"].strip()
        assert value.upper() == "OOM" or float(value) > 0, row
        if row["test"].startswith("main eval"):
            assert row["n_gen"].isdigit(), row
    assert mapped > 700


def test_every_held_out_row_maps_onto_a_card_the_fit_never_saw(acc, cat):
    """tokens_per_s_holdout.csv: llama-bench rows of cards tokens_per_s.csv lacks, all mapped."""
    fitted = {acc.config_for(cat, r, 512).gpu for r in acc.read("tokens_per_s.csv")
              if not acc.is_apple(r["gpu"]) and _maps(acc, cat, r)}
    rows = acc.read("tokens_per_s_holdout.csv")
    for row in rows:
        c = acc.config_for(cat, row, _tokens_context(acc, row))
        assert c.gpu not in fitted and float(row["tokens_per_s"]) > 0, row
    assert len({acc.config_for(cat, r, 512).gpu for r in rows}) == 8


def _maps(acc, cat, row):
    try:
        acc.config_for(cat, row, 512)
        return True
    except acc.Skip:
        return False


def test_mapped_memory_rows_have_what_the_benchmark_reads(acc, cat):
    mapped = 0
    for row in acc.read("memory.csv"):
        if row["error"]:
            assert re.findall(r"\d+", row["context"]), row  # the context(s) that failed
            continue
        try:
            c = acc.config_for(cat, row, int(row["context"]) if row["context"].isdigit() else None)
        except acc.Skip:
            continue
        if not row["weights_gpu_MiB_per_device"]:
            continue
        mapped += 1
        w = row["weights_gpu_MiB_per_device"]
        if "=" in w:
            # May 2024 logs: one figure per device, as many devices as the row says
            for col in ("weights_gpu_MiB_per_device", "kv_MiB_per_device", "compute_MiB_per_device"):
                assert sorted(acc.per_device(row[col])) == list(range(c.count)), (col, row["source"])
        else:
            # 2023 logs: totals over the GPUs, and the scratch buffer on the main one
            for col in ("weights_gpu_MiB_per_device", "kv_MiB", "vram_scratch_MiB"):
                assert float(row[col]) > 0, (col, row["source"])
    assert mapped > 90  # 95 when written: the NVIDIA Llama 2 / Llama 3 logs


def test_the_skip_reasons_name_what_is_missing(acc, cat):
    """Rows the benchmark cannot map are counted with a reason, never silently dropped."""
    reasons = set()
    for row in acc.read("tokens_per_s.csv"):
        try:
            acc.config_for(cat, row, 512)
        except acc.Skip as s:
            reasons.add(str(s))
    assert "Apple silicon (gpufit estimates NVIDIA GPUs)" in reasons
    assert "model 'LLaMA (v1)' not in the catalog" in reasons


def test_each_ecc_exception_names_a_notebook_of_the_data(acc):
    """accuracy.ECC_ON keys are notebooks (sources without their cell) that rows come from: a key
    that matches nothing would silently leave a run at its class default."""
    notebooks = {acc.notebook(r) for name in ("tokens_per_s.csv", "tokens_per_s_holdout.csv") for r in acc.read(name)}
    assert acc.ECC_ON and set(acc.ECC_ON) <= notebooks


def test_the_notebook_screen_catches_only_what_its_rules_say(acc):
    rows = acc.read("tokens_per_s.csv")
    screened = acc.contradicts_its_notebook(rows)
    caught = [r for r in rows if id(r) in screened]
    assert len(caught) == 11
    assert all(r["quant"] == "F16" or r["test"].startswith("main prompt eval") for r in caught)
    assert not any(r["test"].startswith("tg") or r["test"].startswith("main eval") for r in caught)


def test_current_build_rows_map_onto_the_catalog(acc, cat):
    """Each spot-check row names a catalog card, model and quant, a split mode llama.cpp takes and its URL."""
    rows = acc.read("llama_cpp_current.csv")
    assert len(rows) == 9
    for r in rows:
        assert cat.gpu(r["gpu"]) and cat.model(r["model"]) and cat.quant(r["quant"])
        assert r["split_mode"] in ("layer", "row", "tensor", "none") and r["source"].startswith("https://")
        assert float(r["tokens_per_s"]) > 0 and int(r["depth"]) >= 0
