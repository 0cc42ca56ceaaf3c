"""End to end with the real parts: five node_exporters on 127.0.0.1 free ports, each with its own textfile
folder (three written by `gpufit report --format prometheus --snapshot` of different captures, one with
dcgm-exporter's series, one with nvidia_gpu_exporter's), a real Prometheus scraping them every second, and
`gpufit fleet` asked about it. Each node's answer must be the one `gpufit here --snapshot` gives on the same
capture. Skips only where prometheus / prometheus-node-exporter are not installed (.ci/run installs them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from fleet_helpers import FIXTURES, free_by_index, dcgm_text, nvidia_smi_text

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    NODE_EXPORTER is None or PROMETHEUS is None,
    reason="needs prometheus and prometheus-node-exporter (Debian/Ubuntu: apt-get install prometheus "
           "prometheus-node-exporter; .ci/run does)")

MODEL = "llama3-8b"
# fp16, since the V100s cannot run bf16 kernels (vLLM refuses); 0.95 so vLLM's budget on a 20 GiB MIG
# slice holds the 18 GiB the model needs (at 0.90 vLLM refuses it)
OPTS = ("--quant", "fp16", "--gpu-memory-utilization", "0.95")
GPUFIT_CAPTURES = {  # node -> capture: MIG slices that fit, two busy cards, eight busy cards
    "a100-mig": "influxdata_telegraf__a100-sxm4-v12.xml",
    "a5000x2": "influxdata_telegraf__dual_a5000-v13.xml",
    "v100x8": "GuanceCloud_datakit__gtx-8card.xml",
}
DCGM_CAPTURE = "influxdata_telegraf__tesla-t4.xml"  # too small even empty
SMI_CAPTURE = "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"
DCGM_HOST = "t4-box"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpufit(*args, timeout=120):
    # `here` honours CUDA_VISIBLE_DEVICES; a fleet node's verdict is about the whole box
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run([sys.executable, "-m", "gpufit", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def start(cmd, stderr_path):
    """A process in its own group, so the finalizer stops it and anything it started."""
    err = open(stderr_path, "w")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True), err


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def api(url, promql):
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as r:
        return json.load(r)["data"]["result"]


def write_report(folder, capture, config):
    r = gpufit("report", "--format", "prometheus", "--snapshot", str(FIXTURES / capture), "--config", str(config),
               "--output", str(folder / "gpufit.prom"))
    assert r.returncode in (0, 4, 5), r.stderr  # health status, not our concern here
    assert (folder / "gpufit.prom").stat().st_size > 0


class Fleet:
    def __init__(self):
        self.procs: dict = {}
        self.nodes: dict = {}  # our node name -> the name fleet reports
        self.folders: dict = {}
        self.url = ""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, request):
    base = tmp_path_factory.mktemp("fleet")
    config = base / "gpufit.toml"
    config.write_text("")
    f = Fleet()
    files = []

    def cleanup():
        for p in f.procs.values():
            stop(p)
        for e in files:
            e.close()

    request.addfinalizer(cleanup)
    from gpufit.probe import load_snapshot

    targets = {"node": [], "dcgm": [], "smi": []}
    for name in [*GPUFIT_CAPTURES, "dcgm", "smi"]:
        folder = base / name
        folder.mkdir()
        f.folders[name] = folder
        if name in GPUFIT_CAPTURES:
            write_report(folder, GPUFIT_CAPTURES[name], config)
        elif name == "dcgm":
            (folder / "dcgm.prom").write_text(dcgm_text(load_snapshot(FIXTURES / DCGM_CAPTURE), DCGM_HOST))
        else:
            (folder / "smi.prom").write_text(nvidia_smi_text(load_snapshot(FIXTURES / SMI_CAPTURE)))
        port = free_port()
        p, e = start([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                      f"--collector.textfile.directory={folder}", "--collector.disable-defaults",
                      "--collector.textfile"], base / f"{name}.err")
        f.procs[name] = p
        files.append(e)
        job = "node" if name in GPUFIT_CAPTURES else name
        targets[job].append(f"127.0.0.1:{port}")
        f.nodes[name] = DCGM_HOST if name == "dcgm" else f"127.0.0.1:{port}"
    cfg = base / "prometheus.yml"
    jobs = "\n".join(f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(t)}"
                     for job, t in targets.items())
    cfg.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                   f"scrape_configs:\n{jobs}\n")
    port = free_port()
    f.url = f"http://127.0.0.1:{port}"
    p, e = start([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={base / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{port}"], base / "prometheus.err")
    f.procs["prometheus"] = p
    files.append(e)
    deadline = time.monotonic() + 90
    while True:
        try:
            up = api(f.url, "up")
            have = {(s["metric"]["instance"], s["value"][1]) for s in up}
            gpu = api(f.url, 'count({__name__=~"gpufit_gpu_memory_free_bytes|DCGM_FI_DEV_FB_FREE'
                             '|nvidia_smi_memory_free_bytes"})')
            # one free-memory series per card: A100 (its MIG slices have their own), 2 x A5000, 8 x V100S,
            # the T4 from DCGM, the H100 from nvidia_gpu_exporter
            if len(have) == 5 and all(v == "1" for _, v in have) and gpu and int(gpu[0]["value"][1]) == 13:
                break
        except OSError:
            pass
        dead = [n for n, pr in f.procs.items() if pr.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = {n: (base / f"{n}.err").read_text()[-800:] for n in f.procs}
            pytest.fail(f"fleet did not come up (dead: {dead}): {logs}")
        time.sleep(0.3)
    return f


def run_fleet(f, *args):
    r = gpufit("fleet", MODEL, "--prometheus", f.url, "--json", *OPTS, *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


def here(capture) -> dict:
    r = gpufit("here", MODEL, "--snapshot", str(FIXTURES / capture), "--json", *OPTS)
    assert r.returncode in (0, 3, 4), r.stderr
    return json.loads(r.stdout)


CAPTURE_OF = {**GPUFIT_CAPTURES, "dcgm": DCGM_CAPTURE, "smi": SMI_CAPTURE}
SOURCE_OF = {**{n: "gpufit" for n in GPUFIT_CAPTURES}, "dcgm": "dcgm", "smi": "nvidia_smi"}


def test_each_node_gets_the_verdict_here_gives_on_its_capture(fleet):
    rc, got, err = run_fleet(fleet)
    assert rc == 0, err
    assert got["schema"] == "gpufit.fleet/1"
    by_node = {n["node"]: n for n in got["nodes"]}
    assert set(by_node) == set(fleet.nodes.values())
    for name, capture in CAPTURE_OF.items():
        n = by_node[fleet.nodes[name]]
        h = here(capture)
        assert set(n) == {"node", "source", "stale", "gpus", "verdict", "placement", "free_bytes",
                          "decode_tokens_per_s", "engine_args", "reason"}
        assert n["source"] == SOURCE_OF[name] and n["stale"] is False
        assert n["verdict"] == h["verdict"], (name, n["reason"], h["warnings"])
        assert n["free_bytes"] == free_by_index(h), name
        assert n["placement"] == h["placement"], name
        assert n["engine_args"] == h["engine_args"], name
        if h["verdict"] in ("fits", "tight"):
            assert n["decode_tokens_per_s"] == h["performance"]["decode_tokens_per_s"], name


def test_ranking_fits_now_then_fits_if_empty_then_cannot(fleet):
    rc, got, _ = run_fleet(fleet)
    nodes = fleet.nodes
    # the H100 (79 GiB free) has more headroom than a 20 GiB MIG slice: both one card, H100 first
    assert got["fits"] == [nodes["smi"], nodes["a100-mig"]]
    order = [n["node"] for n in got["nodes"]]
    assert order == [nodes["smi"], nodes["a100-mig"], nodes["a5000x2"], nodes["v100x8"], nodes["dcgm"]]
    reasons = {n["node"]: n["reason"] for n in got["nodes"]}
    assert reasons[nodes["a5000x2"]].startswith("would fit if its GPUs were empty")
    assert reasons[nodes["v100x8"]].startswith("would fit if its GPUs were empty")
    assert reasons[nodes["dcgm"]].startswith("not even with its GPUs empty: ")  # a 15 GiB T4


def test_nothing_fits_exits_3_and_top_and_match_narrow(fleet):
    r = gpufit("fleet", "llama3.1-405b", "--prometheus", fleet.url, "--json")
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["fits"] == []
    rc, got, _ = run_fleet(fleet, "--top", "1")
    assert rc == 0 and [n["node"] for n in got["nodes"]] == [fleet.nodes["smi"]]
    rc, got, _ = run_fleet(fleet, "--match", '{job="dcgm"}')
    assert rc == 3 and [n["node"] for n in got["nodes"]] == [DCGM_HOST]


def test_text_output_names_the_best_node_and_its_flags(fleet):
    r = gpufit("fleet", MODEL, "--prometheus", fleet.url, *OPTS)
    assert r.returncode == 0, r.stderr
    assert f"Fits now, best first: {fleet.nodes['smi']}, {fleet.nodes['a100-mig']}" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith(f"On {fleet.nodes['smi']}: "))
    assert "vllm serve meta-llama/Meta-Llama-3-8B" in line and "--gpu-memory-utilization 0.95" in line


def test_bad_label_selector_and_no_series_are_usage_and_probe_errors(fleet):
    rc, got, err = run_fleet(fleet, "--by", "no_such_label")
    assert rc == 2 and "no GPU series carries that label" in err and "instance" in err
    rc, got, err = run_fleet(fleet, "--match", 'job="nothing-here"')
    assert rc == 5 and fleet.url in err and "last_over_time(" in err
    rc, got, err = run_fleet(fleet, "--match", 'job=~"("')  # Prometheus rejects the regex: bad_data
    assert rc == 2 and "rejected the query" in err, err


def test_a_stopped_exporter_marks_its_node_stale(fleet):
    """Last in this module: it stops the nvidia_gpu_exporter node's exporter."""
    stop(fleet.procs["smi"])
    stopped = time.time()
    config = fleet.folders["a100-mig"].parent / "gpufit.toml"
    time.sleep(max(0.0, stopped + 6 - time.time()))
    # the gpufit boxes' timer runs again, so their reports are fresh; wait for Prometheus to scrape them
    written = time.time()
    for name, capture in GPUFIT_CAPTURES.items():
        write_report(fleet.folders[name], capture, config)
    deadline = time.monotonic() + 30
    while True:
        ts = api(fleet.url, "gpufit_report_timestamp_seconds")
        if len(ts) == 3 and all(float(s["value"][1]) >= written for s in ts):
            break
        assert time.monotonic() < deadline, ts
        time.sleep(0.2)
    rc, got, err = run_fleet(fleet, "--max-age", "5s")
    assert rc == 0, err
    by_node = {n["node"]: n for n in got["nodes"]}
    smi = by_node[fleet.nodes["smi"]]
    assert smi["stale"] is True and smi["verdict"] is None and smi["gpus"] == 0
    assert "--max-age 5s" in smi["reason"]
    assert got["fits"] == [fleet.nodes["a100-mig"]]
    assert got["nodes"][-1]["node"] == fleet.nodes["smi"]  # no data: listed last
    assert all(not n["stale"] for n in got["nodes"] if n["node"] != fleet.nodes["smi"])
