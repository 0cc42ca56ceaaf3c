#!/usr/bin/env python3
"""How `gpufit fleet` scales: 10 / 100 / 1,000 nodes x 8 GPUs from a synthetic Prometheus API on 127.0.0.1.

    .venv/bin/python bench/fleet.py [--nodes 10,100,1000] [--runs 3] [--model llama3-8b] [--profile]

The fleet is gpufit textfile series (the heaviest source: info, four memory series, host RAM and report
time per box), mixed hardware (H100, A100 80GB, L40S, RTX 4090 boxes), every GPU's free memory drawn at
random (seeded), so no two nodes share a shape and the per-shape cache cannot help: the worst case. A second
row per size has idle identical boxes (one shape per hardware kind), the best case. The server answers from
pre-rendered JSON (warmed once), so the figure is fleet's own cost: HTTP, JSON decoding, building the
snapshots, the estimates, ranking. Each row is the median of --runs in-process runs of run_fleet() (no
interpreter start-up; `gpufit fleet` adds about the start-up of `gpufit plan`, see bench/startup.py).
Then `gpufit plan MODEL --gpu h100-sxm:1000` and `--gpu rtx-3060:1000` in-process (issue 13's bar: <= 1 s).
--profile prints the top of a cProfile of the 1,000-node run.

The goal (issue 13): fleet over 1,000 nodes x 8 GPUs <= 2 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fleet_helpers import FakePrometheus, Series, answer  # noqa: E402

from gpufit.units import GIB  # noqa: E402
HARDWARE = [  # NVML name, total bytes (what those cards report), reserved
    ("NVIDIA H100 80GB HBM3", 85520809984, 502267904),
    ("NVIDIA A100-SXM4-80GB", 85899345920, 911212544),
    ("NVIDIA L40S", 48305799168, 566231040),
    ("NVIDIA GeForce RTX 4090", 25757220864, 400556032),
]


def synthetic_fleet(nodes: int, gpus: int = 8, idle: bool = False, seed: int = 13) -> list[Series]:
    rnd = random.Random(seed)
    out = []
    now = time.time()
    for n in range(nodes):
        name, total, reserved = HARDWARE[n % len(HARDWARE)]
        inst = {"instance": f"gpu-node-{n:04d}:9100", "job": "node"}
        out.append(Series({"__name__": "gpufit_report_timestamp_seconds", **inst}, now))
        out.append(Series({"__name__": "gpufit_host_memory_total_bytes", **inst}, 1024 * GIB))
        out.append(Series({"__name__": "gpufit_host_memory_available_bytes", **inst}, 900 * GIB))
        for i in range(gpus):
            uuid = f"GPU-{n:08x}-0000-4000-8000-{i:012x}"
            used = 0 if idle else rnd.choice([0, 0, 1, 2, 10, 20, 40, 60, 70]) * GIB
            used = min(used, total - reserved - GIB)
            free = total - reserved - used
            lab = {"uuid": uuid, **inst}
            out.append(Series({"__name__": "gpufit_gpu_info", **lab, "name": name, "index": str(i),
                               "catalog_key": "", "driver": "570.86.15", "pci_device_id": ""}, 1))
            out.append(Series({"__name__": "gpufit_gpu_available", **lab}, 1))
            for kind, v in (("total", total), ("free", free), ("used", used), ("reserved", reserved)):
                out.append(Series({"__name__": f"gpufit_gpu_memory_{kind}_bytes", **lab}, v))
    return out


class Prerendered(FakePrometheus):
    """Answers each distinct query once from the series, then from the stored bytes."""

    def __init__(self, series):
        self._bodies: dict = {}
        bodies = self._bodies

        def handler(h, u, q):
            body = bodies.get(q)
            if body is None:
                body = bodies[q] = json.dumps(answer(series, q, time.time())).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        super().__init__(series, handler=handler)


def time_fleet(url: str, model: str, runs: int) -> tuple[float, object]:
    from gpufit.catalog import load_catalog
    from gpufit.app.fleet import run_fleet

    catalog = load_catalog()
    run_fleet(model, url, catalog=catalog)  # warm: server renders its answers, imports load
    times = []
    ans = None
    for _ in range(runs):
        t = time.perf_counter()
        ans = run_fleet(model, url, catalog=catalog)
        times.append(time.perf_counter() - t)
    return statistics.median(times), ans


def time_cli(url: str, model: str) -> float:
    import subprocess

    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gpufit", "fleet", model, "--prometheus", url, "--json"],
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 3):
        raise SystemExit(f"gpufit fleet exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return dt


def time_plan(model: str, gpu: str) -> float:
    from gpufit import app
    from gpufit.catalog import load_catalog
    from gpufit.estimator.types import devices_from_specs

    catalog = load_catalog()
    t = time.perf_counter()
    choice = app.resolve_model(model, catalog)
    devices = devices_from_specs(app.parse_gpu_option([gpu], catalog))
    req, notes = app.build_request(choice, devices, catalog, planning=True)
    app.run_estimate(req, notes, catalog)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="10,100,1000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.nodes.split(",")]
    print(f"gpufit fleet {args.model}, in-process run_fleet(), median of {args.runs}; synthetic gpufit series, "
          "8 GPUs a node")
    print(f"{'nodes':>6} {'GPUs':>6} {'fleet':>10} {'case':<22} {'series held':>11} {'estimates':>9} {'fit now':>7} "
          f"{'per node':>9}")
    for n in sizes:
        for idle in (False, True):
            series = synthetic_fleet(n, idle=idle)
            with Prerendered(series) as p:
                t, ans = time_fleet(p.url, args.model, args.runs)
                if args.profile and n == max(sizes) and not idle:
                    import cProfile
                    import pstats

                    from gpufit.app.fleet import run_fleet

                    prof = cProfile.Profile()
                    prof.runcall(run_fleet, args.model, p.url)
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                cli = time_cli(p.url, args.model) if n == max(sizes) and not idle else None
            case = "idle, identical boxes" if idle else "random free memory"
            print(f"{n:>6} {n * 8:>6} {t:>9.3f}s {case:<22} {len(series):>11} {ans.estimates:>9} "
                  f"{len(ans.fits):>7} {t / n * 1000:>7.2f}ms")
            if cli is not None:
                print(f"{'':>6} {'':>6} {cli:>9.3f}s {'the same, `gpufit fleet --json` wall time (interpreter start-up included)'}")
    print()
    print("gpufit plan, in-process (resolve, build request, estimate with alternatives, as the command does):")
    for gpu in ("h100-sxm:1000", "rtx-3060:1000"):
        for model in (args.model, "llama3.1-405b"):
            t = time_plan(model, gpu)
            print(f"  plan {model} --gpu {gpu}: {t:.3f}s")


if __name__ == "__main__":
    main()
