"""`gpufit report`: the gpufit.report/1 object, renderers, watched models, and exit codes 0/4/5/6."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpufit.app import report as report_mod
from gpufit.app.config import Config, ModelWatch
from gpufit.errors import ExitCode, ProbeError
from gpufit.app.health import Status
from gpufit.app.report import build_report, failure_report, run_report
from gpufit.render import render as render_kind


def render(report, fmt):
    return render_kind("report", report, fmt)

from report_helpers import CAPTURES, capture_params, healthy_gpu, snapshot, unsupported_gpu


def save(tmp_path, snap, name="box.json"):
    p = tmp_path / name
    p.write_text(snap.to_json())
    return p


def empty_config(tmp_path):
    p = tmp_path / "gpufit.toml"
    p.write_text("")
    return p


def test_report_object_shape():
    rep = build_report(snapshot(healthy_gpu(0), healthy_gpu(1)), Config(), now=1714564800.0)
    r = rep.to_dict()
    assert r == json.loads(render(rep, "json"))  # the JSON output is that object
    assert r["schema"] == "gpufit.report/1"
    assert r["time"] == "2024-05-01T12:00:00Z" and r["status"] == "ok" and r["success"] is True
    assert r["host"]["hostname"] == "gpu-box-1"
    assert [g["index"] for g in r["gpus"]] == [0, 1]
    for g in r["gpus"]:
        assert g["status"] == "ok"
        for c in g["checks"]:
            assert set(c) == {"name", "status", "value", "threshold", "unit", "message"}
    assert r["models"] == []
    # a GPU of the report is its snapshot entry with the report's three keys added
    assert set(r["gpus"][0]) == set(snapshot(healthy_gpu(0)).to_dict()["gpus"][0]) | {"catalog_key", "status", "checks"}
    assert list(r) == ["schema", "host", "time", "timestamp", "duration_s", "success", "status", "source",
                       "config_files", "host_checks", "gpus", "models", "error"]


def test_failure_report_object():
    r = failure_report("NVML: driver not loaded", now=1714564800.0, live=False).to_dict()
    assert r["host"] == {"hostname": None} and r["time"] is None and r["success"] is False
    assert (r["status"], r["error"], r["gpus"], r["models"]) == ("crit", "NVML: driver not loaded", [], [])


def test_status_is_the_worst_check():
    r = build_report(snapshot(healthy_gpu(0), healthy_gpu(1, temperature_c=85)), Config())
    assert (r.gpus[0].status, r.gpus[1].status, r.status) == (Status.OK, Status.WARN, Status.WARN)
    assert r.exit_code == ExitCode.DEGRADED
    lost = dataclasses.replace(unsupported_gpu(2), available=False)
    assert build_report(snapshot(healthy_gpu(0), lost), Config()).status == Status.CRIT


def test_text_render_says_what_is_wrong():
    text = render(build_report(snapshot(healthy_gpu(0, temperature_c=91)), Config()), "text")
    assert "status: CRIT" in text and "[CRIT] temperature: 91 C" in text


@pytest.mark.parametrize("fmt", ["text", "json", "prometheus"])
@pytest.mark.parametrize("path", capture_params()[:1] + capture_params()[-1:])
def test_run_report_from_a_capture(tmp_path, path, fmt):
    out = tmp_path / "out"
    code = run_report(fmt, str(out), str(empty_config(tmp_path)), str(path)).exit_code
    assert code in (ExitCode.OK, ExitCode.DEGRADED, ExitCode.NO_PROBE)
    text = out.read_text()
    if fmt == "json":
        r = json.loads(text)
        assert r["schema"] == "gpufit.report/1"
        assert code == report_mod.STATUS_EXIT[r["status"]]
    assert text


@pytest.mark.parametrize("gpu,code", [
    (healthy_gpu(), 0),
    (healthy_gpu(temperature_c=85), 4),
    (healthy_gpu(throttle_reasons=("hw_thermal_slowdown",)), 5),
])
def test_exit_codes(tmp_path, gpu, code):
    snap = save(tmp_path, snapshot(gpu))
    assert run_report("json", str(tmp_path / "r.json"), str(empty_config(tmp_path)), str(snap)).exit_code == code


def test_failed_probe_exits_5_and_writes_success_0(tmp_path, monkeypatch, capsys):
    import gpufit.probe

    def no_driver(*a, **k):
        raise ProbeError("NVML Shared Library Not Found: is the NVIDIA driver installed?")

    monkeypatch.setattr(gpufit.probe, "take_snapshot", no_driver)
    out = tmp_path / "gpufit.prom"
    run = run_report("prometheus", str(out), str(empty_config(tmp_path)))
    assert run.exit_code == ExitCode.NO_PROBE == 5
    assert any("NVML Shared Library Not Found" in d for d in run.diagnostics)
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert fams["gpufit_report_success"].samples[0].value == 0
    assert fams["gpufit_report_timestamp_seconds"].samples[0].value > 1.6e9
    # JSON says the same
    assert run_report("json", str(tmp_path / "r.json"), str(empty_config(tmp_path))).exit_code == 5
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["success"] is False and r["status"] == "crit" and "NVML" in r["error"]


def test_bad_snapshot_file_exits_6(tmp_path, capsys):
    bad = tmp_path / "box.json"
    bad.write_text('{"schema": "gpufit.snapshot/1", "host": 3}')
    run = run_report("text", str(tmp_path / "r.txt"), str(empty_config(tmp_path)), str(bad))
    assert run.exit_code == 6 and any("box.json" in d for d in run.diagnostics)


def test_unknown_format_is_usage(tmp_path):
    assert run_report("yaml", None, str(empty_config(tmp_path))).exit_code == ExitCode.USAGE


def test_config_thresholds_change_the_verdict(tmp_path):
    snap = save(tmp_path, snapshot(healthy_gpu(temperature_c=60)))
    cfg = tmp_path / "hot.toml"
    cfg.write_text("[thresholds]\ntemperature_warn_c = 55\ntemperature_crit_c = 58\n")
    assert run_report("json", str(tmp_path / "r.json"), str(cfg), str(snap)).exit_code == 5


def test_output_defaults_to_stdout(tmp_path, capsys):
    snap = save(tmp_path, snapshot(healthy_gpu()))
    run = run_report("json", None, str(empty_config(tmp_path)), str(snap))
    assert run.exit_code == 0 and json.loads(run.stdout)["status"] == "ok"


# ---- watched models: the real app layer and estimator ------------------------------------------------


def _app():
    from gpufit.app import request  # where report looks fit_on_snapshot up

    return request


def test_watched_model_verdict_and_headroom(tmp_path):
    _app()
    big = [p for p in CAPTURES if "a100" in p.name]
    assert big, "the A100 capture is in tests/fixtures/nvidia-smi"
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text('[[model]]\nname = "llama3-8b"\nquant = "int8"\ncontext = 4096\n\n'
                   '[[model]]\nname = "llama3-70b"\nquant = "bf16"\n')
    out = tmp_path / "r.json"
    run_report("json", str(out), str(cfg), str(big[0])).exit_code
    models = {m["name"]: m for m in json.loads(out.read_text())["models"]}
    small, huge = models["llama3-8b"], models["llama3-70b"]
    assert small["error"] is None and small["verdict"] in ("fits", "tight") and small["quant"] == "int8"
    assert small["needed_bytes"] > 8e9 and small["headroom_bytes"] is not None
    assert huge["verdict"] == "no_fit" and huge["status"] == "warn"  # vLLM offloads only when told to
    # and the metrics say so
    run_report("prometheus", str(tmp_path / "r.prom"), str(cfg), str(big[0])).exit_code
    from prometheus_client.parser import text_string_to_metric_families

    fits = {s.labels["model"]: s.value for f in text_string_to_metric_families((tmp_path / "r.prom").read_text())
            for s in f.samples if s.name == "gpufit_model_fits"}
    assert fits == {"llama3-8b": 1.0, "llama3-70b": 0.0}


def test_model_that_no_longer_fits_is_a_warning(tmp_path):
    _app()
    full = healthy_gpu(memory=healthy_gpu().memory.__class__(total=24 * 2**30, free=2 * 2**30, used=22 * 2**30))
    snap = save(tmp_path, snapshot(full))
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text('[thresholds]\nmemory_held_warn_ratio = 1.0\n[[model]]\nname = "llama3-8b"\nquant = "bf16"\n')
    out = tmp_path / "r.json"
    assert run_report("json", str(out), str(cfg), str(snap)).exit_code == ExitCode.DEGRADED
    m = json.loads(out.read_text())["models"][0]
    assert m["verdict"] == "no_fit" and m["status"] == "warn"  # 2 GiB free cannot hold 16 GB of weights


def test_a_model_entry_no_run_can_satisfy_is_a_config_error_not_a_warning(monkeypatch):
    from gpufit.errors import ConfigError, UsageError

    app = _app()

    def broken(*a, **k):
        raise UsageError("context 999999 exceeds the model's max 8192")

    monkeypatch.setattr(app, "fit_on_snapshot", broken)
    watch = ModelWatch(name="llama3-8b", path="/etc/gpufit/gpufit.toml", line=7)
    with pytest.raises(ConfigError) as e:
        build_report(snapshot(healthy_gpu()), Config(models=(watch,)))
    assert e.value.exit_code == 6 and "gpufit.toml: line 7: [[model]] name='llama3-8b'" in str(e.value)


def test_no_usable_gpu_for_a_watched_model_is_the_entrys_error(monkeypatch):
    app = _app()

    def no_gpu(*a, **k):
        raise ProbeError("no usable GPU in this snapshot")

    monkeypatch.setattr(app, "fit_on_snapshot", no_gpu)
    r = build_report(snapshot(healthy_gpu()), Config(models=(ModelWatch(name="llama3-8b"),)))
    m = r.models[0]
    assert m.error.startswith("no usable GPU") and m.status == Status.WARN and m.verdict is None
    assert r.to_dict()["models"][0]["message"] == m.error  # the JSON's message is the error, worded as is


def test_broken_model_entry_exits_6_not_4(tmp_path):
    snap = save(tmp_path, snapshot(healthy_gpu()))
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text('[[model]]\nname = "llama3-8b"\ncontext = 999999\n')
    out = tmp_path / "gpufit.prom"
    assert run_report("prometheus", str(out), str(cfg), str(snap)).exit_code == ExitCode.BAD_DATA == 6
    text = out.read_text()
    assert "gpufit_report_success 0.0" in text


def test_a_bug_still_marks_the_prometheus_file_failed(tmp_path, monkeypatch):
    snap = save(tmp_path, snapshot(healthy_gpu()))
    out = tmp_path / "gpufit.prom"

    def broken(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(report_mod, "build_report", broken)
    with pytest.raises(ZeroDivisionError):
        run_report("prometheus", str(out), str(empty_config(tmp_path)), str(snap)).exit_code
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert fams["gpufit_report_success"].samples[0].value == 0


def test_renderers_take_a_pinned_report():
    """A Report built by hand (no estimate): the text words the model line, the JSON carries the same
    message, and Prometheus writes fits/needed/headroom from the typed fields."""
    from prometheus_client.parser import text_string_to_metric_families

    from gpufit.app.report import ModelCheck, ModelDevice, Report
    from gpufit.estimator.types import Verdict

    gib = 2**30
    m = ModelCheck("llama3-8b", "int8", 8192, 1, "vllm", "bf16", status=Status.WARN, verdict=Verdict.TIGHT,
                   needed_bytes=int(9.5 * gib), headroom_bytes=gib // 2,
                   devices=(ModelDevice("0", "GPU-1", int(9.5 * gib), gib // 2),))
    rep = Report(success=True, status=Status.WARN, timestamp=1714564800.0, time="2024-05-01T12:00:00Z",
                 hostname="box", models=(m,))
    line = "tight: needs 9.5 GiB (int8, context 8192, vllm), headroom 0.5 GiB"
    assert f"[WARN] llama3-8b int8: {line}" in render(rep, "text")
    obj = json.loads(render(rep, "json"))
    assert obj["models"][0]["message"] == line and obj["models"][0]["verdict"] == "tight"
    assert obj["models"][0]["devices"] == [{"index": "0", "uuid": "GPU-1", "needed_bytes": int(9.5 * gib),
                                            "headroom_bytes": gib // 2}]
    values = {(s.name, s.labels.get("model")): s.value
              for f in text_string_to_metric_families(render(rep, "prometheus")) for s in f.samples}
    assert values[("gpufit_model_fits", "llama3-8b")] == 1  # tight is on the GPUs
    assert values[("gpufit_model_needed_bytes", "llama3-8b")] == int(9.5 * gib)
    assert values[("gpufit_model_headroom_bytes", "llama3-8b")] == gib // 2
    assert values[("gpufit_report_status", None)] == 1
