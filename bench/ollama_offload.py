#!/usr/bin/env python3
"""Ollama's scheduler estimate (llm/memory.go, per release) against public server logs.

    .venv/bin/python bench/ollama_offload.py            # summary, every compared row, every row left out and why
    .venv/bin/python bench/ollama_offload.py --quiet    # the summary only

Reads bench/data/ollama_offload.csv (67 public Ollama server-log rows, a source URL each). A row is
compared when it names a model gpufit's catalog has, the GPUs' available memory and the layers
offloaded; every other row is listed with the reason it is left out. Each row is estimated with the
Ollama release it ran (gpufit's `ollama@X.Y.Z`):
  * the version the row states; else
  * the log line's own source location (`source=server.go:175 msg=offload`, `memory.go:356 msg="offload
    to cuda"`): each location belongs to a known range of releases (SOURCE_LINES, read from every tag of
    ollama/ollama), narrowed to the newest release published before the log's date (RELEASES: the UTC
    date of each tag's last commit); else
  * the log's date alone; else the 0.12 family (said on the row).
num_ctx / parallel / KV type / flash attention come from the log where it gives them, else from the
release's defaults. The quant is the row's when it names one; where it does not (or only says "Q4"),
the catalog format whose block bytes match the log's memory.weights figure -- a choice among the
formats, never a number taken into the estimate. gpufit's estimate is computed from the catalog's
shape and that format, and compared on layers offloaded and memory.required.full.
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

# where the "offload" log line sits in each release (ollama/ollama: llm/memory.go `log.Info("offload to
# "+library` up to v0.5.11, then llm/server.go `slog.Info("offload", "", estimate)`), first and last release
SOURCE_LINES = {
    ("memory.go", 309): ("0.1.45", "0.3.9"),
    ("memory.go", 326): ("0.3.10", "0.3.14"),
    ("memory.go", 343): ("0.4.0", "0.4.7"),
    ("memory.go", 356): ("0.5.0", "0.5.11"),
    ("server.go", 130): ("0.5.12", "0.5.13"),
    ("server.go", 138): ("0.6.0", "0.6.7"),
    ("server.go", 139): ("0.6.8", "0.6.8"),
    ("server.go", 168): ("0.7.0", "0.9.2"),
    ("server.go", 175): ("0.9.3", "0.11.4"),
    ("server.go", 531): ("0.11.5", "0.11.6"),
    ("server.go", 528): ("0.11.7", "0.11.7"),
    ("server.go", 533): ("0.11.8", "0.11.8"),
    ("server.go", 543): ("0.11.9", "0.11.10"),
    ("server.go", 544): ("0.11.11", "0.12.3"),
    ("server.go", 545): ("0.12.4", "0.12.6"),
    ("server.go", 507): ("0.12.7", "0.12.7"),
    ("server.go", 522): ("0.12.8", "0.12.10"),
}
# ollama/ollama tags v0.1.45 - v0.12.10 and the UTC date of each one's last commit (git log -1 --format=%cd)
RELEASES = [s.split() for s in (
    "0.1.45 2024-06-20", "0.1.46 2024-06-25", "0.1.47 2024-06-27", "0.1.48 2024-06-29", "0.2.0 2024-07-07",
    "0.2.1 2024-07-09", "0.2.2 2024-07-12", "0.2.3 2024-07-13", "0.2.4 2024-07-13", "0.2.5 2024-07-13",
    "0.2.6 2024-07-18", "0.2.7 2024-07-18", "0.2.8 2024-07-22", "0.3.0 2024-07-25", "0.3.1 2024-07-31",
    "0.3.2 2024-07-31", "0.3.3 2024-08-01", "0.3.4 2024-08-07", "0.3.5 2024-08-11", "0.3.6 2024-08-13",
    "0.3.7 2024-08-25", "0.3.8 2024-08-27", "0.3.9 2024-08-31", "0.3.10 2024-09-07", "0.3.11 2024-09-18",
    "0.3.12 2024-09-24", "0.3.13 2024-10-10", "0.3.14 2024-10-17", "0.4.0 2024-11-05", "0.4.1 2024-11-08",
    "0.4.2 2024-11-15", "0.4.3 2024-11-21", "0.4.4 2024-11-23", "0.4.5 2024-11-25", "0.4.6 2024-11-27",
    "0.4.7 2024-11-30", "0.5.0 2024-12-05", "0.5.1 2024-12-06", "0.5.2 2024-12-13", "0.5.3 2024-12-17",
    "0.5.4 2024-12-17", "0.5.5 2025-01-11", "0.5.6 2025-01-15", "0.5.7 2025-01-16", "0.5.8 2025-02-10",
    "0.5.9 2025-02-13", "0.5.10 2025-02-14", "0.5.11 2025-02-14", "0.5.12 2025-02-24", "0.5.13 2025-03-04",
    "0.6.0 2025-03-11", "0.6.1 2025-03-14", "0.6.2 2025-03-17", "0.6.3 2025-03-26", "0.6.4 2025-04-02",
    "0.6.5 2025-04-05", "0.6.6 2025-04-19", "0.6.7 2025-05-01", "0.6.8 2025-05-03", "0.7.0 2025-05-14",
    "0.7.1 2025-05-23", "0.8.0 2025-05-27", "0.9.0 2025-05-29", "0.9.1 2025-06-14", "0.9.2 2025-06-18",
    "0.9.3 2025-06-26", "0.9.4 2025-06-30", "0.9.5 2025-07-01", "0.9.6 2025-07-07", "0.10.0 2025-07-30",
    "0.10.1 2025-07-30", "0.11.0 2025-08-05", "0.11.1 2025-08-05", "0.11.2 2025-08-05", "0.11.3 2025-08-06",
    "0.11.4 2025-08-07", "0.11.5 2025-08-19", "0.11.6 2025-08-20", "0.11.7 2025-08-22", "0.11.8 2025-08-28",
    "0.11.9 2025-09-02", "0.11.10 2025-09-04", "0.11.11 2025-09-12", "0.12.0 2025-09-18", "0.12.1 2025-09-23",
    "0.12.2 2025-09-24", "0.12.3 2025-09-26", "0.12.4 2025-10-09", "0.12.5 2025-10-10", "0.12.6 2025-10-16",
    "0.12.7 2025-10-29", "0.12.8 2025-10-30", "0.12.9 2025-10-31", "0.12.10 2025-11-05",
)]


def rel(v: str) -> tuple[int, int, int]:
    a, b, c = v.split(".")
    return int(a), int(b), int(c)


def read() -> list[dict]:
    with open(HERE / "data" / "ollama_offload.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def release_of(row) -> tuple[str | None, str]:
    """(release 'X.Y.Z' or None, how it was found)."""
    stated = re.match(r"^\s*v?(\d+\.\d+\.\d+)", row["ollama_version"] or "")
    if stated:
        return stated.group(1), "stated"
    notes = row["notes"] or ""
    date = re.search(r"(20\d\d-\d\d-\d\d)", notes)
    where = re.search(r"(server|memory)\.go:(\d+) msg=(?:offload|\"offload to)", notes)
    span = SOURCE_LINES.get((where.group(1) + ".go", int(where.group(2)))) if where else None
    cands = [(v, d) for v, d in RELEASES if span is None or rel(span[0]) <= rel(v) <= rel(span[1])]
    if date:
        before = [(v, d) for v, d in cands if d < date.group(1)]
        if before:
            return before[-1][0], (f"{where.group(0).split(' ')[0]} + log date {date.group(1)}" if span
                                   else f"log date {date.group(1)}")
    if span:
        return span[1], f"{where.group(0).split(' ')[0]} (last release of its range)"
    return None, "version unknown: the 0.12 family"


# rows whose log does not quote an Ollama library tag but whose own figures name the model; each with
# the evidence, as the row's model_tag / notes give it (never the compared figures: layers, required.full)
IDENTIFIED = {
    10: ("gemma3:12b", "ollama-engine gemma3, 49 layers with the output (48 blocks) + a 795.9 MiB projector: "
                       "Gemma 3 12B"),
    17: ("llama3.1:8b", "securetag-v1 is Meta Llama 3.1 8B Instruct + a LoRA adapter (the row); memory.go "
                        "does not count adapters"),
    26: ("gemma3:4b", "gemma3, 35 layers with the output (34 blocks) + a 795.9 MiB projector: Gemma 3 4B"),
    35: ("gemma2:2b", "gemma2 architecture, n_embd 2304, 26 blocks: Gemma 2 2B"),
    49: ("gemma3:1b", "ollama-engine gemma3, 27 layers with the output (26 blocks): Gemma 3 1B"),
    61: ("deepseek-r1:14b", "49 layers with the output (48 blocks), a 0.5948 GiB output layer (152064 x 5120 "
                            "Q6_K, Qwen2.5-14B's head) in a deepseek-r1 14b thread"),
    64: ("gpt-oss:120b", "architecture=gptoss file_type=MXFP4 with 37 layers (36 blocks): gpt-oss-120b"),
    31: ("qwen2.5:72b", "Dolphin 2.9.2 is a Qwen2-72B fine-tune: Qwen2-72B's shape (80 x 8192, 64 / 8 heads, "
                        "29568, vocab 152064) is the catalog's Qwen2.5-72B"),
    60: ("llama3.1:70b", "llama, 81 layers (80 blocks), an 822.0 MiB output layer (128256 x 8192 in Q6_K): "
                         "a Llama 3.x 70B (3, 3.1 and 3.3 share the shape)"),
}
# rows compared whose figures gpufit does not reproduce, and why (printed under the row)
UNEXPLAINED = {
    14: "not reproduced: with the log's own figures (2.1 GiB of blocks over 36 layers, kv 576 MiB, graph "
        "384 MiB, the 457 MiB minimum) v0.7.x memory.go places 30-31 layers in 3.2 GiB; the 27 it logs "
        "add up to 2.9 GiB, not the 3.2 GiB partial figure it logs beside them",
    2: "the log's kv (496 MiB) is num_ctx 1024 (62 x 1024 x 8 KiB), a setting the log does not give; the "
       "default 2048 is used",
}
# rows that name a model the catalog has, left out for a stated reason
EXCLUDED = {
    22: "mistral-small3.1 carries a Pixtral vision tower (the log's projector.weights 769.3 MiB, projector.graph "
        "8.8 GiB); the catalog's mistral-small-3.2-24b is its text model",
    23: "mistral-small3.1 with its Pixtral vision tower (see row 22), and the log names no quant nor weights",
    13: "the log's 1.9 GiB output layer is an F16 token_embd (262144 x 3840 x 2 bytes): a Gemma 3 QAT build "
        "(12b-it-qat), a format the catalog does not have",
    24: "the log's 2.6 GiB output layer is an F16 token_embd (262144 x 5376 x 2 bytes): Gemma 3 27B QAT "
        "(27b-it-qat), a format the catalog does not have",
    25: "the same Gemma 3 27B QAT build as row 24, and the log gives no num_ctx",
    32: "deepseek-v2 with no tag quoted, and its logged kv (4.2 GiB) is twice what the num_ctx 8192 of the "
        "row makes for DeepSeek-V2-Lite (27 x 8192 x 16 x (192 + 128) x 2 bytes = 2.1 GiB): the runner's "
        "context is not in the excerpt",
    **{r: "llama3.2-vision (mllama: cross-attention layers, a separate projector file) is not in the catalog"
       for r in (3, 4, 36, 37)},
}


def model_of(cat, i, row):
    """(spec, tag quant, whether the row names the quant, how the model was found) or a reason."""
    tag = row["model_tag"].split(" ")[0].strip().lower()
    text = row["model_tag"].lower()
    how = ""
    if i in IDENTIFIED:
        tag, how = IDENTIFIED[i]
    elif not tag or tag.startswith("(") or "tag not" in text or "not in the quoted" in text:
        return None, "the log names no model (no tag, no shape that singles one out)"
    try:
        hit = cat.resolve_ollama_tag(tag if ":" in tag else tag + ":latest")
    except GpufitError:
        hit = None
    q = re.match(r"^(Q\d_K_[SML]|Q\d_K|Q\d_\d|MXFP4|F16)\b", row["gguf_quant"] or "")
    named = bool(q and cat.has_quant(q.group(1)))
    if hit is not None:
        t, quant, _ = hit
        spec = cat.models[t.model]
    else:  # a user's own Modelfile over a model the catalog knows by name (phi-4 from microsoft/phi-4-gguf)
        try:
            spec = cat.model(tag.split(":")[0])
        except GpufitError:
            return None, f"{tag!r} is neither an Ollama library tag nor a catalog model"
        quant = ""  # the log's weights decide (pick_quant), or the row is left out
        how = how or f"{tag!r}: the catalog's {spec.key} (not a library tag)"
    if named:
        quant = cat.quant(q.group(1)).key
    return (spec, quant, named, how), ""


def number(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def log_blocks(row, fam) -> float | None:
    """The repeating blocks' bytes (GiB) as the log's memory.weights.* give them: before v0.6.1 the
    total sums each block with its KV share (weights.total = blocks + kv); since, weights.repeating is
    the blocks (llm/memory.go `memoryWeights +=` and MemoryEstimate.log / LogValue of each tag)."""
    tot, rep, kv = number(row["weights_total_GiB"]), number(row["weights_repeating_GiB"]), number(row["required_kv_GiB"])
    if fam.release < (0, 6, 1):
        return tot - kv if tot and kv else None
    return rep


def pick_quant(cat, spec, quant, row, fam) -> tuple[str, str]:
    """The tag's quant where the log's weights agree with it (the log rounds to 0.1 GiB: within
    0.05 GiB + 3 %); else the Ollama GGUF format whose blocks come nearest, within 5 %."""
    blocks = log_blocks(row, fam)
    if not blocks:
        return quant, ""
    quant = quant or ""

    def gib(key: str) -> float:
        return sum(O.layer_weights(spec, cat.quant(key))) / GIB

    if quant and abs(gib(quant) - blocks) <= 0.05 + 0.03 * blocks:
        return quant, ""
    best = None
    for q in cat.quants.values():
        if q.kind != "gguf" or "ollama" not in q.engines:
            continue
        err = abs(gib(q.key) - blocks) / blocks
        if err <= 0.05 and (best is None or err < best[0]):
            best = (err, q.key)
    if best and best[1] != quant:
        return best[1], f"quant not named; the log's weights ({blocks:.1f} GiB of blocks) are {best[1]}"

    return quant, ""


def compare(cat, i, row):
    avail = [number(x) for x in (row["memory_available_GiB"] or "").split(";") if x.strip()]
    if not avail or any(a is None for a in avail):
        return None, "the log gives no memory.available (nothing to place against)"
    gpus = int(number(row["gpu_count"]) or len(avail))
    if gpus > len(avail):
        return None, f"the log gives memory.available for {len(avail)} of its {gpus} GPUs"
    if not row["layers_offloaded"]:
        return None, "the log gives no layers offloaded"
    if "regression" in (row["notes"] or "").lower() and "bug" in (row["notes"] or "").lower():
        return None, "the log shows a bug, not a capacity decision"
    if i in EXCLUDED:
        return None, EXCLUDED[i]
    version, how = release_of(row)
    try:
        eng = O.for_version(version) if version else O.for_version("0.12")
    except GpufitError:
        return None, f"Ollama {version} places layers by the runner's measured layout, not the memory.go estimate"
    mq, why = model_of(cat, i, row)
    if mq is None:
        return None, why
    spec, quant, named, found = mq
    fam = eng.family
    said = [how] + ([found] if found else [])
    if not named:
        quant, note = pick_quant(cat, spec, quant, row, fam)
        if not quant:
            return None, f"{spec.key}: no library tag, and the log names no quant nor weights that match one"
        if note:
            said.append(note)
    par = int(number(row["num_parallel"]) or 1)
    # the log's num_ctx is the runner's context, num_ctx x parallel (ollama-scheduling.md, point 2)
    ctx = int(number(row["num_ctx"]) // par) if number(row["num_ctx"]) else None
    devs = tuple(Device(index=str(i), name="gpu", total_bytes=int(a * GIB), free_bytes=int(a * GIB))
                 for i, a in enumerate(avail))
    if ctx is None:
        ctx = O.default_num_ctx(fam, spec, devs)[0]
    kv = "q8_0" if row["kv_cache_type"].startswith("q8_0") else "q4_0" if row["kv_cache_type"].startswith("q4_0") else "f16"
    fa_text = row["flash_attention"].lower()
    fa = fa_text.startswith(("enabled", "on", "true", "1")) if fa_text else fam.flash_attn_default(spec)
    if ctx > spec.max_context:
        spec = replace(spec, max_context=ctx)
    req = FitRequest(model=spec, quant=cat.quant(quant), kv_dtype=cat.kv_dtype("fp16"), context=ctx, batch=par,
                     engine="ollama", devices=devs, engine_version=fam.name)
    frees = [int(a * GIB) for a in avail]
    kv_type = kv if fa else "f16"
    tries = [fam.parallel, 1] if fam.parallel > 1 else [1]
    logged_kv = number(row["required_kv_GiB"])
    # which of the scheduler's tries (default slots, then 1) the log line reports, where its KV says so
    said_par = [p for p in tries if logged_kv and abs(sum(O.kv_per_layer(req, kv_type, ctx, p, fam)) / GIB - logged_kv)
                <= 0.005 + 0.01 * logged_kv]
    if number(row["num_parallel"]) or number(row["num_ctx"]):
        used, est = O.schedule(req, frees, ctx, par, kv_type, fa, fam=fam)
    elif len(said_par) == 1:
        par = said_par[0]
        if par != tries[0]:
            said.append(f"the log's kv ({logged_kv:.3g} GiB) is the scheduler's {par}-slot try")
        req = replace(req, batch=par)
        used, est = O.schedule(req, frees, ctx, par, kv_type, fa, fam=fam)
    else:  # the log does not say: the scheduler's own default slots, then 1
        par, used, est = O.schedule_default_parallel(req, frees, fam, ctx, kv_type, fa)
    return {"row": row, "family": fam.name, "model": spec.key, "quant": quant, "ctx": ctx, "par": par, "est": est,
            "layers": int(row["layers_offloaded"]), "full": number(row["required_full_GiB"]), "said": said}, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quiet", action="store_true", help="the summary only")
    ap.add_argument("--skipped", action="store_true", help=argparse.SUPPRESS)  # listed by default now
    a = ap.parse_args(argv)
    cat = load_catalog()
    done, skipped = [], []
    for i, row in enumerate(read()):
        c, why = compare(cat, i, row)
        (done.append((i, c)) if c else skipped.append((i, row, why)))
    exact = sum(1 for _, c in done if c["est"].layers == c["layers"])
    within1 = sum(1 for _, c in done if abs(c["est"].layers - c["layers"]) <= 1)
    errs = [100 * (c["est"].required_full / GIB - c["full"]) / c["full"] for _, c in done if c["full"]]
    print("Ollama memory.go estimate (gpufit ollama@<the row's release>) against public server logs "
          "(bench/data/ollama_offload.csv)")
    print(f"rows compared {len(done)} of {len(done) + len(skipped)}: layers offloaded exact {exact} "
          f"({100 * exact / max(1, len(done)):.0f} %), within +-1 {within1} ({100 * within1 / max(1, len(done)):.0f} %)")
    if errs:
        med = statistics.median(abs(e) for e in errs)
        print(f"memory.required.full: {len(errs)} rows, median |error| {med:.1f} %, signed median "
              f"{statistics.median(errs):+.1f} %, worst {max(errs, key=abs):+.1f} %")
    if a.quiet:
        return 0
    for i, c in done:
        e = c["est"]
        full = f"{e.required_full / GIB:6.1f} vs {c['full']:6.1f} GiB" if c["full"] else "   (no full figure)"
        print(f"  row {i:2d} @{c['family']:<7} {c['model']:<26} {c['quant']:<7} ctx {c['ctx']:>6} x{c['par']}: "
              f"layers {e.layers:3d} vs {c['layers']:3d}  full {full}  [{'; '.join(c['said'])}]")
        if i in UNEXPLAINED:
            print(f"      ^ {UNEXPLAINED[i]}")
    print(f"rows left out ({len(skipped)}):")
    for i, row, why in skipped:
        print(f"  row {i:2d}: {why} ({row['model_tag'][:60]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
