#!/usr/bin/env python3
"""How far gpufit's estimates are from public measurements.

    .venv/bin/python bench/accuracy.py            # every table, 5 worst rows each
    .venv/bin/python bench/accuracy.py --worst 10 --skipped

Reads bench/data/*.csv (public measurements, one `source` per row: bench/data/SOURCES.md), maps each
row to gpufit's catalog (GPU, count, model, quant, context, engine), asks the estimator, and prints per
table the rows compared, the median and 90th-percentile absolute percentage error, the signed median
(bias) and the worst rows with their source. Rows that cannot be mapped (Apple silicon, a GPU, model or
quant missing from the catalog, another engine) are counted as skipped with the reason. No network, no
GPU; the numbers come from the estimator's own functions, the same ones `gpufit plan` calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import math
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE.parent))  # a fresh clone runs it without installing

from gpufit.app import ModelChoice, build_request  # noqa: E402
from gpufit.estimator.types import devices_from_specs  # noqa: E402
from gpufit.catalog import Catalog, load_catalog  # noqa: E402
from gpufit.errors import GpufitError  # noqa: E402
from gpufit.estimator import placement, speed  # noqa: E402

from gpufit.units import MIB  # noqa: E402

# model names as the sources write them -> catalog keys
MODEL_KEYS = {
    "Llama 2 7B": "llama2-7b",
    "Llama 2 13B": "llama2-13b",
    "Llama 2 70B": "llama2-70b",
    "Llama 3 8B": "llama3-8b",
    "Llama 3 70B": "llama3-70b",
}
# what a `tg N` run reads on average: llama-bench generates N tokens from an empty context, so the
# KV cache holds 0..N tokens, N/2 on average
TG_RE = re.compile(r"^tg (\d+)$")
PP_RE = re.compile(r"^pp (\d+)$")


class Skip(Exception):
    """A row gpufit cannot be compared on; the message is the reason, counted in the report."""


@dataclass(frozen=True)
class Config:
    gpu: str  # catalog key
    count: int
    model: str  # catalog key
    quant: str  # catalog key
    context: int
    engine: str = "llama.cpp"
    ecc: bool | None = None  # as the run's nvidia-smi table shows it, where it differs from the card class's default


@dataclass
class Estimate:
    plan: placement.Plan
    sizer: placement.Sizer
    fits_on_gpus: bool


@dataclass
class Table:
    name: str
    unit: str
    target: str = ""
    rows: list = field(default_factory=list)  # (measured, predicted, label, source)
    skipped: Counter = field(default_factory=Counter)

    def add(self, measured: float, predicted: float, label: str, source: str) -> None:
        self.rows.append((measured, predicted, label, source))

    def errors(self) -> list[float]:
        return [100.0 * (p - m) / m for m, p, _, _ in self.rows]


# ---- mapping a row onto the catalog -------------------------------------------------------------

def is_apple(name: str) -> bool:
    return name.lower().startswith("apple") or bool(re.match(r"^M\d", name))


def map_gpu(cat: Catalog, name: str):
    if is_apple(name):
        raise Skip("Apple silicon (gpufit estimates NVIDIA GPUs)")
    g = cat.match_gpu(name)
    if g is None:
        # the README tables write '3090 24GB', 'RTX 4000 Ada 20GB': the label without its memory size
        g = cat.match_gpu(re.sub(r"\s*\d+\s*GB$", "", name.strip()))
    if g is None:
        raise Skip(f"GPU {name!r} not in the catalog")
    return g


def map_model(cat: Catalog, name: str):
    key = MODEL_KEYS.get(name)
    if key is None:
        try:
            return cat.model(name)
        except GpufitError:
            family = "LLaMA (v1)" if name.startswith("LLaMA (v1)") else name
            raise Skip(f"model {family!r} not in the catalog") from None
    return cat.model(key)


def map_quant(cat: Catalog, name: str):
    if not name:
        raise Skip("quant not stated by the source")
    try:
        return cat.quant(name)
    except GpufitError:
        raise Skip(f"quant {name!r} not in the catalog") from None


def map_engine(row: dict) -> str:
    eng = row["engine"]
    if not eng.startswith("llama.cpp") or "Ollama" in eng:
        raise Skip(f"engine {eng.split(' (')[0]!r} not modelled or not stated")
    backend = row.get("backend", "CUDA") or "CUDA"
    if backend != "CUDA":
        raise Skip(f"llama.cpp {backend} backend (gpufit models CUDA)")
    return "llama.cpp"


# ECC mode of the runs whose GDDR card ran with ECC other than its class's default (speed.ecc_enabled:
# datacenter on, GeForce and workstation off), from the "Volatile Uncorr. ECC" column of the nvidia-smi
# table at the top of each notebook ("0" = on, "Off", "N/A"). Every other GDDR notebook agrees with its
# class (the A40 and L40S ones on, the rest off); HBM's ECC costs no bandwidth, so HBM cards are not listed.
_XD = "github:XiongjieDai/GPU-Benchmarks-on-LLM-Inference@aa72e0ec86c356c41f8281c9733e9a13c3675800:"
ECC_ON = {
    _XD + "LLaMA 2/Professional GPUs/6000_Ada_v2.ipynb": True,  # RTX 6000 Ada, ECC "0"
    _XD + "LLaMA/Professional GPUs/6000_Ada.ipynb": True,  # the same machine's LLaMA (v1) runs
}


def notebook(row: dict) -> str:
    """The source without its cell: the runs of one machine, one build, one session."""
    return re.sub(r" \(cell \d+\)$", "", row["source"])


def contradicts_its_notebook(rows: list[dict]) -> dict[int, str]:
    """Prompt rows that their own notebook contradicts, by id(row), with the reason. Two checks on
    the measurements alone (no estimate is consulted):
    - F16 slower than Q4_K_M for the same model, GPU count and test. Both run the same FP16 GEMMs
      through cuBLAS in these builds, Q4_K_M after dequantizing its weights first, so an F16 prompt
      cannot be the slower one; every other notebook agrees, F16 1.03-3.4x the faster.
    - a single `main prompt eval` run below a third of the same notebook's llama-bench pp 512 for
      the same model, quant and GPU count (the others reach 0.52-0.95x of it; the 3 caught, 0.05-0.12x)."""
    by: dict[tuple, dict[tuple, float]] = {}
    for r in rows:
        v = number(r["tokens_per_s"])
        if v is not None:
            by.setdefault((notebook(r), r["model"], r["gpu_count"]), {}).setdefault((r["quant"], r["test"].strip()), v)
    out = {}
    for r in rows:
        v = number(r["tokens_per_s"])
        test = r["test"].strip()
        if v is None:
            continue
        same = by[(notebook(r), r["model"], r["gpu_count"])]
        if r["quant"] == "F16" and PP_RE.match(test) and v < same.get(("Q4_K_M", test), 0.0):
            out[id(r)] = "F16 prompt slower than Q4_K_M in the same notebook (same GEMMs, minus the dequantization)"
        elif test.startswith("main prompt eval") and v < same.get((r["quant"], "pp 512"), 0.0) / 3:
            out[id(r)] = "main prompt eval below a third of the same notebook's llama-bench pp 512"
    return out


def build_2023(row: dict) -> bool:
    """XiongjieDai's LLaMA 1 / Llama 2 notebooks ran a 2023 llama.cpp (`main`, old log format): with
    several GPUs it split every weight matrix by rows (the default before llama.cpp PR #4766, Jan
    2024) and logged one total for all of them. The Llama 3 notebooks ran a May 2024 build (layer
    split, per-device logs), which is what gpufit models."""
    return row["engine"] == "llama.cpp main" and "LLaMA 3/" not in row["source"]


def gpu_count(row: dict) -> int:
    try:
        return int(row["gpu_count"])
    except ValueError:
        raise Skip("GPU count not stated") from None


def config_for(cat: Catalog, row: dict, context: int | None) -> Config:
    g = map_gpu(cat, row["gpu"])
    engine = map_engine(row)
    m = map_model(cat, row["model"])
    q = map_quant(cat, row["quant"])
    if context is None:
        raise Skip("context not stated")
    if context > m.max_context:
        raise Skip(f"context {context} beyond the model's {m.max_context}")
    return Config(g.key, gpu_count(row), m.key, q.key, context, engine, ECC_ON.get(notebook(row)))


# ---- asking gpufit ------------------------------------------------------------------------------

_EST: dict[Config, Estimate] = {}


def request(cat: Catalog, c: Config):
    devices = tuple(dataclasses.replace(d, ecc=c.ecc) for d in devices_from_specs([(cat.gpus[c.gpu], c.count)]))
    # the measured builds (2023, May 2024) ran without flash attention, llama.cpp's default then, and
    # multiplied quantized prompts through cuBLAS on an FP16 copy (MMQ only up to 32 tokens then)
    req, _ = build_request(ModelChoice(cat.models[c.model]), devices, cat, quant=c.quant,
                           context=c.context, engine=c.engine, kv_dtype="fp16", planning=True,
                           engine_settings={"flash_attn": False, "force_cublas": True})
    return req


def estimate(cat: Catalog, c: Config) -> Estimate:
    """gpufit's placement for a configuration, as `gpufit plan` computes it (placement.choose)."""
    if c not in _EST:
        req = request(cat, c)
        plan = placement.choose(req)
        _EST[c] = Estimate(plan, placement.Sizer(req), plan.fits and not plan.cpu_layers)
    return _EST[c]


def device_parts(e: Estimate) -> list[dict]:
    """Bytes gpufit puts on each device in CUDA order: weights, KV, compute buffer (activation),
    runtime overhead. Unused devices are left out."""
    order = sorted(e.plan.used, key=lambda d: int(d.device.index))
    return [{"weights": d.weights, "kv": d.kv, "compute": d.activation, "overhead": d.overhead,
             "layers": d.layers} for d in order]


# llama-bench / main defaults of the measured builds: prompts in batches of 2048 (512 before the
# pipeline-parallel rework of March 2024), flash attention off
N_BATCH_2024, N_BATCH_2023 = 2048, 512


def speeds(cat: Catalog, c: Config, decode_context: int, prompt_tokens: int | None = None,
           build_2023: bool = False) -> tuple[float | None, float | None, dict]:
    e = estimate(cat, c)
    s = e.sizer
    if prompt_tokens and prompt_tokens > c.context:
        s = placement.Sizer(dataclasses.replace(s.req, context=prompt_tokens))
    return speed.estimate_speed(s, e.plan, 1, decode_context=decode_context, prefill_tokens=prompt_tokens,
                                flash_attn=False, n_batch=N_BATCH_2023 if build_2023 else N_BATCH_2024)


# ---- reading the data ---------------------------------------------------------------------------

def read(name: str) -> list[dict]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def per_device(text: str) -> dict[int, float]:
    """'CUDA0=2113.28;CUDA1=2290.21' -> {0: 2113.28, 1: 2290.21}; CUDA_Host and CPU entries dropped."""
    out = {}
    for part in text.split(";"):
        k, _, v = part.partition("=")
        m = re.fullmatch(r"CUDA(\d+)", k.strip())
        if m:
            out[int(m.group(1))] = float(v)
    return out


def number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def short_source(src: str) -> str:
    """'github:owner/repo@<40 hex>:path (cell 8)' -> 'owner/repo:path (cell 8)'."""
    return re.sub(r"@[0-9a-f]{40}", "", src.replace("github:", ""))


def label(row: dict, extra: str = "") -> str:
    gpu = row["gpu"].replace("NVIDIA ", "").replace("GeForce ", "")
    return f"{row['gpu_count']}x {gpu} | {row['model']} {row['quant']} | {extra or row.get('test', '')}"


# ---- the tables ---------------------------------------------------------------------------------

def speed_tables(cat: Catalog, rows: list[dict]):
    decode = Table("decode tokens/s", "tok/s", "median <= 4 %, p90 <= 12 %")
    prompt = Table("prompt tokens/s, May 2024 builds (1-8 GPUs)", "tok/s", "median <= 12 %, p90 <= 30 %")
    prompt_2023 = Table("prompt tokens/s, 2023 llama.cpp builds on one GPU (n_batch 512, older kernels; "
                        "informational)", "tok/s")
    old_decode = Table("decode tokens/s, 2023 llama.cpp row split over several GPUs (informational)", "tok/s")
    old_prompt = Table("prompt tokens/s, 2023 llama.cpp row split over several GPUs (informational)", "tok/s")
    contradicted = Table("prompt tokens/s that contradict their own notebook (informational; "
                         "accuracy.contradicts_its_notebook)", "tok/s")
    screened = contradicts_its_notebook(rows)
    oom, ran = [], []
    for row in rows:
        test = row["test"].strip()
        value = row["tokens_per_s"].strip()
        is_oom = value.upper() == "OOM"
        tg, pp = TG_RE.match(test), PP_RE.match(test)
        if tg or pp:
            n = int((tg or pp).group(1))
            context, kind = n, "decode" if tg else "prompt"
            decode_ctx = n // 2
        elif test.startswith("main eval") or test.startswith("main prompt eval"):
            context = int(row["context"]) if row["context"].isdigit() else None
            kind = "prompt" if "prompt" in test else "decode"
            n_gen = int(row["n_gen"] or 0)
            decode_ctx = min(n_gen, context or 0) // 2
        else:
            table = decode if not test.startswith("pp") else prompt
            table.skipped[f"test {test!r} is not a plain tg N / pp N / main eval"] += 1
            continue
        table = decode if kind == "decode" else prompt
        try:
            c = config_for(cat, row, context)
        except Skip as s:
            if is_oom:
                oom.append((row, None, str(s)))
            else:
                table.skipped[str(s)] += 1
            continue
        if is_oom:
            oom.append((row, c, ""))
            continue
        measured = number(value)
        if measured is None:
            table.skipped[f"tokens/s {value!r} is not a number"] += 1
            continue
        ran.append((row, c))
        multi_2023 = build_2023(row) and c.count > 1
        if multi_2023:
            table.skipped["2023 llama.cpp row split over several GPUs (gpufit models the layer split); "
                          "shown in the informational table"] += 1
            table = old_decode if kind == "decode" else old_prompt
        if kind == "prompt" and build_2023(row) and not multi_2023:
            prompt.skipped["2023 llama.cpp build (shown in its informational table)"] += 1
            table = prompt_2023
        elif id(row) in screened and table is prompt:
            prompt.skipped[screened[id(row)] + " (shown in its informational table)"] += 1
            table = contradicted
        e = estimate(cat, c)
        if not e.fits_on_gpus:
            table.skipped["gpufit predicts no fit on the GPUs (counted in the OOM table)"] += 1
            continue
        n_prompt = n if (tg or pp) else int(row["n_prompt"] or 0)
        d, p, _ = speeds(cat, c, decode_ctx, n_prompt if kind == "prompt" else None, build_2023(row))
        pred = d if kind == "decode" else p
        if pred is None:
            table.skipped["no speed from gpufit (spec lacks bandwidth / FLOP/s)"] += 1
            continue
        table.add(measured, pred, label(row), row["source"])
    return decode, prompt, prompt_2023, old_decode, old_prompt, oom, ran, contradicted


def memory_tables(cat: Catalog, rows: list[dict]):
    weights = Table("weights per device (2023 rows: total over GPUs)", "MiB", "median <= 5 %")
    host = Table("weights kept on the host (token_embd)", "MiB")
    kv = Table("KV cache per device (2023 rows: total)", "MiB", "median <= 5 %")
    compute = Table("compute buffer per device (2023 rows: VRAM scratch)", "MiB")
    total = Table("device total: weights + KV + compute (2023 rows: 1 GPU only)", "MiB", "median <= 5 %")
    oom, ran = [], []
    tables = (weights, host, kv, compute, total)
    for row in rows:
        if row["error"]:
            # llama-bench over -p/-n 512..8192 ran out of memory: the largest context is the one that
            # could not be allocated (the run printed results for the smaller ones)
            sizes = [int(x) for x in re.findall(r"\d+", row["context"])]
            try:
                c = config_for(cat, row, max(sizes) if sizes else int(row["context"]))
                oom.append((row, c, ""))
            except Skip as s:
                oom.append((row, None, str(s)))
            continue
        try:
            c = config_for(cat, row, int(row["context"]) if row["context"].isdigit() else None)
            if not row["weights_gpu_MiB_per_device"]:
                raise Skip("no per-device figures in the log")
        except Skip as s:
            for t in tables:
                t.skipped[str(s)] += 1
            continue
        ran.append((row, c))
        e = estimate(cat, c)
        parts = device_parts(e)
        src = row["source"]
        if "=" in row["weights_gpu_MiB_per_device"]:
            w, k, comp = (per_device(row[col]) for col in
                          ("weights_gpu_MiB_per_device", "kv_MiB_per_device", "compute_MiB_per_device"))
            if len(parts) != len(w):
                for t in (weights, kv, compute, total):
                    t.skipped[f"gpufit uses {len(parts)} of the {len(w)} devices the log shows"] += 1
                continue
            for i, p in enumerate(parts):
                lab = label(row, f"ctx {c.context} CUDA{i}")
                weights.add(w[i], p["weights"] / MIB, lab, src)
                if i in k:
                    kv.add(k[i], p["kv"] / MIB, lab, src)
                if i in comp:
                    compute.add(comp[i], p["compute"] / MIB, lab, src)
                if i in k and i in comp:
                    total.add(w[i] + k[i] + comp[i], (p["weights"] + p["kv"] + p["compute"]) / MIB, lab, src)
        else:
            lab = label(row, f"ctx {c.context} 2023 build")
            weights.add(float(row["weights_gpu_MiB_per_device"]), sum(p["weights"] for p in parts) / MIB,
                        lab + " (sum)", src)
            if row["kv_MiB"]:
                kv.add(float(row["kv_MiB"]), sum(p["kv"] for p in parts) / MIB, lab + " (sum)", src)
            if row["vram_scratch_MiB"]:
                compute.add(float(row["vram_scratch_MiB"]), parts[0]["compute"] / MIB, lab, src)
            if c.count == 1 and row["total_vram_MiB_reported"]:
                p = parts[0]
                total.add(float(row["total_vram_MiB_reported"]), (p["weights"] + p["kv"] + p["compute"]) / MIB,
                          lab, src)
            elif row["total_vram_MiB_reported"]:
                total.skipped["2023 build: one total over several GPUs"] += 1
        if row["weights_cpu_MiB"] and number(row["weights_cpu_MiB"]) is not None:
            host.add(float(row["weights_cpu_MiB"]), e.plan.host_bytes / MIB, label(row, f"ctx {c.context}"), src)
    return tables, oom, ran


# ---- printing -----------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of absolute values."""
    v = sorted(abs(x) for x in values)
    return v[max(0, math.ceil(q * len(v)) - 1)]


def summary(t: Table) -> dict:
    errs = t.errors()
    if not errs:
        return {"rows": 0}
    return {"rows": len(errs), "median": pct(errs, 0.5), "p90": pct(errs, 0.9),
            "bias": statistics.median(errs)}


def print_table(t: Table, worst: int, show_skipped: bool) -> None:
    s = summary(t)
    print(f"\n== {t.name}" + (f"  [target: {t.target}]" if t.target else ""))
    if s["rows"]:
        print(f"   rows {s['rows']}   median |error| {s['median']:.1f} %   p90 {s['p90']:.1f} %   "
              f"signed median {s['bias']:+.1f} %")
        ranked = sorted(zip(t.errors(), t.rows), key=lambda x: -abs(x[0]))[:worst]
        for err, (m, p, lab, src) in ranked:
            print(f"   {err:+7.1f} %  measured {m:10.2f}  gpufit {p:10.2f} {t.unit}  {lab}")
            print(f"              {short_source(src)}")
    else:
        print("   rows 0")
    n_skip = sum(t.skipped.values())
    if n_skip:
        print(f"   skipped {n_skip}:" + ("" if show_skipped else " " + "; ".join(
            f"{n} {r}" for r, n in t.skipped.most_common())))
        if show_skipped:
            for r, n in t.skipped.most_common():
                print(f"     {n:5d}  {r}")


def oom_table(cat: Catalog, oom: list, ran: list, worst: int) -> dict:
    print("\n== OOM outcomes  [target: every OOM row predicted not fitting; no row that ran predicted not fitting]")
    skipped = Counter(reason for _, c, reason in oom if c is None)
    mapped = [(row, c) for row, c, _ in oom if c is not None]
    caught = [(row, c) for row, c in mapped if not estimate(cat, c).fits_on_gpus]
    missed = [(row, c) for row, c in mapped if estimate(cat, c).fits_on_gpus]
    configs = {}
    for row, c in ran:
        configs.setdefault(c, row)
    false_oom = [(row, c) for c, row in configs.items() if not estimate(cat, c).fits_on_gpus]
    print(f"   OOM rows: {len(mapped)} mapped, {len(caught)} predicted not fitting, {len(missed)} missed"
          + (f"; skipped {sum(skipped.values())}: " + "; ".join(f"{n} {r}" for r, n in skipped.items())
             if skipped else ""))
    print(f"   rows that ran: {len(ran)} ({len(configs)} distinct configurations), "
          f"{len(configs) - len(false_oom)} predicted fitting, {len(false_oom)} predicted not fitting")
    for row, c in (missed + false_oom)[:max(worst, 10)]:
        e = estimate(cat, c)
        what = "OOM but gpufit says it fits" if (row, c) in missed else "ran but gpufit says no fit"
        print(f"   {what}: {c.count}x {c.gpu} {c.model} {c.quant} ctx {c.context}: {e.plan.strategy}, "
              f"{e.plan.reason or 'fits'}")
        print(f"              {short_source(row['source'])}")
    return {"oom": len(mapped), "caught": len(caught), "ran_configs": len(configs), "false_oom": len(false_oom)}


def vllm_spot_table(cat: Catalog) -> Table:
    """vLLM decode at concurrency 1 (bench/data/vllm_decode.csv): a spot check of the engine-default
    factor, which no row here was used to fit."""
    t = Table("vLLM decode tokens/s, concurrency 1 (spot check of an unfitted factor)", "tok/s")
    for row in read("vllm_decode.csv"):
        ctx = int(row["input_tokens"]) + int(row["output_tokens"])
        devices = devices_from_specs([(cat.gpu(row["gpu"]), int(row["gpu_count"]))])
        req, _ = build_request(ModelChoice(cat.model(row["model"])), devices, cat, quant=row["quant"],
                               context=ctx, engine="vllm", planning=True)
        s = placement.Sizer(req)
        plan = placement.choose(req)
        # the decode runs after the 1024-token prompt: quote it at the middle of the generated span
        decode, _, _ = speed.estimate_speed(s, plan, 1, decode_context=int(row["input_tokens"]) + int(row["output_tokens"]) // 2)
        t.add(float(row["tokens_per_s"]), decode, f"{row['gpu']} x{row['gpu_count']} {row['model']} {row['quant']}",
              short_source(row["source"]))
    return t


def current_build_table(cat: Catalog) -> Table:
    """llama.cpp as it is now (bench/data/llama_cpp_current.csv): gpufit's default path -- MMQ for
    quantized prompts, flash attention on, its pipeline over the layer split -- against a 2026 build.
    No constant was fitted to these rows."""
    t = Table("llama.cpp, current build (spot check of the default path; nothing fitted to it)", "tok/s")
    for row in read("llama_cpp_current.csv"):
        depth, test = int(row["depth"]), row["test"]
        n = int(re.sub(r"\D", "", test))
        devices = devices_from_specs([(cat.gpu(row["gpu"]), int(row["gpu_count"]))])
        req, _ = build_request(ModelChoice(cat.model(row["model"])), devices, cat, quant=row["quant"],
                               context=depth + n + 256, engine="llama.cpp", planning=True,
                               engine_settings={"split_mode": row["split_mode"]})
        plan = placement.choose(req)
        s = placement.Sizer(req)
        if test.startswith("tg"):
            pred, _, _ = speed.estimate_speed(s, plan, 1, decode_context=depth + n // 2)
        else:
            pred, _ = speed.prefill_rate(s, plan, n, depth=depth)
        if pred is not None:
            t.add(float(row["tokens_per_s"]), pred, f"{row['gpu_count']}x {row['gpu']} | {row['model']} "
                  f"{row['quant']} | {test}" + (f" @ d{depth}" if depth else ""), row["source"])
    return t


def run(worst: int = 5, show_skipped: bool = False) -> dict:
    cat = load_catalog()
    decode, prompt, prompt_2023, old_decode, old_prompt, oom1, ran1, contradicted = speed_tables(
        cat, read("tokens_per_s.csv"))
    mem, oom2, ran2 = memory_tables(cat, read("memory.csv"))
    print("gpufit accuracy against bench/data (public measurements; sources in bench/data/SOURCES.md)")
    print("error = (gpufit - measured) / measured; median / p90 of |error|")
    # cards no fitted constant saw: the notebooks of the same benchmark whose cards tokens_per_s.csv
    # lacks (bench/transcribe_holdout.py); calibrate.py never reads them
    hold_decode, hold_prompt, *_ = speed_tables(cat, read("tokens_per_s_holdout.csv"))
    hold_decode.name = "decode tokens/s on held-out cards (tokens_per_s_holdout.csv; no constant was fitted to them)"
    hold_prompt.name = "prompt tokens/s on held-out cards (tokens_per_s_holdout.csv; no constant was fitted to them)"
    out = {}
    for t in (decode, prompt, hold_decode, hold_prompt, *mem, prompt_2023, contradicted, old_decode, old_prompt,
              vllm_spot_table(cat), current_build_table(cat)):
        print_table(t, worst, show_skipped)
        out[t.name] = summary(t)
    out["oom"] = oom_table(cat, oom1 + oom2, ran1 + ran2, worst)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worst", type=int, default=5, help="worst rows to list per table (default 5)")
    ap.add_argument("--skipped", action="store_true", help="list the skip reasons one per line")
    a = ap.parse_args(argv)
    run(a.worst, a.skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
