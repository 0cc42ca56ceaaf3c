"""Prometheus output: every file parses with prometheus_client's own parser, unsupported values are left
out (never 0), labels follow DESIGN.md, and writes are atomic even with many writers at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from gpufit.app.config import Config
from gpufit.errors import WriteError
from gpufit.fsutil import write_atomic
from gpufit.render.prometheus import render
from gpufit.app.report import build_report, failure_report

from report_helpers import CAPTURES, capture_params, healthy_gpu, load_capture, snapshot, unsupported_gpu

# labels a per-GPU series may carry besides uuid: the dimension that names the series
DIMENSIONS = {"check", "kind", "counter", "reason", "cause"}


def samples(text: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def series(text: str, name: str) -> list:
    return [s for s in samples(text) if s.name == name]


@pytest.mark.parametrize("path", capture_params())
def test_every_capture_renders_parseable_metrics(path):
    snap = load_capture(path)
    text = render(build_report(snap, Config()))
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name, fam in fams.items():
        assert name.startswith("gpufit_"), name
        assert fam.samples, f"{name}: a family with no samples is noise (node_exporter drops it)"
    info = series(text, "gpufit_gpu_info")
    assert len(info) == len(snap.gpus)
    for s in info:
        assert set(s.labels) == {"uuid", "name", "index", "catalog_key", "driver", "pci_device_id"} and s.value == 1
    uuids = {s.labels["uuid"] for s in info}
    assert len(uuids) == len(snap.gpus), "uuid labels must tell the GPUs apart"
    for s in samples(text):
        if s.name.startswith("gpufit_gpu_") and s.name != "gpufit_gpu_info":
            assert "uuid" in s.labels and set(s.labels) - {"uuid"} <= DIMENSIONS, s
            assert s.labels["uuid"] in uuids
    # every value NVML reported is there; every one it did not is absent, not 0
    labels = [s.labels["uuid"] for s in info]
    for g, u in zip(snap.gpus, labels):
        assert u.startswith(g.uuid or "unknown-")
        got = {s.name for s in samples(text) if s.labels.get("uuid") == u}
        for metric, value in (("gpufit_gpu_temperature_celsius", g.temperature_c),
                              ("gpufit_gpu_power_watts", g.power_w),
                              ("gpufit_gpu_power_limit_watts", g.power_limit_w),
                              ("gpufit_gpu_memory_total_bytes", g.memory.total),
                              ("gpufit_gpu_utilization_ratio", g.utilization.gpu),
                              ("gpufit_gpu_clock_sm_hertz", g.clocks_mhz.sm)):
            assert (metric in got) == (value is not None), (metric, value)
    keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples(text)]
    assert len(keys) == len(set(keys)), "a repeated series makes node_exporter reject the file"
    assert series(text, "gpufit_report_success")[0].value == 1


def test_duplicate_uuids_do_not_make_duplicate_series():
    """node_exporter rejects a whole textfile with a repeated series; anonymised captures repeat UUIDs."""
    a, b = healthy_gpu(0), healthy_gpu(1)
    b = b.__class__(**{**b.__dict__, "uuid": a.uuid})
    text = render(build_report(snapshot(a, b), Config()))
    keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples(text)]
    assert len(keys) == len(set(keys))
    assert len(series(text, "gpufit_gpu_info")) == 2


def test_units_are_base_units():
    g = healthy_gpu(utilization=healthy_gpu().utilization.__class__(gpu=75, memory=10))
    text = render(build_report(snapshot(g), Config()))
    one = {s.name: s.value for s in samples(text) if s.labels.get("uuid") == g.uuid and len(s.labels) == 1}
    assert one["gpufit_gpu_utilization_ratio"] == pytest.approx(0.75)
    assert one["gpufit_gpu_clock_sm_hertz"] == 1695e6
    assert one["gpufit_gpu_memory_total_bytes"] == 24 * 2**30
    assert one["gpufit_gpu_temperature_celsius"] == 45
    ecc = series(text, "gpufit_gpu_ecc_errors_total")
    assert {(s.labels["kind"], s.labels["counter"]) for s in ecc} == {
        ("corrected", "volatile"), ("uncorrected", "volatile"), ("corrected", "aggregate"),
        ("uncorrected", "aggregate")}


def test_unsupported_values_are_left_out_not_zero():
    g = unsupported_gpu()
    text = render(build_report(snapshot(g), Config()))
    names = {s.name for s in samples(text) if s.labels.get("uuid") == g.uuid}
    for absent in ("gpufit_gpu_temperature_celsius", "gpufit_gpu_power_watts", "gpufit_gpu_clock_sm_hertz",
                   "gpufit_gpu_ecc_errors_total", "gpufit_gpu_utilization_ratio", "gpufit_gpu_pcie_link_gen"):
        assert absent not in names
    # unknown checks are not written as a status either (0 would claim "ok")
    checks = {s.labels["check"] for s in series(text, "gpufit_gpu_health_status") if s.labels["uuid"] == g.uuid}
    assert "temperature" not in checks and "available" in checks


def test_health_status_values():
    g = healthy_gpu(temperature_c=95)
    text = render(build_report(snapshot(g), Config()))
    st = {s.labels["check"]: s.value for s in series(text, "gpufit_gpu_health_status")}
    assert st["temperature"] == 2 and st["available"] == 0
    assert series(text, "gpufit_report_status")[0].value == 2


def test_failed_probe_still_writes_a_valid_file(tmp_path):
    out = tmp_path / "gpufit.prom"
    write_atomic(out, render(failure_report("NVML: driver not loaded", now=1700000000.5)))
    text = out.read_text()
    assert series(text, "gpufit_report_success")[0].value == 0
    assert series(text, "gpufit_report_timestamp_seconds")[0].value == 1700000000.5
    assert not [s for s in samples(text) if s.name.startswith("gpufit_gpu_")]


def test_write_atomic_leaves_a_readable_file_and_no_temp(tmp_path):
    out = tmp_path / "gpufit.prom"
    write_atomic(out, "a 1\n")
    write_atomic(out, "a 2\n")
    assert out.read_text() == "a 2\n"
    assert oct(out.stat().st_mode & 0o777) == "0o644", "node_exporter runs as another user: must be readable"
    assert [p.name for p in tmp_path.iterdir()] == ["gpufit.prom"]


def test_write_atomic_failure_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    out = tmp_path / "gpufit.prom"
    write_atomic(out, "old 1\n")

    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteError, match="No space left on device") as e:
        write_atomic(out, "new 1\n")
    assert e.value.exit_code == 2
    assert out.read_text() == "old 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gpufit.prom"]


def _texts():
    snaps = [load_capture(p) for p in CAPTURES[:6]] + [snapshot(healthy_gpu()), snapshot(unsupported_gpu())]
    return [render(build_report(s, Config())) for s in snaps]


def test_concurrent_writers_never_expose_half_a_file(tmp_path):
    """Threads rewrite one file with different (large) reports while a reader reads it over and over:
    every read is one whole report that parses."""
    out = tmp_path / "gpufit.prom"
    texts = _texts()
    write_atomic(out, texts[0])
    stop = threading.Event()
    errors = []

    def writer(i):
        n = 0
        while not stop.is_set() and n < 200:
            write_atomic(out, texts[(i + n) % len(texts)])
            n += 1

    reads = 0
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            got = out.read_text()
            reads += 1
            if got not in texts:
                errors.append(got[-200:])
                break
            list(text_string_to_metric_families(got))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert reads > 10
    assert [p.name for p in tmp_path.iterdir()] == ["gpufit.prom"]


def test_concurrent_report_processes(tmp_path):
    """Whole `run_report` runs in separate processes writing one file at once, a reader parsing between."""
    out = tmp_path / "gpufit.prom"
    snaps = CAPTURES[:4]
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    code = ("import sys; from gpufit.app.report import run_report\n"
            "for _ in range(15): run_report('prometheus', sys.argv[1], sys.argv[2], sys.argv[3])\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), str(cfg), str(s)], env=env,
                              stderr=subprocess.DEVNULL) for s in snaps]
    reads = 0
    try:
        while any(p.poll() is None for p in procs):
            if out.exists():
                text = out.read_text()
                fams = list(text_string_to_metric_families(text))
                assert any(f.name == "gpufit_report_success" for f in fams)
                assert text.endswith("\n")
                reads += 1
    finally:
        for p in procs:
            p.wait(timeout=120)
    assert all(p.returncode == 0 for p in procs)
    assert reads > 0
    assert [p.name for p in tmp_path.iterdir() if p.name != "gpufit.toml"] == ["gpufit.prom"]
