#!/usr/bin/env python3
"""gpufit's vLLM start-up arithmetic against public vLLM start-up logs.

    .venv/bin/python bench/vllm_startup.py            # every row: outcome, KV pool, weights per rank
    .venv/bin/python bench/vllm_startup.py --skipped  # also the rows that cannot be mapped, and why

Reads bench/data/vllm_startup.csv (public logs, one URL per row). Each row becomes the request the
logged server ran: the model and format of its checkpoint, the card (the logged CUDA total where the log
prints it, else the catalog's), the count and TP/PP, max_model_len (the model's maximum when the log
did not set it), gpu_memory_utilization (0.9 by default), max_num_seqs / max_num_batched_tokens /
--enforce-eager where given, and the vLLM version family the log shows (V0, V1 before 0.19, V1 0.19+).
Free memory is the whole card unless the row's context says other processes held some (then the
figure the log or its thread states). Compared: the start/refuse outcome, the KV pool (bytes "Available
KV cache memory" and/or tokens "GPU KV cache size", whichever the row has) and the weights per rank.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gpufit import app  # noqa: E402
from gpufit.catalog import load_catalog  # noqa: E402
from gpufit.errors import UsageError  # noqa: E402
from gpufit.estimator.fit import estimate  # noqa: E402
from gpufit.estimator.types import Device  # noqa: E402

from gpufit.units import GIB  # noqa: E402
# the card each row names, as a catalog key
GPUS = {
    "RTX 3090": "rtx-3090", "RTX 3090 (Win11 Docker/WSL2)": "rtx-3090", "RTX 3090 (PCIe x4/x4, P2P on)": "rtx-3090",
    "RTX 4090": "rtx-4090", "RTX 4090 24GB": "rtx-4090", "H100": "h100-sxm", "H100 80GB HBM3": "h100-sxm",
    "H20": "h20", "L40": "l40", "A100": "a100-sxm4-80gb", "A100 40GB": "a100-sxm4-40gb",
    "A100 80GB": "a100-sxm4-80gb", "RTX 3080 10GB": "rtx-3080", "RTX 5090": "rtx-5090",
    "V100 32GB": "v100-sxm2-32gb", "Tesla T4 16GB": "t4", "A800": "a800-sxm4-80gb",
    "H200 (inferred from 139.72 GiB total; not named in excerpt)": "h200",
    "NVIDIA DGX Spark (GB10, unified memory)": "dgx-spark",
}
# rows whose context says other processes held memory at start: free GiB, and why
CO_TENANT_FREE_GIB = {
    "RedHatAI/Mixtral-8x7B-Instruct-v0.1-FP8": (7.34, "the log: Free memory on device (7.34/139.72 GiB)"),
    "Qwen/Qwen2.5-14B-Instruct-GPTQ-Int4": (79.15 * 0.25, "a 72B instance at util 0.75 held 3/4 of the card"),
}
# threads whose card size is stated nowhere and implied by no log figure
SIZE_NOT_STATED = {
    "https://github.com/vllm-project/vllm/issues/17431":
        "the A800's memory size is not stated (40 or 80 GB) and no figure was posted: at 80 GB both engines "
        "start, at 40 GB both fail; the thread's V0-starts / V1-fails split is not reproducible without it",
}
QUANT = {"fp8": "fp8", "gptq": "gptq", "awq": "awq", "mxfp4": "mxfp4"}
DTYPE = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
OUTCOMES = {"started", "kv_too_small", "no_cache_blocks", "free_memory_below_utilization"}


def num(v):
    return float(v) if v not in (None, "") else None


def family(row) -> str | None:
    v = row["vllm_version"]
    if v and row["vllm_engine"] == "V0":
        return v if v.startswith(("0.5", "0.6.")) and v <= "0.6.4" else "0.7"  # VLLM_USE_V1=0 on a V1 release
    if v:
        return v
    if row["vllm_engine"] == "V0":
        # the single-line "Memory profiling results: total_gpu_memory=..." is v0.6.4's log format
        return "0.6" if "Memory profiling results: total_gpu_memory=" in row["notes"] else "0.7"
    return "0.18"


def build(row, cat):
    """The request the logged server ran, or the reason it cannot be built."""
    gpu = GPUS.get(row["gpu"])
    if gpu is None or gpu not in cat.gpus:
        return None, f"GPU {row['gpu']!r} not in the catalog"
    if row["outcome"] not in OUTCOMES:
        return None, f"outcome {row['outcome']!r} (truncated log / OOM after start-up: not a start-up check)"
    if row["source_url"] in SIZE_NOT_STATED:
        return None, SIZE_NOT_STATED[row["source_url"]]
    if "no log numbers" in row["notes"] and "presumably" in row["notes"]:
        return None, "flags not known (a comment's outcome; its utilisation is presumed, and the same thread's default start fails before any max_model_len check)"
    if "-dp=" in row["notes"]:
        return None, "data parallel + expert parallel (one replica per GPU): not modelled"
    try:
        choice = app.resolve_checkpoint(row["model"], cat)
    except UsageError as e:
        return None, f"model not in the catalog ({e})"
    spec = cat.gpus[gpu]
    logged_total = num(row["total_gpu_memory_GiB"])
    total = int(logged_total * GIB) if logged_total else spec.memory_bytes
    free = total
    if row["model"] in CO_TENANT_FREE_GIB:
        free = int(CO_TENANT_FREE_GIB[row["model"]][0] * GIB)
    n = int(row["gpu_count"] or 1)
    tp = int(row["tensor_parallel"] or 1)
    pp = int(row["pipeline_parallel"] or 1)
    devs = tuple(Device(index=str(i), name=spec.name, total_bytes=total, free_bytes=free, spec=spec,
                        bandwidth_gbps=spec.bandwidth_gbps, bf16_tflops=spec.bf16_tflops,
                        reserved_bytes=0 if logged_total else None) for i in range(max(n, tp * pp)))
    quant = QUANT.get(row["quantization"].split(" ")[0]) or choice.file_quant or DTYPE.get(row["dtype"])
    settings = {"tensor_parallel_size": tp, "pipeline_parallel_size": pp}
    for col in ("max_num_seqs", "max_num_batched_tokens"):
        if row[col]:
            settings[col] = int(row[col])
    if row["enforce_eager"] == "true":
        settings["enforce_eager"] = True
    context = int(row["max_model_len"]) if row["max_model_len"] else choice.spec.max_context
    kv = "fp8" if row["kv_cache_dtype"].startswith("fp8") else None
    util = num(row["gpu_memory_utilization"])
    choice = app.ModelChoice(choice.spec, None, None, None, choice.notes)
    try:
        req, _ = app.build_request(choice, devs, cat, quant=quant, context=min(context, choice.spec.max_context),
                                   kv_dtype=kv, engine=f"vllm@{family(row)}", gpu_memory_utilization=util,
                                   engine_settings=settings, planning=free == total)
    except UsageError as e:
        return None, f"cannot build the request: {e}"
    return req, None


def pct(a, b):
    return (a - b) / b * 100


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skipped", action="store_true")
    args = ap.parse_args(argv)
    cat = load_catalog()
    rows = list(csv.DictReader(open(HERE / "data" / "vllm_startup.csv", newline="", encoding="utf-8")))
    agree = total = 0
    kv_err, w_err, skipped = [], [], []
    print(f"{'model':44} {'gpu':10} {'ver':7} {'len':>7} outcome (log / gpufit)          KV log / gpufit (err)        weights/rank log / gpufit")
    for row in rows:
        req, why = build(row, cat)
        if req is None:
            skipped.append((row, why))
            continue
        r = estimate(req, alternatives=False)
        em = r.engine_memory
        got = "started" if r.refusal is None or r.refusal.code == "batch_exceeds_pool" else r.refusal.code
        total += 1
        agree += got == row["outcome"]
        kv_txt = ""
        if em is not None:
            avail = em.extra.get("available_kv_bytes")
            if row["kv_cache_tokens"] and em.kv_pool_tokens is not None:
                e = pct(em.kv_pool_tokens, float(row["kv_cache_tokens"]))
                kv_err.append((abs(e), row))
                kv_txt = f"{int(row['kv_cache_tokens']):>8} / {em.kv_pool_tokens:>8} tok ({e:+.1f} %)"
            elif row["kv_cache_GiB"] and avail is not None:
                log = float(row["kv_cache_GiB"])
                e = pct(avail / GIB, log) if log > 0 else None
                if e is not None:
                    kv_err.append((abs(e), row))
                kv_txt = f"{log:8.2f} / {avail / GIB:8.2f} GiB" + (f" ({e:+.1f} %)" if e is not None else "")
        w_txt = ""
        if row["weights_GiB"] and em is not None:
            e = pct(em.weights_bytes / GIB, float(row["weights_GiB"]))
            w_err.append((abs(e), row))
            w_txt = f"{float(row['weights_GiB']):6.2f} / {em.weights_bytes / GIB:6.2f} ({e:+.1f} %)"
        mark = "" if got == row["outcome"] else "  <-- outcome differs"
        print(f"{row['model'][:44]:44} {row['gpu'][:10]:10} {req.engine_version or 'cur':7} {req.context:>7} "
              f"{row['outcome'][:14]:>14} / {got[:14]:<14} {kv_txt:30} {w_txt}{mark}")

    def summary(name, errs):
        if not errs:
            return f"{name}: no rows"
        v = sorted(e for e, _ in errs)
        p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
        return f"{name}: {len(v)} rows, median |error| {statistics.median(v):.1f} %, p90 {p90:.1f} %"

    print()
    print(f"outcome agreement: {agree}/{total} rows ({agree / total * 100:.0f} %)" if total else "no rows mapped")
    print(summary("KV pool", kv_err))
    print(summary("weights per rank", w_err))
    print(f"skipped: {len(skipped)} of {len(rows)} rows")
    if args.skipped:
        for row, why in skipped:
            print(f"  {row['model'][:50]:50} {row['gpu'][:24]:24} {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
