"""Text rendering of fit results and catalog listings. GiB = 2^30 bytes, GB = 10^9 bytes; both are
named wherever a size is printed."""

from __future__ import annotations

from ..estimator.types import Strategy, Verdict
from ..units import GIB
from .words import alternative, word


VERDICT_TEXT = {
    Verdict.FITS: "FITS",
    Verdict.TIGHT: "FITS, TIGHT",
    Verdict.OFFLOAD: "FITS ONLY WITH CPU OFFLOAD",
    Verdict.NO_FIT: "DOES NOT FIT",
}


def gib(n: int | float | None, digits: int = 1) -> str:
    return "-" if n is None else f"{n / GIB:.{digits}f}"


def sig(x: float | None, digits: int = 2) -> str:
    """A measured-error-sized figure: `digits` significant figures, no exponent, no trailing '.0'
    (speeds are within ~5-15 % of measurement: 1234.5 -> '1200', 56.7 -> '57', 5.67 -> '5.7')."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    import math

    v = float(f"{x:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{decimals}f}"


def gb(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.1f} GB"


def table(rows: list[list[str]], header: list[str]) -> str:
    cols = [header] + rows
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
    out = []
    for j, r in enumerate(cols):
        out.append("  ".join(str(c).ljust(widths[i]) if i == 0 or not _num(c) else str(c).rjust(widths[i])
                             for i, c in enumerate(r)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _num(c) -> bool:
    s = str(c).replace(".", "", 1).replace("-", "", 1).replace(",", "")
    return s.isdigit()


def verdict_line(res) -> str:
    r = res.request
    used = [d for d in res.devices if d.needed_bytes]
    need = res.memory.total_bytes
    shown = res.devices
    if any(d.parent is not None for d in shown):
        # MIG devices are used one at a time: the headline is the slice the plan uses (or the largest)
        shown = used[:1] or [max(shown, key=lambda d: d.free_bytes)]
    free = sum(d.free_bytes for d in shown)
    where = _device_summary(shown)
    line = f"{VERDICT_TEXT[res.verdict]}: needs {gb(need)} ({gib(need)} GiB); {gb(free)} ({gib(free)} GiB) free on {where}"
    if r.reserve_bytes:
        line += f", less --reserve {gib(r.reserve_bytes)} GiB per GPU"
    if res.verdict == Verdict.NO_FIT:
        short = need - free
        if short > 0:
            line += f"; short by {gb(short)}"
        elif res.refusal is not None:
            name = r.engine_label
            line += f"; {name} would not start or serve it ({res.refusal.code})"
    elif used:
        worst = min(used, key=lambda d: d.headroom_bytes)
        line += f"; headroom {gb(worst.headroom_bytes)} ({gib(worst.headroom_bytes)} GiB)"
        if len(used) > 1:
            line += f" on the fullest card (GPU {worst.index})"
    return line


def _device_summary(devices) -> str:
    names: dict[str, int] = {}
    for d in devices:
        names[d.name] = names.get(d.name, 0) + 1
    return ", ".join(f"{n} x {name}" for name, n in names.items()) or "no GPU"


def fit_text(res) -> str:
    r = res.request
    m = r.model
    perf = res.performance
    p = res.placement
    lines = [
        f"{m.name} ({m.key}) · {r.quant.key} · context {r.context} · batch {r.batch} · kv {r.kv_dtype.key} · engine {r.engine_label}",
        verdict_line(res),
        "",
        "Memory needed (GiB = 2^30 bytes)",
    ]
    mem = res.memory
    src = f" ({r.weights_source})" if r.weights_source else ""
    lines += [
        f"  weights      {gib(mem.weights_bytes, 2):>9} GiB{src}",
        f"  KV cache     {gib(mem.kv_cache_bytes, 2):>9} GiB",
        f"  activations  {gib(mem.activation_bytes, 2):>9} GiB",
        f"  overhead     {gib(mem.overhead_bytes, 2):>9} GiB  (CUDA context, graphs; per GPU used)",
        f"  total        {gib(mem.total_bytes, 2):>9} GiB  = {gb(mem.total_bytes)}",
        "",
    ]
    rows = [[d.index, d.name.replace("NVIDIA ", ""), d.catalog_key or "?", gib(d.total_bytes), gib(d.free_bytes),
             gib(d.needed_bytes), gib(d.headroom_bytes), str(d.layers) if res.verdict != Verdict.NO_FIT else "-"] for d in res.devices]
    lines.append(table(rows, ["GPU", "name", "catalog", "total", "free", "needed", "headroom", "layers"]))
    lines.append("  (GiB; headroom = free - reserve - needed)")
    if p.tensor_parallel > 1 and p.pipeline_parallel > 1:
        strat = f"tensor parallel {p.tensor_parallel} x pipeline parallel {p.pipeline_parallel}"
    elif p.tensor_parallel > 1:
        strat = f"tensor parallel {p.tensor_parallel}"
    elif p.pipeline_parallel > 1:
        strat = f"pipeline parallel, {p.pipeline_parallel} stages"
    else:
        strat = p.strategy.replace("_", " ")
    extra = ""
    if p.strategy == Strategy.CPU_OFFLOAD and p.gpu_layers == m.layers:
        extra = f", every layer on GPU but the output layer; {gib(p.cpu_bytes)} GiB in host RAM"
    elif p.strategy == Strategy.CPU_OFFLOAD:
        extra = f", {p.gpu_layers}/{m.layers} layers on GPU, {gib(p.cpu_bytes)} GiB in host RAM"
    if res.verdict != Verdict.NO_FIT:  # a model that does not fit has no placement to show
        lines += ["", f"Placement: {strat}{extra}"]
    if perf.decode_tokens_per_s:
        b = perf.basis
        bw = b.get("bandwidth_gbps")
        lines.append(
            f"Speed: ~{sig(perf.decode_tokens_per_s)} tokens/s decode"
            + (f" (batch {r.batch}, all sequences)" if r.batch > 1 else "")
            + (f", ~{sig(perf.prefill_tokens_per_s)} tokens/s prefill ({b.get('prefill_prompt_tokens')}-token "
               f"prompt)" if perf.prefill_tokens_per_s else "")
        )
        lat = b.get("layer_latency_s")
        read = (f"{gb(b.get('bytes_per_token') / p.tensor_parallel)} read per token on each of "
                f"{p.tensor_parallel} ranks" if p.tensor_parallel > 1 else f"{gb(b.get('bytes_per_token'))} read per token")
        bw_text = "/".join(f"{x:.0f}" for x in bw) if isinstance(bw, list) else f"{bw:.0f}"
        lines.append(
            f"  basis: {read} / ({bw_text} GB/s"
            + (" left by in-band ECC" if b.get("ecc_bandwidth_share") else "")
            + f" x {b.get('efficiency'):.2f} efficiency)"
            + (f" + {m.layers} layers x {lat * 1e6:.0f} us" if lat else "")
            + (f" + {b['split_latency_s'] * 1e3:.2f} ms between GPUs" if b.get("split_latency_s") else "")
            + (f"; prefill {b.get('tflops'):.0f} TFLOP/s {b.get('tflops_dtype')} x {b.get('prefill_efficiency'):.2f}"
               + (", flash attention" if b.get("flash_attn") else ", no flash attention")
               if b.get("tflops") else "")
        )
        if "not calibrated" in str(b.get("efficiency_from", "")):
            lines.append(f"  ({b['efficiency_from']}: a datasheet-based figure"
                         + (", likely optimistic for MoE models at batch 1)" if m.is_moe else ")"))
    elif res.verdict != Verdict.NO_FIT and perf.basis.get("note"):
        lines.append(f"Speed: not estimated ({perf.basis['note'].removeprefix('no speed: ')})")
    if perf.max_context is not None:
        lines.append(f"Largest context at batch {r.batch}: {perf.max_context} tokens; "
                     f"largest batch at context {r.context}: {perf.max_batch} (in the free memory)")
    lines += engine_memory_lines(res)
    if res.alternatives:
        lines += ["", "What would fit instead:"]
        for a in res.alternatives:
            speed = f", ~{sig(a.decode_tokens_per_s)} tokens/s" if a.decode_tokens_per_s else ""
            lines.append(f"  - {alternative(a)}{speed}")
    if res.engine_args:
        lines += ["", "Engine flags:"]
        for k, v in res.engine_args.items():
            lines.append(f"  {k:<10} {v}")
    if res.warnings:
        lines += ["", "Warnings:"] + [f"  ! {word(w)}" for w in res.warnings]
    if res.notes:
        lines += ["", "Assumed:"] + [f"  {word(n)}" for n in res.notes]
    return "\n".join(lines)


def engine_memory_lines(res) -> list[str]:
    """The engine's own start-up figures, worded as the log they reproduce words them."""
    em = res.engine_memory
    if em is None:
        return []
    return ENGINE_LOGS[em.log](em, res.request)


def _scheduler_lines(em, r) -> list[str]:
    """A per-GPU layer fit, in the words of Ollama's "offload to cuda" log line."""
    req_, lay, graph = em.extra["required"], em.extra.get("layers", {}), em.extra.get("graph", {})
    allocs = ", ".join(f"{gib(a)}" for a in req_.get("allocations_bytes", []))
    return ["", f"{r.engine_label} scheduler estimate (GPUs {em.device}, as its server log prints it):",
            f"  layers.model={lay.get('model')} layers.offload={lay.get('offload')} "
            f"layers.split={','.join(str(n) for n in lay.get('split', []))}",
            f"  memory.required.full={gib(req_['full_bytes'])} GiB partial={gib(req_['partial_bytes'])} GiB "
            f"kv={gib(req_['kv_bytes'], 2)} GiB allocations=[{allocs}] GiB",
            f"  memory.graph.full={gib(graph.get('full_bytes'), 2)} GiB partial={gib(graph.get('partial_bytes'), 2)} GiB"
            f" (num_ctx {em.extra.get('num_ctx')} x {em.extra.get('num_parallel')} slots)"]


def _kv_pool_lines(em, r) -> list[str]:
    """A profile run then a KV pool, in the words of vLLM's start-up log ("Available KV cache memory",
    "GPU KV cache size", "Maximum concurrency for N tokens per request")."""
    out = ["", f"{r.engine_label} at start-up (GPU {em.device}, the rank that bounds the pool):"]
    if em.budget_bytes is not None:
        util = em.extra.get("utilization")
        out.append(f"  budget: {util:g} x CUDA total = {gib(em.budget_bytes, 2)} GiB" if util
                   else f"  budget: {gib(em.budget_bytes, 2)} GiB")
    parts = [("model weights", em.weights_bytes), ("activation peak", em.activation_peak_bytes),
             ("non-torch", em.non_torch_bytes), ("CUDA graphs", em.cuda_graph_bytes)]
    out.append("  " + "; ".join(f"{k} {gib(v, 2)} GiB" for k, v in parts if v is not None))
    avail = em.extra.get("available_kv_bytes")
    if avail is not None:
        out.append(f"  Available KV cache memory: {gib(avail, 2)} GiB")
    if em.kv_pool_tokens is not None:
        out.append(f"  GPU KV cache size: {em.kv_pool_tokens:,} tokens")
    if em.max_concurrency is not None:
        out.append(f"  Maximum concurrency for {r.context:,} tokens per request: {em.max_concurrency:.2f}x")
    if em.max_model_len_fit is not None and (em.refusal is not None or em.max_model_len_fit < r.context):
        out.append(f"  estimated maximum model length: {em.max_model_len_fit:,}")
    if em.refusal is not None:
        out.append(f"  refuses to start ({em.refusal.code}): {em.refusal.message}")
    return out


# EngineMemory.log -> the lines that word it
ENGINE_LOGS = {"kv_pool": _kv_pool_lines, "scheduler": _scheduler_lines}


def check_line(res) -> str:
    """The one line `gpufit check` prints on stderr: the verdict, and the engine's reason when it refuses."""
    r = res.request
    name = r.engine_label
    line = f"gpufit check: {r.model.key} {r.quant.key} ctx {r.context} batch {r.batch} on {name}: {verdict_line(res)}"
    if res.refusal is not None:
        line += f": {res.refusal.message}"
    return line


def models_text(models) -> str:
    from ..estimator.params import count_params

    rows = []
    for m in models:
        pc = count_params(m)
        act = f"{pc.active / 1e9:.1f}B" if m.is_moe else ""
        rows.append([m.key, m.name, f"{pc.total / 1e9:.2f}B", act, str(m.layers), f"{m.heads}/{m.kv_heads}",
                     str(m.max_context), m.native_dtype])
    return table(rows, ["key", "name", "params", "active", "layers", "heads/kv", "max ctx", "dtype"])


def local_models_text(rows) -> str:
    """`gpufit models --local`: name, store, format, size, verdict (with a snapshot), path."""
    if not rows:
        return "no models found in the Hugging Face cache, Ollama, LM Studio or llama.cpp stores"
    show_fit = any(r["verdict"] or r["reason"] for r in rows)
    out = []
    for r in rows:
        size = gb(r["bytes"]) + (f" ({len(r['missing_shards'])} shards missing)" if r["missing_shards"] else "")
        row = [r["name"], r["store"], r["format"], size]
        if show_fit:
            row.append(r["verdict"] or ("? " + (r["reason"] or "")[:60]))
        out.append(row + [r["path"]])
    head = ["name", "store", "format", "size"] + (["fits now"] if show_fit else []) + ["path"]
    return table(out, head)


def gpus_text(gpus) -> str:
    rows = [[g.key, g.name, f"{g.memory_bytes / GIB:.0f}", f"{g.bandwidth_gbps:g}",
             f"{g.bf16_tflops or g.fp16_tflops or 0:g}" if (g.bf16_tflops or g.fp16_tflops) else "-",
             g.compute_capability, g.architecture] for g in gpus]
    return table(rows, ["key", "name", "GiB", "GB/s", "TFLOP/s 16b", "CC", "arch"])


def report_text(report) -> str:
    """An app.report.Report for a person: the overall status, then each check, GPU and watched model."""
    from .words import model_check

    mark = {"ok": "ok  ", "warn": "WARN", "crit": "CRIT", "unknown": " ?  "}
    when = report.time or "time not in the capture"
    name = report.hostname or "host not in the capture"
    out = [f"gpufit report  {name}  {when}  status: {str(report.status).upper()}"]
    if report.error:
        out.append(f"  error: {report.error}")
    for c in report.host_checks:
        out.append(f"  [{mark[c.status]}] host {c.name}: {c.message}")
    for g in report.gpus:
        key = f" ({g.catalog_key})" if g.catalog_key else ""
        out.append(f"GPU {g.gpu.index}: {g.gpu.name or '?'}{key}  {g.gpu.uuid or ''}  {str(g.status).upper()}")
        for c in g.checks:
            out.append(f"  [{mark[c.status]}] {c.name}: {c.message}")
    if report.models:
        out.append("Models (memory in GiB = 2^30 bytes):")
        for m in report.models:
            q = f" {m.quant}" if m.quant else ""
            out.append(f"  [{mark[m.status]}] {m.name}{q}: {model_check(m)}")
    return "\n".join(out) + "\n"


def recommend_text(rows, min_tps: float) -> str:
    if not rows:
        return f"No catalog model fits at >= {min_tps:g} tokens/s on these GPUs."
    t = table([[r.model, f"{r.params / 1e9:.1f}B", r.quant, r.engine, str(r.context), gib(r.total_bytes),
                gib(r.headroom_bytes or 0), sig(r.decode_tokens_per_s) if r.decode_tokens_per_s else "-",
                r.placement] for r in rows],
              ["model", "params", "quant", "engine", "context", "needs GiB", "headroom GiB", "tok/s", "placement"])
    return t + "\n\nRanked by: " + rows[0].rule


def _snapshot(snap, catalog=None) -> str:
    from .probe import snapshot_table

    return snapshot_table(snap, catalog)


def _fleet(ans) -> str:
    from .fleet import fleet_text

    return fleet_text(ans)


RENDERERS = {"fleet": _fleet, "fit": fit_text, "check": check_line, "report": report_text, "recommend": recommend_text,
             "snapshot": _snapshot, "models": models_text, "gpus": gpus_text, "local_models": local_models_text}
