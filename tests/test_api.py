"""The public Python API (gpufit.__all__), used the way a library user would: only the façade."""

from pathlib import Path

import pytest

import gpufit

FIX = Path(__file__).parent / "fixtures" / "nvidia-smi"


def test_api_names_are_the_documented_facade():
    assert set(gpufit.__all__) == {"snapshot", "load_snapshot", "load_catalog", "fit", "plan", "recommend",
                                   "GpufitError", "__version__"}


def test_fit_on_a_capture_gives_the_typed_result_here_gives():
    snap = gpufit.load_snapshot(FIX / "influxdata_telegraf__3090-v13.xml")
    res = gpufit.fit("llama3-8b", snap, engine="vllm", context=8192)
    assert res.verdict in ("fits", "tight")
    assert res.engine_memory.kv_pool_tokens > 8192 and res.engine_memory.refusal is None
    assert res.to_dict()["schema"] == "gpufit.fit/1"
    # the 24 GiB card cannot hold Llama 3 70B in bf16: vLLM would fail loading it
    big = gpufit.fit("llama3-70b", snap, engine="vllm", alternatives=False)
    assert big.verdict == "no_fit" and big.refusal.code == "oom_at_load"


def test_plan_on_catalog_cards_and_recommend():
    res = gpufit.plan("llama3.3-70b", ["h100-sxm:2"], quant="fp8", engine="vllm")
    assert res.placement.tensor_parallel == 2 and res.verdict in ("fits", "tight")
    rows = gpufit.recommend(gpus=["rtx-4090"], top=3)
    assert 0 < len(rows) <= 3


def test_api_errors_are_gpufit_errors_with_exit_codes():
    with pytest.raises(gpufit.GpufitError) as e:
        gpufit.plan("no-such-model", ["rtx-4090"])
    assert int(e.value.exit_code) == 2 and "unknown model 'no-such-model'" in str(e.value)
    with pytest.raises(gpufit.GpufitError):
        gpufit.load_snapshot(FIX / "SOURCES.md")


def test_fit_live_without_a_model_is_a_usage_error():
    from gpufit.app.live import LiveOptions, fit_live
    from gpufit.errors import UsageError

    with pytest.raises(UsageError, match="give MODEL"):
        fit_live(LiveOptions())
