"""Verdict, strategy, status, engine and fleet group are closed sets of str enums: each engine module's key
is its EngineName, requests carry the enum even when built from text, and every JSON carries plain text."""

from __future__ import annotations

import json

import pytest

import gpufit
from gpufit.app import exit_code
from gpufit.app.fleet.rank import Group
from gpufit.app.health import Status, worst
from gpufit.errors import ExitCode
from gpufit.estimator import engines
from gpufit.estimator.engines import REGISTRY, EngineName
from gpufit.estimator.types import Strategy, Verdict
from gpufit.render import render


def test_every_engine_module_is_keyed_by_its_own_name():
    assert set(REGISTRY) == set(EngineName)
    for name, mod in REGISTRY.items():
        assert mod.for_version(None).key == name.value
    assert engines.ENGINES == ("vllm", "llama.cpp", "ollama", "transformers")
    assert engines.default_engine("gguf") is EngineName.LLAMA_CPP
    assert engines.default_engine("safetensors") is EngineName.VLLM


def test_a_request_built_from_text_carries_the_enum():
    res = gpufit.plan("llama3-8b", ["rtx-4090"], quant="q4_k_m", engine="llama.cpp")
    assert res.request.engine is EngineName.LLAMA_CPP and res.request.engine_label == "llama.cpp"
    assert isinstance(res.verdict, Verdict) and isinstance(res.placement.strategy, Strategy)
    d = json.loads(render("fit", res, "json"))
    # the JSON holds plain strings, never "Verdict.FITS" or "EngineName.VLLM"
    assert (d["verdict"], d["placement"]["strategy"], d["engine"]) == ("fits", "single", "llama.cpp")
    assert f"{res.request.engine}" == "llama.cpp" and f"{Verdict.NO_FIT}" == "no_fit"


def test_an_unknown_engine_name_on_a_request_is_refused():
    res = gpufit.plan("llama3-8b", ["rtx-4090"], quant="q4_k_m", engine="llama.cpp")
    import dataclasses

    with pytest.raises(ValueError):
        dataclasses.replace(res.request, engine="tgi")


@pytest.mark.parametrize("verdict,strict,code", [
    (Verdict.FITS, False, ExitCode.OK), (Verdict.TIGHT, False, ExitCode.OK), (Verdict.TIGHT, True, ExitCode.DEGRADED),
    (Verdict.OFFLOAD, False, ExitCode.DEGRADED), (Verdict.NO_FIT, False, ExitCode.NO_FIT),
    (Verdict.NO_FIT, True, ExitCode.NO_FIT)])
def test_each_verdict_has_its_documented_exit_code(verdict, strict, code):
    class Result:  # exit_code reads only the verdict
        pass

    r = Result()
    r.verdict = verdict
    assert exit_code(r, strict) == code  # DESIGN.md: 0 fits, 3 no fit, 4 offload / tight under --strict


def test_status_and_group_are_closed_sets():
    assert [str(s) for s in Status] == ["ok", "warn", "crit", "unknown"]
    assert worst([Status.UNKNOWN, Status.OK]) is Status.OK  # an unknown never raises the status
    assert worst([Status.WARN, Status.CRIT, Status.OK]) is Status.CRIT
    assert [str(g) for g in Group] == ["fits", "fits_if_empty", "cannot", "no_data"]
    assert {v.fits for v in Verdict} == {True, False}
    assert [v for v in Verdict if v.fits] == [Verdict.FITS, Verdict.TIGHT]
