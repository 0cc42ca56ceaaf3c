"""End to end: gpufit writes its textfile, a real node_exporter reads it, and a scrape shows the gpufit
series with node_textfile_scrape_error 0. Skips when node_exporter is not installed (.ci/run installs
Debian's prometheus-node-exporter where it can)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from gpufit.errors import ProbeError
from gpufit.app.report import run_report

from report_helpers import CAPTURES, healthy_gpu, load_capture, snapshot

BINARY = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
pytestmark = pytest.mark.skipif(
    BINARY is None,
    reason="node_exporter not installed (Debian/Ubuntu: apt-get install prometheus-node-exporter)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exporter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("textfile")
    port = free_port()
    proc = subprocess.Popen(
        [BINARY, f"--web.listen-address=127.0.0.1:{port}", f"--collector.textfile.directory={folder}",
         "--collector.disable-defaults", "--collector.textfile"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"node_exporter did not start: {proc.stderr.read()}")
            time.sleep(0.1)
    yield folder, url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def scrape(url) -> dict:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def families(path) -> set[str]:
    return {f.name for f in text_string_to_metric_families(path.read_text())}


def config(tmp_path):
    p = tmp_path / "gpufit.toml"
    p.write_text("")
    return p


def test_every_capture_through_node_exporter(exporter, tmp_path):
    folder, url = exporter
    out = folder / "gpufit.prom"
    for path in CAPTURES:
        run_report("prometheus", str(out), str(config(tmp_path)), str(path)).exit_code
        got = scrape(url)
        assert got["node_textfile_scrape_error"].samples[0].value == 0, path.name
        assert families(out) <= set(got), (path.name, families(out) - set(got))
        info = got["gpufit_gpu_info"].samples
        assert len(info) == len(load_capture(path).gpus), path.name
        assert got["gpufit_report_success"].samples[0].value == 1


def test_hand_built_report_with_models_and_failure(exporter, tmp_path, monkeypatch):
    folder, url = exporter
    out = folder / "gpufit.prom"
    snap = tmp_path / "box.json"
    snap.write_text(snapshot(healthy_gpu(0), healthy_gpu(1, temperature_c=86)).to_json())
    assert run_report("prometheus", str(out), str(config(tmp_path)), str(snap)).exit_code == 4
    got = scrape(url)
    assert got["node_textfile_scrape_error"].samples[0].value == 0
    status = {(s.labels["uuid"][-1], s.labels["check"]): s.value for s in got["gpufit_gpu_health_status"].samples}
    assert status[("1", "temperature")] == 1 and status[("0", "temperature")] == 0

    import gpufit.probe

    def no_driver(*a, **k):
        raise ProbeError("NVML: driver/library version mismatch")

    monkeypatch.setattr(gpufit.probe, "take_snapshot", no_driver)
    assert run_report("prometheus", str(out), str(config(tmp_path))).exit_code == 5
    got = scrape(url)
    assert got["node_textfile_scrape_error"].samples[0].value == 0
    assert got["gpufit_report_success"].samples[0].value == 0
    assert got["gpufit_report_timestamp_seconds"].samples[0].value > 1.6e9
    assert "gpufit_gpu_info" not in got


ALERTS = Path(__file__).resolve().parents[1] / "docs" / "gpufit-alerts.yml"
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian/Ubuntu: apt-get install prometheus)")
def test_example_alert_rules_load_and_fire(tmp_path):
    r = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    tests = tmp_path / "alerts-test.yml"
    tests.write_text(f"""
rule_files: [{ALERTS}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'gpufit_gpu_health_status{{instance="box1",uuid="GPU-1",check="temperature"}}'
        values: '2x20'
      - series: 'gpufit_model_fits{{instance="box1",model="llama3-8b",quant="int8"}}'
        values: '0x20'
      - series: 'gpufit_report_success{{instance="box1"}}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 11m
        alertname: GpuHealthCritical
        exp_alerts:
          - exp_labels: {{severity: critical, instance: box1, uuid: GPU-1, check: temperature}}
            exp_annotations:
              summary: "GPU GPU-1 on box1: temperature critical"
              description: "Run `gpufit report` on the host for the value and threshold."
      - eval_time: 16m
        alertname: WatchedModelNoLongerFits
        exp_alerts:
          - exp_labels: {{severity: warning, instance: box1, model: llama3-8b, quant: int8}}
            exp_annotations:
              summary: "llama3-8b (int8) no longer fits on box1"
              description: "Free GPU memory dropped; see gpufit_gpu_memory_used_bytes and `gpufit here llama3-8b`."
      - eval_time: 16m
        alertname: GpufitReportFailing
        exp_alerts: []
""")
    r = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
