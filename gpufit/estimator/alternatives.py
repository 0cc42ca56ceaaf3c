"""What would fit instead: another quantization, a shorter context, more cards, offload, a smaller
model of the same family. Pure: the candidates come in as data; each is checked with the estimator."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..catalog.types import GpuSpec, ModelSpec, QuantFormat
from .engines import EngineName, default_engine
from .types import Alternative, Device, FitRequest, FitResult, Verdict

MIN_USEFUL_CONTEXT = 2048  # a shorter context than this is not offered as an alternative
MAX_CARDS = 64  # more than one node: TP inside a node x PP across nodes; beyond this we stop counting


@dataclass(frozen=True)
class Candidates:
    """What alternatives may propose: formats, models of the family, reference cards."""
    quants: tuple[QuantFormat, ...] = ()  # formats the engine can run, any order
    family: tuple[ModelSpec, ...] = ()  # other models of the same family
    reference_gpus: tuple[GpuSpec, ...] = ()  # cards to count "N of these would do" for


def _fits(req: FitRequest) -> FitResult | None:
    from .fit import estimate

    r = estimate(req, alternatives=False)
    return r if r.verdict in (Verdict.FITS, Verdict.TIGHT) else None


def _first_fit(req: FitRequest, quants: Sequence[QuantFormat], engine: str | None,
               fallback_kv: QuantFormat | None = None) -> tuple[QuantFormat, str, FitResult] | None:
    """The first of `quants` (best first) that fits, on `engine` or, when None, the engine that runs it
    by default (llama.cpp for GGUF types, vLLM otherwise). Moving to an engine that has no cache of the
    requested KV dtype uses `fallback_kv` (fp16) there."""
    for q in quants:
        eng = engine or default_engine(q.kind)
        if eng not in q.engines:
            continue
        kv = req.kv_dtype
        if eng not in (kv.kv_engines or kv.engines):
            if fallback_kv is None:
                continue
            kv = fallback_kv
        r = _fits(dataclasses.replace(req, quant=q, engine=EngineName(eng), kv_dtype=kv))
        if r:
            return q, eng, r
    return None


def _cards_needed(req: FitRequest, spec: GpuSpec) -> tuple[int, FitResult] | None:
    """Smallest count of `spec` cards (whole, nothing else running) that holds the request."""
    n = 1
    while n <= MAX_CARDS:
        devs = tuple(Device.from_spec(spec, i) for i in range(n))
        r = _fits(dataclasses.replace(req, devices=devs, planning=True))
        if r:
            return sum(1 for d in r.devices if d.needed_bytes), r
        n = n + 1 if n < 8 else n + 8  # beyond one 8-GPU node count whole nodes
    return None


def find_alternatives(result: FitResult, c: Candidates) -> list[Alternative]:
    req = result.request
    out: list[Alternative] = []
    if result.verdict == Verdict.FITS:
        return out
    # 0. the engine's own settings that would make its refused start work (vLLM: a utilisation the
    #    free memory allows, its estimated maximum model length, an fp8 KV cache)
    from .engines import get as get_engine

    kv_by_key = {q.key: q for q in c.quants if q.kv_cache}
    quant_by_key = {q.key: q for q in c.quants}
    for words, changes in get_engine(req.engine, req.engine_version).alternatives(result):
        if "kv_dtype" in changes:
            if changes["kv_dtype"] not in kv_by_key:
                continue
            changes = {**changes, "kv_dtype": kv_by_key[changes["kv_dtype"]]}
        if "quant" in changes:
            if changes["quant"] not in quant_by_key:
                continue
            changes = {**changes, "quant": quant_by_key[changes["quant"]]}
        r = _fits(dataclasses.replace(req, **changes))
        if r:
            shown = {k: (v.key if hasattr(v, "key") else v) for k, v in changes.items()}
            out.append(Alternative("engine_setting", f"{words}: {r.verdict}", r.verdict, shown,
                                   r.memory.total_bytes, r.performance.decode_tokens_per_s))
    # 1. the lowest-loss quantization that fits on this engine; failing that, on another engine
    #    (GGUF on llama.cpp splits and offloads differently from vLLM); and whether 4-bit fits at all
    lower = sorted((q for q in c.quants if q.bits_per_weight < req.quant.bits_per_weight and not q.tensor_only),
                   key=lambda q: (-q.quality, q.bits_per_weight))
    same = [q for q in lower if req.engine in q.engines]
    other = [q for q in lower if req.engine not in q.engines]
    fp16 = next((q for q in c.quants if q.key == "fp16"), None)
    best_q = _first_fit(req, same, req.engine) or _first_fit(req, other, None, fp16)
    if best_q:
        q, eng, r = best_q
        kv = r.request.kv_dtype.key
        flag = (f"--quant {q.key}" + (f" --engine {eng}" if eng != req.engine else "")
                + (f" --kv-dtype {kv}" if kv != req.kv_dtype.key else ""))
        out.append(Alternative("quant", flag, r.verdict, {"quant": q.key, "engine": eng, "kv_dtype": kv},
                               r.memory.total_bytes, r.performance.decode_tokens_per_s))
    else:
        four = [q for q in same if 3.9 < q.bits_per_weight < 5]
        if four:
            from .fit import estimate

            q = max(four, key=lambda q: q.quality)
            r = estimate(dataclasses.replace(req, quant=q), alternatives=False)
            out.append(Alternative("quant", f"--quant {q.key}", Verdict.NO_FIT, {"quant": q.key}, r.memory.total_bytes,
                                   data={"not_even_4bit": True}))
    # 2. a shorter context
    if req.context > MIN_USEFUL_CONTEXT:
        from .fit import max_context

        mc = max_context(req)
        if mc and MIN_USEFUL_CONTEXT <= mc < req.context:  # never the context already asked for
            r = _fits(dataclasses.replace(req, context=mc))
            if r:
                out.append(Alternative("context", f"--context {mc}: fits", r.verdict, {"context": mc},
                                       r.memory.total_bytes, r.performance.decode_tokens_per_s))
    # 2b. fewer concurrent sequences
    if req.batch > 1:
        from .fit import max_batch

        mb = max_batch(req)
        if mb and mb < req.batch:
            r = _fits(dataclasses.replace(req, batch=mb))
            if r:
                out.append(Alternative("batch", f"--batch {mb}: fits", r.verdict, {"batch": mb},
                                       r.memory.total_bytes, r.performance.decode_tokens_per_s))
    # 3. CPU offload, with the host RAM it needs (when the engine can and RAM was the only obstacle)
    if result.verdict == Verdict.NO_FIT and req.devices:
        from .fit import estimate

        r = estimate(dataclasses.replace(req, host_ram_available_bytes=1 << 62), alternatives=False)
        if r.verdict == Verdict.OFFLOAD:
            p = r.placement
            have = req.host_ram_available_bytes
            enough = have is not None and p.cpu_bytes <= have
            what = ("every layer on the GPU(s) but the output layer" if p.gpu_layers == req.model.layers
                    else f"{p.gpu_layers} of {req.model.layers} layers on the GPU(s)")
            out.append(Alternative(
                "offload", f"CPU offload: {what}",
                Verdict.OFFLOAD, {"engine": req.engine, "ram": p.cpu_bytes}, r.memory.total_bytes,
                r.performance.decode_tokens_per_s,
                data={"host_bytes": p.cpu_bytes, "host_ram": "enough" if enough else ("short" if have is not None else "unknown")}))
    # 4. N cards: of the kind selected, and of each reference card
    seen = set()
    kinds = [d.spec for d in req.devices if d.spec] + list(c.reference_gpus)
    for spec in kinds:
        if spec.key in seen:
            continue
        seen.add(spec.key)
        got = _cards_needed(req, spec)
        if got:
            n, r = got
            nodes = f" ({-(-n // 8)} nodes of 8)" if n > 8 else ""
            p = r.placement
            how = p.strategy.replace("_", " ")
            if p.tensor_parallel > 1 and p.pipeline_parallel > 1:
                how = f"tensor parallel {p.tensor_parallel} x pipeline parallel {p.pipeline_parallel}"
            elif p.tensor_parallel > 1:
                how = f"tensor parallel {p.tensor_parallel}"
            out.append(Alternative("gpus", f"{n} x {spec.name}{nodes}, nothing else running: {how}",
                                   r.verdict, {"gpu": f"{spec.key}:{n}"}, r.memory.total_bytes,
                                   r.performance.decode_tokens_per_s))
    # 5. a smaller model of the same family, at this quant or the best one that fits
    # largest first; at equal size the same generation (key prefix), then the newest release
    gen = req.model.key.rsplit("-", 1)[0]
    smaller = sorted((m for m in c.family if m.key != req.model.key),
                     key=lambda m: (-_size(m), not m.key.startswith(gen + "-"), -int((m.release or "0").replace("-", "") or 0)))
    for m in smaller:
        if _size(m) >= _size(req.model):
            continue
        r = _fits(dataclasses.replace(req, model=m, context=min(req.context, m.max_context),
                                      weights_bytes_exact=None))
        if r:
            out.append(Alternative("model", f"{m.name} ({m.key}) at {req.quant.key}: {r.verdict}",
                                   r.verdict, {"model": m.key}, r.memory.total_bytes,
                                   r.performance.decode_tokens_per_s))
            break
    return out


def _size(m: ModelSpec) -> int:
    from .params import count_params

    return count_params(m).total
