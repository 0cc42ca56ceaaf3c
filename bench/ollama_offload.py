#!/usr/bin/env python3
"""Ollama's scheduler estimate (gpufit's ollama@0.12 family: llm/memory.go) against public server logs.

    .venv/bin/python bench/ollama_offload.py            # summary and every compared row
    .venv/bin/python bench/ollama_offload.py --skipped  # and why each other row was left out

Reads bench/data/ollama_offload.csv (67 public Ollama server-log rows, a source URL each). A row is
compared when it names a model gpufit's catalog has (a tag, or a name the catalog knows), the GPUs'
available memory and, where the log gives them, num_ctx / parallel / KV type / flash attention (else
the family's defaults). gpufit's estimate is computed from the catalog's shape and format -- never from
the row's own weight figures -- and compared on layers offloaded and memory.required.full.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gpufit.catalog import load_catalog  # noqa: E402
from gpufit.errors import GpufitError  # noqa: E402
from gpufit.estimator.engines import ollama as O  # noqa: E402
from gpufit.estimator.types import Device, FitRequest  # noqa: E402

from gpufit.units import GIB  # noqa: E402


def read() -> list[dict]:
    with open(HERE / "data" / "ollama_offload.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def model_of(cat, row):
    """(spec, quant key) from the row's tag / quant columns, or a reason it cannot be mapped."""
    tag = row["model_tag"].split(" ")[0].strip().lower()
    text = row["model_tag"].lower()
    if not tag or tag.startswith("(") or "tag not" in text or "not in the quoted" in text:
        return None, "tag not in the quoted text"
    try:
        hit = cat.resolve_ollama_tag(tag if ":" in tag else tag + ":latest")
    except GpufitError:
        hit = None
    if hit is None:
        return None, f"tag {tag!r} has no catalog model"
    t, quant, _ = hit
    q = re.match(r"^(Q\d_K_[SML]|Q\d_K|Q\d_\d|MXFP4|F16)\b", row["gguf_quant"] or "")
    if q and cat.has_quant(q.group(1)):
        quant = cat.quant(q.group(1)).key
    return (cat.models[t.model], quant), ""


def number(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def compare(cat, row):
    mq, why = model_of(cat, row)
    if mq is None:
        return None, why
    spec, quant = mq
    avail = [number(x) for x in (row["memory_available_GiB"] or "").split(";") if x.strip()]
    if not avail or any(a is None for a in avail):
        return None, "available memory not in the log"
    if not row["layers_offloaded"]:
        return None, "layers offloaded not in the log"
    # the row's own Ollama version where the log gives it, else the 0.12 family
    ver = re.match(r"^(\d+\.\d+)", row["ollama_version"] or "")
    try:
        fam = O.for_version(ver.group(1)).family if ver else O.FAMILIES["0.12"]
    except GpufitError:
        fam = O.FAMILIES["0.12"]
    par = int(number(row["num_parallel"]) or 1)
    # the log's num_ctx is the runner's context, num_ctx x parallel (ollama-scheduling.md, point 2)
    ctx = int(number(row["num_ctx"]) // par) if number(row["num_ctx"]) else fam.num_ctx
    kv = "q8_0" if row["kv_cache_type"].startswith("q8_0") else "q4_0" if row["kv_cache_type"].startswith("q4_0") else "f16"
    fa = row["flash_attention"].lower().startswith(("enabled", "on", "true", "1"))
    if ctx > spec.max_context:
        spec = replace(spec, max_context=ctx)
    devs = tuple(Device(index=str(i), name="gpu", total_bytes=int(a * GIB), free_bytes=int(a * GIB))
                 for i, a in enumerate(avail))
    req = FitRequest(model=spec, quant=cat.quant(quant), kv_dtype=cat.kv_dtype("fp16"), context=ctx, batch=par, engine="ollama", devices=devs, engine_version="0.12")
    frees = [int(a * GIB) for a in avail]
    if number(row["num_parallel"]):
        used, est = O.schedule(req, frees, ctx, par, kv if fa else "f16", fa, ascending=fam.ascending)
    else:  # the log does not say: the scheduler's own default slots, then 1
        par, used, est = O.schedule_default_parallel(req, frees, fam, ctx, kv if fa else "f16", fa)
    return {"row": row, "family": fam.name, "model": spec.key, "quant": quant, "ctx": ctx, "par": par, "est": est,
            "layers": int(row["layers_offloaded"]), "full": number(row["required_full_GiB"])}, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skipped", action="store_true")
    a = ap.parse_args(argv)
    cat = load_catalog()
    done, skipped = [], []
    for i, row in enumerate(read()):
        c, why = compare(cat, row)
        (done.append((i, c)) if c else skipped.append((i, row, why)))
    exact = sum(1 for _, c in done if c["est"].layers == c["layers"])
    within1 = sum(1 for _, c in done if abs(c["est"].layers - c["layers"]) <= 1)
    errs = [100 * (c["est"].required_full / GIB - c["full"]) / c["full"] for _, c in done if c["full"]]
    print("Ollama memory.go estimate (gpufit ollama@0.12) against public server logs (bench/data/ollama_offload.csv)")
    print(f"rows compared {len(done)} of {len(done) + len(skipped)}: layers offloaded exact {exact} "
          f"({100 * exact / max(1, len(done)):.0f} %), within +-1 {within1}")
    if errs:
        med = statistics.median(abs(e) for e in errs)
        print(f"memory.required.full: {len(errs)} rows, median |error| {med:.1f} %, signed median "
              f"{statistics.median(errs):+.1f} %")
    for i, c in done:
        e = c["est"]
        full = f"{e.required_full / GIB:6.1f} vs {c['full']:6.1f} GiB" if c["full"] else "   (no full figure)"
        print(f"  row {i:2d} @{c['family']:<4} {c['model']:<26} {c['quant']:<7} ctx {c['ctx']:>6} x{c['par']}: layers {e.layers:3d} "
              f"vs {c['layers']:3d}  full {full}  {c['row']['source_url'][:70]}")
    if a.skipped:
        for i, row, why in skipped:
            print(f"  skipped row {i:2d}: {why} ({row['model_tag'][:50]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
