#!/usr/bin/env python3
"""Start-up and run time of gpufit commands against `python -c pass`, in one run.

    .venv/bin/python bench/startup.py [--runs 15]

Each command runs --runs times (interleaved, so drift hits all alike) with this interpreter; the table
gives the median wall time and its ratio to `python -c pass`. The commands run with bytecode caching on,
as an installed gpufit has it (pip compiles the .pyc files on install; an editable install writes them
on the first run, which the warm-up is), even where this shell sets PYTHONDONTWRITEBYTECODE;
--no-bytecode measures the cold path, gpufit's modules compiled from source on every start. The bar (issue 2): `gpufit plan` at most
3x `python -c pass`. Then `recommend` over the whole catalog in-process (no interpreter start-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = "tests/fixtures/nvidia-smi/influxdata_telegraf__rtx-3090-v12.xml"
PY = sys.executable
COMMANDS = {
    "python -c pass": [PY, "-c", "pass"],
    "gpufit plan llama3-8b --gpu rtx-3090 --json": [PY, "-m", "gpufit", "plan", "llama3-8b", "--gpu", "rtx-3090", "--json"],
    f"gpufit here llama3-8b --snapshot {Path(SNAPSHOT).name} --json": [PY, "-m", "gpufit", "here", "llama3-8b", "--snapshot", SNAPSHOT, "--json"],
    "gpufit recommend --gpu rtx-4090 --json": [PY, "-m", "gpufit", "recommend", "--gpu", "rtx-4090", "--json"],
}
BAR = 3.0  # gpufit plan median <= 3 x python -c pass


ENV = dict(os.environ)


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 3, 4):
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return dt


def recommend_in_process(runs: int) -> tuple[float, int]:
    sys.path.insert(0, str(ROOT))
    from gpufit.app.recommend import recommend
    from gpufit.catalog import load_catalog
    from gpufit.estimator.types import devices_from_specs

    cat = load_catalog()
    devices = devices_from_specs([(cat.gpu("rtx-4090"), 1)])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        recommend(cat, devices, planning=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(cat.models)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--no-bytecode", action="store_true", help="compile every module from source on every start")
    a = ap.parse_args(argv)
    if a.no_bytecode:  # gpufit's modules from source every time; Python's own keep their installed .pyc
        ENV["PYTHONDONTWRITEBYTECODE"] = "1"
        import shutil

        for cache in (ROOT / "gpufit").rglob("__pycache__"):
            shutil.rmtree(cache)
    else:
        ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    for cmd in COMMANDS.values():  # warm the OS cache and gpufit's catalog cache
        wall(cmd)
    samples: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(a.runs):
        for k, cmd in COMMANDS.items():
            samples[k].append(wall(cmd))
    base = statistics.median(samples["python -c pass"])
    print(f"{a.runs} runs each, interleaved; {PY}; bytecode cache {'off' if a.no_bytecode else 'on'}")
    print(f"{'command':62} {'median ms':>10} {'min ms':>8} {'x pass':>7}")
    for k, v in samples.items():
        med = statistics.median(v)
        print(f"{k:62} {med * 1e3:10.1f} {min(v) * 1e3:8.1f} {med / base:7.2f}")
    ratio = statistics.median(samples[list(COMMANDS)[1]]) / base
    print(f"gpufit plan: {ratio:.2f} x python -c pass (bar {BAR:g} x): {'met' if ratio <= BAR else 'MISSED'}")
    t, n = recommend_in_process(5)
    print(f"recommend over the whole catalog in-process ({n} models, 1x rtx-4090): median {t * 1e3:.0f} ms of 5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
