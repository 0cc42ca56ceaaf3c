#!/usr/bin/env python3
"""Fit gpufit's llama.cpp speed factors to the measured rows bench/accuracy.py maps.

    .venv/bin/python bench/calibrate.py          # the fitted factors
    .venv/bin/python bench/calibrate.py --cv     # and the leave-one-GPU-out decode and prefill errors

Decode model (gpufit/estimator/speed.py), per token on a layer split:
    seconds = sum over devices of bytes read there / (bandwidth x efficiency[memory class])
              + layers x per-layer cycles / the card's boost clock
              + on several devices: split fixed + (devices - 1) x split per_hop
Fitted: one efficiency per memory class with data (HBM, GDDR), one per-layer cycle count shared by all
and the two split latencies (on the multi-GPU rows, in turn with the rest), by grid search minimising
the mean |log(gpufit / measured)| over every decode row (a robust fit: no row can pull it far); the
engine default (cards of a class without data, e.g. LPDDR) is the single efficiency that fits all
rows best with the same latency.
Prefill (speed.prefill_rate): per ubatch, GEMM FLOPs / min(datasheet tensor rate x gemm_efficiency x
the share of SMs the GEMMs' 128 x 128 tile waves keep busy, tflops_per_watt x board watts) + weight bytes (+ dequant_bytes_per_weight per parameter for quantized
GGUF) / achieved bandwidth + attention over the cached cells (FLOPs at the GEMM rate, without flash
attention attn_bytes_per_head_cell / achieved bandwidth), the ubatches pipelined over a layer split
as speed.pipeline_seconds schedules them. Achieved bandwidth = datasheet x the decode fit's efficiency for the memory class (the
same memory-bound streaming). The four constants minimise the mean |log(gpufit / measured)| over every
May 2024 prompt row but those their own notebook contradicts (accuracy.contradicts_its_notebook) (Nelder-Mead); --cv refits decode and prefill without each card in turn.
Prints the factors to put in gpufit/estimator/engines/ (profiles.py for decode and the split latency,
llama_cpp.py PREFILL_FIT). It never looks at one row alone.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy as A  # noqa: E402

from gpufit.estimator import engines, speed  # noqa: E402
from gpufit.estimator.engines import llama_cpp, profiles  # noqa: E402


def decode_rows(cat):
    """(measured tok/s, seconds at 100 % bandwidth, layers, hops, memory class, config, boost clock
    GHz) per decode row."""
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
        bw = speed._bandwidth(e.plan.used[0].device) * 1e9  # the datasheet's, less what in-band ECC takes
        full_bw_s = basis["bytes_per_token"] / bw
        hops = len(e.plan.used) - 1
        out.append((measured, full_bw_s, cat.models[c.model].layers, hops,
                    engines.memory_class(spec.memory_type), c, speed.boost_clock_ghz(spec)))
    return out


def split_s(hops: int, split: dict) -> float:
    """llama_cpp.LlamaCpp.split_latency_s with the constants `split` (fixed, per_hop)."""
    return split["fixed"] + hops * split["per_hop"] if hops else 0.0


def decode_seconds(row, eff: dict, cycles: float, split: dict, default: float | None = None) -> float:
    _, b, layers, hops, cls, _, ghz = row
    return b / eff.get(cls, default) + layers * cycles / (ghz * 1e9) + split_s(hops, split)


def loss(rows, eff: dict, cycles: float, default: float | None = None, split: dict | None = None) -> float:
    split = split or profiles.LLAMA_CPP_DECODE_SPLIT_S
    return sum(abs(math.log((1 / decode_seconds(r, eff, cycles, split, default)) / r[0])) for r in rows) / len(rows)


def grid(lo, hi, step):
    n = int(round((hi - lo) / step))
    return [round(lo + i * step, 6) for i in range(n + 1)]


def fit_decode(rows, rounds: int = 3):
    """(efficiency per memory class, per-layer cycles, default efficiency, split latency). The split
    latency only touches multi-GPU rows: fitted in turn with the rest, `rounds` times, from none."""
    classes = sorted({r[4] for r in rows})
    multi = [r for r in rows if r[3]]
    split = {"fixed": 0.0, "per_hop": 0.0}
    for _ in range(rounds):
        best = None
        for cycles in grid(0, 400e3, 5e3):
            # each class's efficiency only touches its own rows: fit them one at a time for this latency
            eff = {}
            for cls in classes:
                sub = [r for r in rows if r[4] == cls]
                eff[cls] = min(grid(0.30, 1.00, 0.01), key=lambda e: loss(sub, {cls: e}, cycles, split=split))
            val = loss(rows, eff, cycles, split=split)
            if best is None or val < best[0]:
                best = (val, eff, cycles)
        _, eff, cycles = best
        if multi:
            split = min(({"fixed": f, "per_hop": h} for f in grid(0, 1.5e-3, 0.05e-3) for h in grid(0, 0.5e-3, 0.025e-3)),
                        key=lambda sp: loss(multi, eff, cycles, split=sp))
    default = min(grid(0.30, 1.00, 0.01), key=lambda e: loss(rows, {}, cycles, default=e, split=split))
    return eff, cycles, default, split


def cross_validate(rows) -> tuple[int, float, float]:
    """Leave one GPU out: refit on every other card's rows, predict the held-out card's. Returns (rows
    predicted, median and p90 |error| in %): the decode error to expect on a card the fit never saw."""
    errs = []
    for gpu in sorted({r[5].gpu for r in rows}):
        train = [r for r in rows if r[5].gpu != gpu]
        test = [r for r in rows if r[5].gpu == gpu]
        eff, cycles, default, split = fit_decode(train)
        for r in test:
            errs.append(abs((1 / decode_seconds(r, eff, cycles, split, default)) / r[0] - 1) * 100)
    errs.sort()
    return len(errs), statistics.median(errs), errs[int(0.9 * (len(errs) - 1))]


# ---- prefill ------------------------------------------------------------------------------------
# llama-bench / main of May 2024: n_batch 2048, n_ubatch 512, flash attention off (its default then);
# the 2023 builds processed prompts in batches of 512 with older kernels: not fitted (accuracy.py
# shows them apart)
BENCH_N_BATCH = 2048
BENCH_FLASH_ATTN = False
PREFILL_KEYS = ("gemm_efficiency", "tflops_per_watt", "attn_bytes_per_head_cell", "dequant_bytes_per_weight")


@dataclass
class PrefillRow:
    measured: float
    n: int
    stages: list  # per stage: dict of the terms speed.prefill_rate adds, at unit constants
    config: object
    gpu: str
    in_flight: int  # ubatches in flight over the layer split (Engine.pipeline_depth)


def prefill_rows(cat) -> list[PrefillRow]:
    """Every mapped May 2024 prompt row, split into the terms of speed.prefill_rate so the constants
    can be varied without asking the estimator again."""
    from gpufit.estimator import speed
    from gpufit.estimator.params import count_params

    out = []
    rows = A.read("tokens_per_s.csv")
    screened = A.contradicts_its_notebook(rows)  # accuracy.py shows these in their own table
    for row in rows:
        test = row["test"].strip()
        pp = A.PP_RE.match(test)
        if not (pp or test.startswith("main prompt eval")):
            continue
        measured = A.number(row["tokens_per_s"])
        if measured is None or A.build_2023(row) or id(row) in screened:
            continue
        try:
            n = int(pp.group(1)) if pp else int(row["n_prompt"] or 0)
            c = A.config_for(cat, row, int(pp.group(1)) if pp else int(row["context"]))
        except (A.Skip, ValueError):
            continue
        e = A.estimate(cat, c)
        if not e.fits_on_gpus:
            continue
        s, m = e.sizer, e.sizer.m
        pc = count_params(m)
        quantized = s.req.quant.kind == "gguf" and s.req.quant.bits_per_weight < 16
        stages = []
        for dp in e.plan.used:
            dev = dp.device
            tf, kind = speed.tflops_for(dev, s.req.quant)
            peak = tf * 1e12 * (2 if kind == "fp16" and dev.spec.vendor_class == "geforce" else 1)
            share = dp.layers / m.layers
            bw = speed._bandwidth(dev) * 1e9
            wave = speed.wave_efficiency(m, speed.sm_count(dev.spec), min(512, n))
            stages.append({"peak": peak, "watts": dev.spec.tdp_w, "flops": share * 2 * pc.body_active, "wave": wave,
                           "memory_class": engines.memory_class(dev.spec.memory_type),
                           "weights_s": share * s.ws.per_layer * m.layers / bw,
                           "dequant_s": share * pc.body / bw if quantized else 0.0,
                           "cell_flops": share * m.layers * 4 * m.heads * m.head_dim,
                           "cell_bytes_s": share * m.layers * m.heads / bw})
        full = not e.plan.cpu_layers and not e.plan.head_on_host
        in_flight = s.engine.pipeline_depth(s.req, full) if len(stages) > 1 else 1
        out.append(PrefillRow(measured, n, stages, c, c.gpu, in_flight))
    return out


def prefill_model(r: PrefillRow, p: dict, mem: dict) -> float:
    """speed.prefill_rate's arithmetic on a row's precomputed terms (checked against it in main).
    `mem` = the decode fit's (efficiency per memory class, default): the memory-bound passes (weights,
    dequantization, scores) reach the bandwidth share decode reaches on that memory."""
    eff, default = mem
    per = []
    for st in r.stages:
        rate = st["peak"] * p["gemm_efficiency"] * st["wave"]
        if p["tflops_per_watt"] and st["watts"]:
            rate = min(rate, p["tflops_per_watt"] * 1e12 * st["watts"])
        me = eff.get(st["memory_class"], default)
        cell = st["cell_flops"] / rate + (st["cell_bytes_s"] * p["attn_bytes_per_head_cell"] / me
                                          if not BENCH_FLASH_ATTN else 0.0)
        per.append((st["flops"] / rate, (st["weights_s"] + st["dequant_s"] * p["dequant_bytes_per_weight"]) / me,
                    cell))
    return r.n / speed.pipeline_seconds(speed.ubatch_times(per, r.n, BENCH_N_BATCH, 512), r.in_flight)


def prefill_loss(rows, p, mem) -> float:
    return sum(abs(math.log(prefill_model(r, p, mem) / r.measured)) for r in rows) / len(rows)


def nelder_mead(f, x0, steps, iters=600):
    """Minimise f over a few positive constants (the textbook simplex; no dependency)."""
    n = len(x0)
    pts = [list(x0)] + [[x0[j] + (steps[j] if j == i else 0) for j in range(n)] for i in range(n)]
    vals = [f(x) for x in pts]
    for _ in range(iters):
        order = sorted(range(n + 1), key=lambda i: vals[i])
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        centre = [sum(p[j] for p in pts[:-1]) / n for j in range(n)]
        refl = [centre[j] + (centre[j] - pts[-1][j]) for j in range(n)]
        fr = f(refl)
        if fr < vals[0]:
            exp = [centre[j] + 2 * (centre[j] - pts[-1][j]) for j in range(n)]
            fe = f(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = [centre[j] + 0.5 * (pts[-1][j] - centre[j]) for j in range(n)]
            fc = f(con)
            if fc < vals[-1]:
                pts[-1], vals[-1] = con, fc
            else:
                pts = [pts[0]] + [[pts[0][j] + 0.5 * (p[j] - pts[0][j]) for j in range(n)] for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    i = min(range(n + 1), key=lambda i: vals[i])
    return pts[i]


def fit_prefill(rows, mem) -> dict:
    """The four prefill constants minimising the mean |log(gpufit / measured)| over `rows`, given the
    decode fit's memory efficiencies `mem`."""
    def f(x):
        if min(x) <= 0:
            return 1e9
        return prefill_loss(rows, dict(zip(PREFILL_KEYS, x)), mem)

    x = nelder_mead(f, [0.5, 0.4, 25.0, 2.0], [0.1, 0.1, 10.0, 1.0])
    return dict(zip(PREFILL_KEYS, x))


def pct_abs(errs, q):
    v = sorted(abs(e) for e in errs)
    return v[max(0, math.ceil(q * len(v)) - 1)]


def prefill_cross_validate(rows, dec_rows) -> tuple[int, float, float]:
    """Leave one GPU out, as for decode: the prefill error a card the fit never saw can expect. The
    memory efficiencies the prefill uses come from a decode fit that did not see the card either."""
    errs = []
    for gpu in sorted({r.gpu for r in rows}):
        eff, _, default, _ = fit_decode([r for r in dec_rows if r[5].gpu != gpu])
        mem = (eff, default)
        p = fit_prefill([r for r in rows if r.gpu != gpu], mem)
        errs += [(prefill_model(r, p, mem) / r.measured - 1) * 100 for r in rows if r.gpu == gpu]
    return len(errs), pct_abs(errs, 0.5), pct_abs(errs, 0.9)


def main() -> int:
    cat = A.load_catalog()
    rows = decode_rows(cat)
    eff, cycles, default, split = fit_decode(rows)
    print(f"decode: {len(rows)} rows "
          + ", ".join(f"{k} {sum(1 for r in rows if r[4] == k)}" for k in sorted(eff)))
    print(f"  DECODE_EFFICIENCY_BY_MEMORY['llama.cpp'] = {eff}")
    print(f"  decode_layer_cycles = {cycles / 1e3:.0f}e3")
    print(f"  engine default decode_efficiency = {default}")
    print(f"  LLAMA_CPP_DECODE_SPLIT_S = {{'fixed': {split['fixed'] * 1e3:.2f}e-3, 'per_hop': {split['per_hop'] * 1e3:.3f}e-3}}"
          f" ({sum(1 for r in rows if r[3])} multi-GPU rows)")
    errs = [(1 / decode_seconds(r, eff, cycles, split) / r[0] - 1) * 100 for r in rows]
    print(f"  mean |log error| at the fit: {loss(rows, eff, cycles, split=split):.4f}; "
          f"median |error| {pct_abs(errs, 0.5):.1f} %, p90 {pct_abs(errs, 0.9):.1f} %")
    if "--cv" in sys.argv:
        n, med, p90 = cross_validate(rows)
        print(f"  leave-one-GPU-out: {n} rows predicted by fits that never saw their card: "
              f"median |error| {med:.1f} %, p90 {p90:.1f} %")
    pre = prefill_rows(cat)
    mem = (eff, default)
    p = fit_prefill(pre, mem)
    errs = [(prefill_model(r, p, mem) / r.measured - 1) * 100 for r in pre]
    print(f"prefill: {len(pre)} May 2024 rows on {len({r.gpu for r in pre})} cards, 1-8 GPUs")
    print("  llama_cpp.PREFILL_FIT = {" + ", ".join(f"{k!r}: {v:.3g}" for k, v in p.items()) + "}")
    print(f"  at the fit: median |error| {pct_abs(errs, 0.5):.1f} %, p90 {pct_abs(errs, 0.9):.1f} %")
    # the fit's arithmetic must be the estimator's: check one row against speed.prefill_rate
    _check_against_estimator(cat, pre[0], p)
    _check_against_estimator(cat, next(r for r in pre if len(r.stages) > 1 and r.n > 2048), p)
    if "--cv" in sys.argv:
        n, med, p90 = prefill_cross_validate(pre, rows)
        print(f"  leave-one-GPU-out: {n} rows predicted by fits that never saw their card: "
              f"median |error| {med:.1f} %, p90 {p90:.1f} %")
    return 0


def _check_against_estimator(cat, r: PrefillRow, p: dict) -> None:
    import dataclasses as dc

    from gpufit.estimator import speed

    saved = dict(llama_cpp.PREFILL_FIT)
    try:
        llama_cpp.PREFILL_FIT.update(p)
        e = A.estimate(cat, r.config)
        req = dc.replace(e.sizer.req, context=max(e.sizer.req.context, r.n))
        from gpufit.estimator.placement import Sizer

        got, _ = speed.prefill_rate(Sizer(req), e.plan, r.n, BENCH_FLASH_ATTN, BENCH_N_BATCH)
    finally:
        llama_cpp.PREFILL_FIT.clear()
        llama_cpp.PREFILL_FIT.update(saved)
    table = profiles.DECODE_EFFICIENCY_BY_MEMORY["llama.cpp"]
    mine = prefill_model(r, p, (table, profiles.LLAMA_CPP.decode_efficiency))
    if abs(got / mine - 1) > 1e-6:
        raise SystemExit(f"calibrate.py's prefill arithmetic drifted from speed.prefill_rate: {mine} vs {got}")


if __name__ == "__main__":
    sys.exit(main())
