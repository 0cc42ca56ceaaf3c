#!/usr/bin/env python3
"""Fit gpufit's llama.cpp speed factors to the measured rows bench/accuracy.py maps.

    .venv/bin/python bench/calibrate.py          # the fitted factors
    .venv/bin/python bench/calibrate.py --cv     # and the leave-one-GPU-out decode error

Decode model (gpufit/estimator/speed.py), per token on a layer split:
    seconds = sum over devices of bytes read there / (bandwidth x efficiency[memory class])
              + layers x per-layer latency + (devices - 1) x stage hop latency
Fitted: one efficiency per memory class with data (HBM, GDDR) and one per-layer latency shared by all,
by grid search minimising the mean |log(gpufit / measured)| over every decode row (a robust fit: no
row can pull it far); the engine default (cards of a class without data, e.g. LPDDR) is the single
efficiency that fits all rows best with the same latency.
Prefill (2 x active params FLOPs per token / (datasheet dense FLOP/s x efficiency)): the median of
measured / modelled rate over single-GPU prompts of at most 512 tokens (the regime the model
describes: no attention growth, no pipeline overlap), per kind of datasheet figure (GeForce lists FP16
tensor FLOP/s with FP32 accumulate, workstation/datacenter cards the full rate).
Prints the factors to put in gpufit/estimator/engines.py. It never looks at one row alone.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A  # noqa: E402

from gpufit.estimator import engines  # noqa: E402


def decode_rows(cat):
    """(measured tok/s, seconds at 100 % bandwidth, layers, hops, memory class) per decode row."""
    out = []
    for row in A.read("tokens_per_s.csv"):
        test = row["test"].strip()
        tg = A.TG_RE.match(test)
        if not (tg or test.startswith("main eval")):
            continue
        measured = A.number(row["tokens_per_s"])
        if measured is None:
            continue
        try:
            ctx = int(tg.group(1)) if tg else int(row["context"])
            c = A.config_for(cat, row, ctx)
        except (A.Skip, ValueError):
            continue
        if A.build_2023(row) and c.count > 1:
            continue  # row split, not the layer split the model describes
        e = A.estimate(cat, c)
        if not e.fits_on_gpus:
            continue
        decode_ctx = ctx // 2 if tg else min(int(row["n_gen"] or 0), ctx) // 2
        _, _, basis = A.speeds(cat, c, decode_ctx)
        spec = cat.gpus[c.gpu]
        bw = spec.bandwidth_gbps * 1e9
        full_bw_s = basis["bytes_per_token"] / bw
        hops = len(e.plan.used) - 1
        out.append((measured, full_bw_s, cat.models[c.model].layers, hops,
                    engines.memory_class(spec.memory_type), c))
    return out


def loss(rows, eff: dict, lat: float, default: float | None = None) -> float:
    total = 0.0
    for measured, b, layers, hops, cls, _ in rows:
        e = eff.get(cls, default)
        seconds = b / e + layers * lat + hops * engines.STAGE_HOP_LATENCY_S
        total += abs(math.log((1 / seconds) / measured))
    return total / len(rows)


def grid(lo, hi, step):
    n = int(round((hi - lo) / step))
    return [round(lo + i * step, 6) for i in range(n + 1)]


def fit_decode(rows):
    classes = sorted({r[4] for r in rows})
    best = None
    for lat in grid(0, 200e-6, 5e-6):
        # each class's efficiency only touches its own rows: fit them one at a time for this latency
        eff = {}
        for cls in classes:
            sub = [r for r in rows if r[4] == cls]
            eff[cls] = min(grid(0.30, 1.00, 0.01), key=lambda e: loss(sub, {cls: e}, lat))
        val = loss(rows, eff, lat)
        if best is None or val < best[0]:
            best = (val, eff, lat)
    _, eff, lat = best
    default = min(grid(0.30, 1.00, 0.01), key=lambda e: loss(rows, {}, lat, default=e))
    return eff, lat, default


def cross_validate(rows) -> tuple[int, float, float]:
    """Leave one GPU out: refit on every other card's rows, predict the held-out card's. Returns (rows
    predicted, median and p90 |error| in %): the decode error to expect on a card the fit never saw."""
    errs = []
    for gpu in sorted({r[5].gpu for r in rows}):
        train = [r for r in rows if r[5].gpu != gpu]
        test = [r for r in rows if r[5].gpu == gpu]
        eff, lat, default = fit_decode(train)
        for measured, b, layers, hops, cls, _ in test:
            seconds = b / eff.get(cls, default) + layers * lat + hops * engines.STAGE_HOP_LATENCY_S
            errs.append(abs((1 / seconds) / measured - 1) * 100)
    errs.sort()
    return len(errs), statistics.median(errs), errs[int(0.9 * (len(errs) - 1))]


def prefill_rows(cat):
    out = defaultdict(list)
    for row in A.read("tokens_per_s.csv"):
        test = row["test"].strip()
        pp = A.PP_RE.match(test)
        if not (pp or test.startswith("main prompt eval")):
            continue
        measured = A.number(row["tokens_per_s"])
        if measured is None:
            continue
        try:
            ctx = int(pp.group(1)) if pp else int(row["context"])
            n_prompt = int(pp.group(1)) if pp else int(row["n_prompt"] or 0)
            c = A.config_for(cat, row, ctx)
        except (A.Skip, ValueError):
            continue
        if c.count != 1 or n_prompt > 512:
            continue
        e = A.estimate(cat, c)
        if not e.fits_on_gpus:
            continue
        _, prefill, basis = A.speeds(cat, c, 0)
        if not prefill:
            continue
        # measured / modelled rate at efficiency 1 = the efficiency this row implies
        implied = measured * basis["flops_per_token"] / (basis["tflops"] * 1e12)
        out[engines.prefill_class(cat.gpus[c.gpu])].append(implied)
    return out


def main() -> int:
    cat = A.load_catalog()
    rows = decode_rows(cat)
    eff, lat, default = fit_decode(rows)
    print(f"decode: {len(rows)} rows "
          + ", ".join(f"{k} {sum(1 for r in rows if r[4] == k)}" for k in sorted(eff)))
    print(f"  DECODE_EFFICIENCY_BY_MEMORY['llama.cpp'] = {eff}")
    print(f"  decode_layer_latency_s = {lat * 1e6:.0f}e-6")
    print(f"  engine default decode_efficiency = {default}")
    print(f"  mean |log error| at the fit: {loss(rows, eff, lat):.4f}")
    if "--cv" in sys.argv:
        n, med, p90 = cross_validate(rows)
        print(f"  leave-one-GPU-out: {n} rows predicted by fits that never saw their card: "
              f"median |error| {med:.1f} %, p90 {p90:.1f} %")
    pre = prefill_rows(cat)
    table = {k: round(statistics.median(v), 2) for k, v in sorted(pre.items())}
    every = [x for v in pre.values() for x in v]
    print(f"prefill: {sum(len(v) for v in pre.values())} rows "
          + ", ".join(f"{k} {len(v)}" for k, v in sorted(pre.items())))
    print(f"  PREFILL_EFFICIENCY_BY_CLASS['llama.cpp'] = {table}")
    print(f"  engine default prefill_efficiency = {round(statistics.median(every), 2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
