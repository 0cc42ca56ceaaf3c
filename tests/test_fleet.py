"""`gpufit fleet` against a small Prometheus HTTP API on 127.0.0.1 (tests/fleet_helpers.FakePrometheus):
every capture through gpufit's own series gives `here --snapshot`'s verdict; the exporters' MIG series; stale
series; NaN and negative values; two sources disagreeing; and every way a server can answer badly, each with
its message and exit code and never a traceback."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("prometheus_client")

from gpufit.catalog import load_catalog
from gpufit.cli import cli
from gpufit.app.config import Config
from gpufit.app.fleet import parse_duration
from gpufit.app.fleet.sources import parse_match
from gpufit.probe import load_snapshot
from gpufit.render.prometheus import render
from gpufit.app.report import build_report

from fleet_helpers import (FIXTURES, FakePrometheus, Series, dcgm_text, free_by_index, nvidia_smi_text, parse_text,
                           uuid_of)

CAPTURES = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".xml", ".txt"))
CATALOG = load_catalog()
MODEL = "llama3-8b"
NODE_KEYS = {"node", "source", "stale", "gpus", "verdict", "placement", "free_bytes", "decode_tokens_per_s",
             "engine_args", "reason"}


def gpufit_series(capture, instance, **extra):
    text = render(build_report(load_snapshot(capture), Config(), CATALOG))
    return parse_text(text, {"instance": instance, "job": "node", **extra})


def fleet(url, *args, model=MODEL):
    r = CliRunner().invoke(cli, ["fleet", model, "--prometheus", url, *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    return r


def fleet_json(url, *args, model=MODEL):
    r = fleet(url, "--json", *args, model=model)
    return r.exit_code, json.loads(r.stdout) if r.stdout.strip().startswith("{") else None, r.stderr


def here(capture, model=MODEL) -> dict:
    r = CliRunner(env={"CUDA_VISIBLE_DEVICES": None}).invoke(
        cli, ["here", model, "--snapshot", str(capture), "--json"])
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {"verdict": None, "error": r.stderr}


def loadable(path) -> bool:
    try:
        snap = load_snapshot(path)
    except Exception:
        return False
    return bool(snap.gpus)


@pytest.mark.parametrize("model", ["llama3-8b", "qwen2.5-0.5b"])
def test_every_capture_through_gpufit_series_gets_heres_verdict(model):
    """The report's series are enough to rebuild each box as `here --snapshot` sees it."""
    caps = [c for c in CAPTURES if loadable(c)]
    series = []
    for i, c in enumerate(caps):
        series += gpufit_series(c, f"box{i}:9100")
    with FakePrometheus(series) as p:
        rc, got, err = fleet_json(p.url, model=model)
    assert rc in (0, 3), err
    by_node = {n["node"]: n for n in got["nodes"]}
    assert len(by_node) == len(caps)
    for i, c in enumerate(caps):
        n, h = by_node[f"box{i}:9100"], here(c, model)
        assert set(n) == NODE_KEYS
        assert n["verdict"] == h["verdict"], (c.name, n["reason"], h.get("error"))
        if h["verdict"] is None:
            continue
        assert n["free_bytes"] == free_by_index(h), c.name
        assert n["placement"] == h["placement"], c.name
        if h["verdict"] in ("fits", "tight"):
            assert n["decode_tokens_per_s"] == h["performance"]["decode_tokens_per_s"], c.name
            assert n["engine_args"] == h["engine_args"], c.name


MIG_A100 = FIXTURES / "influxdata_telegraf__a100-sxm4-v12.xml"
MIG_H100 = FIXTURES / "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-mig__590.48.01.txt"


def test_nvidia_gpu_exporter_mig_series_give_heres_mig_devices():
    series = parse_text(nvidia_smi_text(load_snapshot(MIG_H100)), {"instance": "h100:9835"})
    with FakePrometheus(series) as p:
        rc, got, err = fleet_json(p.url)
    (n,) = got["nodes"]
    h = here(MIG_H100)
    assert n["source"] == "nvidia_smi" and n["verdict"] == h["verdict"] == "fits"
    assert n["free_bytes"] == free_by_index(h) and len(n["free_bytes"]) == 4
    assert n["decode_tokens_per_s"] == h["performance"]["decode_tokens_per_s"]


def test_dcgm_mig_instances_are_the_units_and_hostname_names_the_node():
    snap = load_snapshot(MIG_A100)
    series = parse_text(dcgm_text(snap, "gpu-node-7", hostname_label="hostname"), {"instance": "10.0.0.7:9400"})
    with FakePrometheus(series) as p:
        rc, got, err = fleet_json(p.url)
    (n,) = got["nodes"]
    h = here(MIG_A100)
    assert n["node"] == "gpu-node-7" and n["source"] == "dcgm"  # dcgm-exporter >= d5e5f51 writes `hostname`
    assert n["verdict"] == h["verdict"]
    # DCGM reports whole MiB; the capture's slices are whole MiB too
    assert n["free_bytes"] == free_by_index(h)
    assert "sum of its MIG instances" in err


def test_by_label_groups_every_source_and_match_is_passed_through():
    t4 = FIXTURES / "influxdata_telegraf__tesla-t4.xml"
    series = (gpufit_series(t4, "a:9100", rack="r1") + gpufit_series(MIG_A100, "b:9100", rack="r2")
              + parse_text(dcgm_text(load_snapshot(FIXTURES / "influxdata_telegraf__a10g.xml"), "c"),
                           {"instance": "c:9400", "rack": "r3"}))
    with FakePrometheus(series) as p:
        rc, got, err = fleet_json(p.url, "--by", "rack")
        assert sorted(n["node"] for n in got["nodes"]) == ["r1", "r2", "r3"]
        rc, got, err = fleet_json(p.url, "--by", "rack", "--match", 'instance!="c:9400"')
        assert sorted(n["node"] for n in got["nodes"]) == ["r1", "r2"]
        series.append(Series({"__name__": "DCGM_FI_DEV_FB_FREE", "UUID": "GPU-1234", "gpu": "0"}, 100))
        rc, got, err = fleet_json(p.url, "--by", "rack")
        assert "1 dcgm series carry no rack label to name their node: left out" in err
        rc, got, err = fleet_json(p.url, "--match", '{rack=~"r1|r3"}')
        assert sorted(n["node"] for n in got["nodes"]) == ["a:9100", "c"]
        assert all('rack=~"r1|r3"' in q for q in p.queries[-6:] if "DCGM" in q or "gpufit" in q)


def test_two_sources_for_one_gpu_use_gpufit_and_say_so():
    t4 = FIXTURES / "influxdata_telegraf__tesla-t4.xml"
    snap = load_snapshot(t4)
    dcgm = parse_text(dcgm_text(snap, "t4"), {"instance": "t4:9400"})
    for s in dcgm:  # DCGM sees 2 GiB less free than gpufit's report did
        if s.labels["__name__"] == "DCGM_FI_DEV_FB_FREE":
            s.value -= 2048
    with FakePrometheus(gpufit_series(t4, "t4:9100") + dcgm) as p:
        rc, got, err = fleet_json(p.url)
    assert [n["node"] for n in got["nodes"]] == ["t4:9100"]  # one box, not two
    assert got["nodes"][0]["source"] == "gpufit"
    assert got["nodes"][0]["free_bytes"] == [snap.gpus[0].memory.free]
    assert "reported by gpufit (node t4:9100) and dcgm (node t4)" in err
    assert "they disagree" in err and "using gpufit" in err


def test_nan_and_negative_values_are_left_out_with_a_note():
    a5000 = FIXTURES / "influxdata_telegraf__dual_a5000-v13.xml"
    series = gpufit_series(a5000, "box:9100")
    gpu0 = uuid_of(series, 0)
    for s in series:
        if s.labels.get("uuid") == gpu0 and s.labels["__name__"] == "gpufit_gpu_memory_free_bytes":
            s.value = float("nan")
    t4 = FIXTURES / "influxdata_telegraf__tesla-t4.xml"
    bad = gpufit_series(t4, "neg:9100")
    for s in bad:
        if s.labels["__name__"] == "gpufit_gpu_memory_total_bytes":
            s.value = -1.0
    with FakePrometheus(series + bad) as p:
        rc, got, err = fleet_json(p.url)
    by = {n["node"]: n for n in got["nodes"]}
    assert by["box:9100"]["gpus"] == 2 and len(by["box:9100"]["free_bytes"]) == 1  # GPU 0 left out
    assert "memory free is nan: left out" in err
    assert by["neg:9100"]["verdict"] is None and "no usable GPU" in by["neg:9100"]["reason"]
    assert "memory total is -1: left out" in by["neg:9100"]["reason"]


def test_old_samples_and_an_old_gpufit_report_mark_the_node_stale():
    t4 = FIXTURES / "influxdata_telegraf__tesla-t4.xml"
    now = time.time()
    old = gpufit_series(t4, "old-sample:9100")
    for s in old:
        s.ts = now - 100
    old_report = gpufit_series(MIG_A100, "old-report:9100")
    for s in old_report:
        if s.labels["__name__"] == "gpufit_report_timestamp_seconds":
            s.value = now - 3600
    fresh = parse_text(nvidia_smi_text(load_snapshot(
        FIXTURES / "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt")),
        {"instance": "fresh:9835"})
    stopped = gpufit_series(FIXTURES / "influxdata_telegraf__a10g.xml", "stopped:9100")
    for s in stopped:  # its target stopped: Prometheus marked the series stale, only the window has them
        s.gone = True
    with FakePrometheus(old + old_report + fresh + stopped) as p:
        rc, got, err = fleet_json(p.url, "--max-age", "30s")
        by = {n["node"]: n for n in got["nodes"]}
        assert rc == 0 and got["fits"] == ["fresh:9835"]
        assert by["old-sample:9100"]["stale"] and "its samples are 100s old" in by["old-sample:9100"]["reason"]
        assert by["old-report:9100"]["stale"] and "gpufit report is 3600s old" in by["old-report:9100"]["reason"]
        assert by["stopped:9100"]["stale"] and "the target stopped answering" in by["stopped:9100"]["reason"]
        assert [n["node"] for n in got["nodes"]][-3:] == ["old-report:9100", "old-sample:9100", "stopped:9100"]
        rc, got, err = fleet_json(p.url, "--max-age", "30s", "--match", 'job="node"')
        assert rc == 5 and "all stale or empty" in err  # only stale nodes: no fresh GPU series
        rc, got, err = fleet_json(p.url, "--max-age", "1h")
        assert {n["node"] for n in got["nodes"] if not n["stale"]} == {"fresh:9835", "old-sample:9100"}
        assert p.queries[-1] == "max by (instance) (time() - timestamp(nvidia_smi_memory_free_bytes))"


def test_no_gpu_series_names_the_url_and_the_queries():
    with FakePrometheus([Series({"__name__": "up", "instance": "x"}, 1)]) as p:
        r = fleet(p.url)
    assert r.exit_code == 5
    assert p.url in r.stderr and "last_over_time(DCGM_FI_DEV_FB_FREE[600s]) unless DCGM_FI_DEV_FB_FREE" in r.stderr
    assert "nvidia_smi_memory_free_bytes" in r.stderr


# ---- servers that answer badly


def reply(code, body: bytes, ctype="application/json", headers=()):
    def handler(h, u, q):
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return handler


BAD = [
    ("bad_promql", reply(400, b'{"status":"error","errorType":"bad_data","error":"parse error at char 5"}'),
     2, "rejected the query"),
    ("server_error", reply(503, b'{"status":"error","errorType":"unavailable","error":"TSDB not ready"}'),
     5, "HTTP 503"),
    ("bare_500", reply(500, b"oops", "text/plain"), 5, "HTTP 500"),
    ("not_json", reply(200, b"<html><body>Sign in</body></html>", "text/html"), 5, "not JSON"),
    ("json_not_api", reply(200, b'{"hello": "world"}'), 5, "not a Prometheus query result"),
    ("matrix", reply(200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}'), 5,
     "not an instant vector"),
    # Prometheus writes label values as strings; a number named a node 5 next to a node "b" and the ranking
    # failed to sort them (an internal error) before the answer was checked
    ("label_not_string", reply(200, b'{"status":"success","data":{"resultType":"vector","result":['
                                    b'{"metric":{"__name__":"gpufit_gpu_memory_free_bytes","instance":5,'
                                    b'"uuid":"GPU-1"},"value":[1,"1"]},'
                                    b'{"metric":{"__name__":"gpufit_gpu_memory_free_bytes","instance":"b",'
                                    b'"uuid":"GPU-2"},"value":[1,"1"]}]}}'), 5, "labels are not all strings"),
    ("unauthorised", reply(401, b"no", "text/plain"), 5, "GPUFIT_PROMETHEUS_TOKEN"),
    ("not_found", reply(404, b"404 page not found", "text/plain"), 5, "is not there (404)"),
]


@pytest.mark.parametrize("name,handler,code,words", BAD, ids=[b[0] for b in BAD])
def test_bad_answers_have_a_message_and_a_code(name, handler, code, words):
    with FakePrometheus(handler=handler) as p:
        r = fleet(p.url)
    assert r.exit_code == code, r.stderr
    assert words in r.stderr and p.url in r.stderr, r.stderr


def test_a_redirect_loop_is_named():
    def loop(h, u, q):
        h.send_response(302)
        h.send_header("Location", h.path)
        h.send_header("Content-Length", "0")
        h.end_headers()

    with FakePrometheus(handler=loop) as p:
        r = fleet(p.url)
    assert r.exit_code == 5 and "redirects in a loop" in r.stderr, r.stderr


def test_a_slow_server_stops_at_the_timeout():
    def slow(h, u, q):
        time.sleep(3)
        reply(200, b"{}")(h, u, q)

    with FakePrometheus(handler=slow) as p:
        t = time.monotonic()
        r = fleet(p.url, "--timeout", "300ms")
        took = time.monotonic() - t
    assert r.exit_code == 5 and "within --timeout 0.3s" in r.stderr, r.stderr
    assert took < 2.5


def test_nothing_listening_is_exit_5():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fleet(f"http://127.0.0.1:{port}")
    assert r.exit_code == 5 and "cannot reach Prometheus" in r.stderr


def test_credentials_go_to_the_server_and_never_across_a_redirect(tmp_path, monkeypatch):
    seen = []

    def record(h, u, q):
        seen.append((h.server.server_address[1], h.headers.get("Authorization")))
        reply(200, b'{"status":"success","data":{"resultType":"vector","result":[]}}')(h, u, q)

    with FakePrometheus(handler=record) as other:
        def bounce(h, u, q):
            seen.append((h.server.server_address[1], h.headers.get("Authorization")))
            h.send_response(307)
            h.send_header("Location", other.url + h.path)
            h.send_header("Content-Length", "0")
            h.end_headers()

        with FakePrometheus(handler=bounce) as p:
            token = tmp_path / "token"
            token.write_text("s3cret\n")
            fleet(p.url, "--token-file", str(token))
            first = p.server.server_address[1]
            assert (first, "Bearer s3cret") in seen
            assert all(auth is None for port, auth in seen if port != first)
            seen.clear()
            monkeypatch.setenv("GPUFIT_PROMETHEUS_USER", "ops")
            monkeypatch.setenv("GPUFIT_PROMETHEUS_PASSWORD", "pw")
            fleet(p.url)
            assert (first, "Basic b3BzOnB3") in seen  # base64("ops:pw")


@pytest.mark.parametrize("args,words", [
    (["--prometheus", "prometheus:9090"], "give the server's http(s) URL"),
    (["--prometheus", "http://x:99999"], "not a URL"),
    (["--prometheus", "http://x", "--by", "9bad"], "not a Prometheus label name"),
    (["--prometheus", "http://x", "--match", "job=gpu"], "cannot read a label matcher"),
    (["--prometheus", "http://x", "--match", '__name__="x"'], "metric name"),
    (["--prometheus", "http://x", "--max-age", "soon"], "cannot read duration"),
    (["--prometheus", "http://x", "--top", "0"], "--top must be at least 1"),
    (["--prometheus", "http://x", "--quant", "q9"], "unknown"),
], ids=["no_scheme", "bad_port", "bad_label", "bad_matcher", "name_matcher", "bad_duration", "top0", "quant"])
def test_bad_options_are_usage_errors_before_any_query(args, words):
    r = CliRunner().invoke(cli, ["fleet", MODEL, *args])
    assert r.exit_code == 2 and words in r.stderr, r.stderr


def test_parse_match_and_duration():
    assert parse_match('{job="gpu", zone=~"a|b"}') == 'job="gpu",zone=~"a|b"'
    assert parse_match("  ") == ""
    assert parse_match("env!='prod'") == "env!='prod'"
    assert parse_duration("2m", "--max-age") == 120
    assert parse_duration("500ms", "--timeout") == 0.5
    assert parse_duration("90", "--max-age") == 90


def test_fits_nowhere_alert_fires_only_when_no_fresh_host_fits(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian/Ubuntu: apt-get install prometheus)")
    rules = Path(__file__).resolve().parents[1] / "docs" / "gpufit-alerts.yml"
    t = tmp_path / "t.yml"
    # box1 fits for 20m then not; box2 never fits; box3 fits but its report stopped at 0 (stale)
    t.write_text(f"""
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'gpufit_model_fits{{instance="box1",model="llama3-8b",quant="bf16"}}'
        values: '1x20 0x40'
      - series: 'gpufit_report_timestamp_seconds{{instance="box1"}}'
        values: '0+60x60'
      - series: 'gpufit_model_fits{{instance="box2",model="llama3-8b",quant="bf16"}}'
        values: '0x60'
      - series: 'gpufit_report_timestamp_seconds{{instance="box2"}}'
        values: '0+60x60'
      - series: 'gpufit_model_fits{{instance="box3",model="llama3-8b",quant="bf16"}}'
        values: '1x60'
      - series: 'gpufit_report_timestamp_seconds{{instance="box3"}}'
        values: '0x60'
    alert_rule_test:
      - eval_time: 25m
        alertname: WatchedModelFitsNowhere
        exp_alerts: []
      - eval_time: 35m
        alertname: WatchedModelFitsNowhere
        exp_alerts:
          - exp_labels: {{severity: critical, model: llama3-8b, quant: bf16}}
            exp_annotations:
              summary: "llama3-8b (bf16) fits on no host of the fleet"
              description: "Run `gpufit fleet llama3-8b --prometheus URL` for what is using the GPUs and which node would take it if emptied."
""")
    r = subprocess.run([promtool, "test", "rules", str(t)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _box(tmp_path, name, snap):
    path = tmp_path / f"{name}.json"
    path.write_text(snap.to_json())
    return path


def test_offload_nvlink_and_unified_memory_boxes_match_here(tmp_path):
    """Host RAM (CPU offload), NVLink (tensor-parallel speed) and unified memory come through the series."""
    import dataclasses

    from gpufit.probe.snapshot import NvLink

    from report_helpers import healthy_gpu, snapshot

    linked = [dataclasses.replace(healthy_gpu(i), nvlink=(NvLink(link=0, up=True), NvLink(link=1, up=True)))
              for i in (0, 1)]
    gh200 = dataclasses.replace(healthy_gpu(0), name="NVIDIA GH200 480GB", pci_device_id="0x234210DE",
                                unified_memory=True)
    boxes = {
        "ram": _box(tmp_path, "ram", snapshot(healthy_gpu(0), healthy_gpu(1))),
        "nvlink": _box(tmp_path, "nvlink", snapshot(*linked)),
        "unified": _box(tmp_path, "unified", snapshot(gh200, ram_total_bytes=480 * 2**30,
                                                      ram_available_bytes=400 * 2**30)),
    }
    series = []
    for name, path in boxes.items():
        series += gpufit_series(path, f"{name}:9100")
    cases = [("llama3-70b", ["--quant", "q8_0"]), ("llama3-70b", ["--quant", "awq", "--context", "2048"]),
             ("llama3-8b", ["--batch", "64"])]
    seen = {}
    with FakePrometheus(series) as p:
        for model, opts in cases:
            rc, got, err = fleet_json(p.url, *opts, model=model)
            by = {n["node"]: n for n in got["nodes"]}
            for name, path in boxes.items():
                r = CliRunner(env={"CUDA_VISIBLE_DEVICES": None}).invoke(
                    cli, ["here", model, "--snapshot", str(path), "--json", *opts])
                h = json.loads(r.stdout)
                n = by[f"{name}:9100"]
                assert n["verdict"] == h["verdict"], (model, opts, name, n["reason"])
                assert n["free_bytes"] == free_by_index(h) and n["placement"] == h["placement"], (model, name)
                if h["verdict"] in ("fits", "tight"):
                    assert n["decode_tokens_per_s"] == h["performance"]["decode_tokens_per_s"], (model, name)
            seen[(model, tuple(opts))] = {k: by[f"{k}:9100"] for k in boxes}
    # the cases reach what they are for: offload with host RAM, tensor parallel over NVLink vs not
    assert seen[("llama3-70b", ("--quant", "q8_0"))]["ram"]["verdict"] == "offload"
    tp = seen[("llama3-70b", ("--quant", "awq", "--context", "2048"))]
    assert tp["nvlink"]["placement"]["strategy"] == "tensor_parallel" == tp["ram"]["placement"]["strategy"]
    assert tp["nvlink"]["decode_tokens_per_s"] > tp["ram"]["decode_tokens_per_s"]


@pytest.fixture
def self_signed(tmp_path):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return str(cert), str(key)


def test_tls_is_verified_by_default(self_signed):
    t4 = FIXTURES / "influxdata_telegraf__tesla-t4.xml"
    with FakePrometheus(gpufit_series(t4, "t4:9100"), tls=self_signed) as p:
        r = fleet(p.url)
        assert r.exit_code == 5 and "TLS failed" in r.stderr and "--ca-file" in r.stderr, r.stderr
        rc, got, err = fleet_json(p.url, "--ca-file", self_signed[0])
        assert rc == 3 and [n["node"] for n in got["nodes"]] == ["t4:9100"], err
        rc, got, err = fleet_json(p.url, "--insecure")
        assert rc == 3 and got["nodes"], err


def test_a_fresh_source_wins_over_a_stale_one_for_the_same_gpu():
    """gpufit comes first, but not when its report is old and DCGM's reading is fresh."""
    t4 = FIXTURES / "influxdata_telegraf__tesla-t4.xml"
    stale = gpufit_series(t4, "t4:9100")
    for s in stale:
        if s.labels["__name__"] == "gpufit_report_timestamp_seconds":
            s.value = time.time() - 3600
    dcgm = parse_text(dcgm_text(load_snapshot(t4), "t4"), {"instance": "t4:9400"})
    with FakePrometheus(stale + dcgm) as p:
        rc, got, err = fleet_json(p.url)
    assert [(n["node"], n["source"], n["stale"]) for n in got["nodes"]] == [("t4", "dcgm", False)]
    assert "using dcgm (gpufit's is stale)" in err


def test_prometheus_warnings_are_passed_on():
    from fleet_helpers import answer

    series = gpufit_series(FIXTURES / "influxdata_telegraf__tesla-t4.xml", "t4:9100")

    def warn(h, u, q):
        doc = answer(series, q, time.time())
        doc["warnings"] = ["partial response: store 2 did not answer"]
        reply(200, json.dumps(doc).encode())(h, u, q)

    with FakePrometheus(handler=warn) as p:
        rc, got, err = fleet_json(p.url)
    assert rc == 3 and got["nodes"][0]["node"] == "t4:9100"
    assert "Prometheus warns on" in err and "partial response: store 2 did not answer" in err


def test_a_gpu_lost_since_the_last_report_does_not_make_its_node_stale():
    """gpufit writes no memory series for a lost GPU: its free series is in the window but not now."""
    a5000 = FIXTURES / "influxdata_telegraf__dual_a5000-v13.xml"
    series = gpufit_series(a5000, "box:9100")
    gpu1 = uuid_of(series, 0)
    for s in series:
        if s.labels.get("uuid") == gpu1 and s.labels["__name__"].startswith("gpufit_gpu_memory_"):
            s.gone = True  # it was there a minute ago
        if s.labels.get("uuid") == gpu1 and s.labels["__name__"] == "gpufit_gpu_available":
            s.value = 0
    with FakePrometheus(series) as p:
        rc, got, err = fleet_json(p.url, model="qwen2.5-0.5b")
    (n,) = got["nodes"]
    assert n["stale"] is False and n["gpus"] == 2 and len(n["free_bytes"]) == 1
    assert n["verdict"] is not None  # estimated on the GPU that is left
