"""The estimate: FitRequest -> FitResult (verdict, memory, placement, speed, alternatives)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from ..units import GIB
from . import engines
from .placement import Plan, Sizer, choose, least_true, usable
from .speed import estimate_speed
from .types import (
    DeviceUse,
    Message,
    FitRequest,
    FitResult,
    MemoryBreakdown,
    Performance,
    Placement,
    Strategy,
    Verdict,
)

if TYPE_CHECKING:  # pragma: no cover
    from .alternatives import Candidates

# "tight": fits, but a used card keeps less than max(1 GiB, 5 % of the card) free (DESIGN.md)
MIN_HEADROOM_FLOOR = 1 * GIB
MIN_HEADROOM_FRACTION = 0.05


def min_headroom(req: FitRequest, total_bytes: int) -> int:
    if req.min_headroom_bytes is not None:
        return req.min_headroom_bytes
    return max(MIN_HEADROOM_FLOOR, int(total_bytes * MIN_HEADROOM_FRACTION))


def _verdict(req: FitRequest, plan: Plan) -> Verdict:
    if not plan.fits:
        return Verdict.NO_FIT
    if plan.cpu_layers or plan.head_on_host:
        return Verdict.OFFLOAD
    for dp in plan.used:
        if usable(dp.device, req) - dp.needed < min_headroom(req, dp.device.total_bytes):
            return Verdict.TIGHT
    return Verdict.FITS


def _fits(req: FitRequest) -> bool:
    from .placement import starts

    p = choose(req)
    return not (p.cpu_layers or p.head_on_host) and starts(Sizer(req), p)


def _largest(req: FitRequest, field: Literal["context", "batch"], hi: int) -> int | None:
    """Largest value of `field` in [1, hi] that fits on the GPUs (fitting shrinks as it grows), by
    bisection; None when even 1 does not fit."""
    def ok(v: int) -> bool:
        if field == "context":
            return _fits(dataclasses.replace(req, context=v))
        return _fits(dataclasses.replace(req, batch=v))

    if not ok(1):
        return None
    if ok(hi):
        return hi
    return least_true(lambda v: not ok(v), 1, hi) - 1


def max_context(req: FitRequest) -> int | None:
    """Largest context (<= the model's max) that fits at this batch."""
    return _largest(req, "context", req.model.max_context)


# largest batch searched for; beyond it the answer is given as this figure
MAX_BATCH_SEARCHED = 4096


def max_batch(req: FitRequest) -> int | None:
    """Largest number of concurrent sequences of `context` tokens that fit."""
    return _largest(req, "batch", MAX_BATCH_SEARCHED)


def _breakdown(s: Sizer, plan: Plan) -> MemoryBreakdown:
    """The whole model's memory: weights (GPU + host), KV for all layers, activation and overhead per
    used GPU (one engine process per device)."""
    req = s.req
    n_used = max(1, len(plan.used))
    weights = s.ws.total(s.m.layers)
    if req.weights_bytes_exact is not None:
        weights = req.weights_bytes_exact
    kv = sum(dp.kv for dp in plan.used) if plan.tp > 1 else s.kv(s.m.layers)
    act = sum(dp.activation for dp in plan.used) if plan.used else s.activation()
    over = sum(dp.overhead for dp in plan.used) if plan.used else s.overhead * n_used
    return MemoryBreakdown(weights_bytes=weights, kv_cache_bytes=kv, activation_bytes=act, overhead_bytes=over)


def engine_args(result: FitResult) -> dict[str, str]:
    """The command line that realises the plan on its engine, and on every other engine that runs the
    format where the placement means the same there (one GPU); a multi-GPU plan is one engine's own
    (vLLM's tensor parallelism is no llama.cpp split), so only that engine's line is printed."""
    if result.verdict == Verdict.NO_FIT:
        return {}
    r = result.request
    one_gpu = sum(1 for d in result.devices if d.needed_bytes) <= 1 and result.placement.strategy != Strategy.CPU_OFFLOAD
    out: dict[str, str] = {}
    for eng in engines.all_engines():
        if eng.key != r.engine and not one_gpu:
            continue
        line = eng.flags(result)
        if line:
            out[eng.key] = line
    return out


def estimate(req: FitRequest, alternatives: bool = True,
             candidates: Candidates | Callable[[], Candidates] | None = None, limits: bool = True) -> FitResult:
    """Estimate one request. `candidates` (alternatives.Candidates, or a function returning them, called
    only when the verdict is not a clean fit) lets the result say what would fit
    instead; it is pure data (other quants, models of the family, reference GPUs). `limits=False` skips
    the largest-context / largest-batch searches (performance.max_context / max_batch stay None): they
    are most of an estimate's time and `fleet` does not show them."""
    s = Sizer(req)
    plan = choose(req)
    verdict = _verdict(req, plan)
    uses = []
    for dp in plan.devices:
        u = usable(dp.device, req)
        uses.append(DeviceUse(
            index=dp.device.index, uuid=dp.device.uuid, name=dp.device.name,
            catalog_key=dp.device.catalog_key, total_bytes=dp.device.total_bytes,
            free_bytes=dp.device.free_bytes, needed_bytes=dp.needed,
            headroom_bytes=u - dp.needed, layers=dp.layers, reserved_bytes=dp.device.reserved_bytes,
            parent=dp.device.parent,
        ))
    # devices not in the plan are listed too (unused), so the JSON shows the whole selection
    planned = {dp.device.index for dp in plan.devices}
    for d in req.devices:
        if d.index not in planned:
            uses.append(DeviceUse(index=d.index, uuid=d.uuid, name=d.name, catalog_key=d.catalog_key,
                                  total_bytes=d.total_bytes, free_bytes=d.free_bytes, needed_bytes=0,
                                  headroom_bytes=usable(d, req), layers=0, reserved_bytes=d.reserved_bytes,
                                  parent=d.parent))
    placement = Placement(
        strategy=plan.strategy, tensor_parallel=plan.tp, pipeline_parallel=plan.pp,
        layers_per_device=tuple(dp.layers for dp in plan.devices),
        gpu_layers=plan.gpu_layers, cpu_bytes=plan.cpu_bytes + plan.host_bytes,
    )
    em = s.engine.startup(req, plan) if plan.used else None
    refusal = em.refusal if em is not None else plan.refusal
    if refusal is not None:
        verdict = Verdict.NO_FIT
    decode, prefill, basis = estimate_speed(s, plan, req.batch, req.host_bandwidth_gbps)
    if verdict == Verdict.NO_FIT:
        decode = prefill = None
        basis = {"method": basis["method"], "note": "no speed: the model does not fit"}
    elif (why := s.engine.speed_unknown(req)) is not None:
        decode = prefill = None
        basis = {"method": basis["method"], "note": f"no speed: {why}"}
    ok = verdict in (Verdict.FITS, Verdict.TIGHT)
    largest_ctx: int | None
    largest_batch: int | None
    if not limits:
        largest_ctx = largest_batch = None
    elif ok and em is not None and em.max_model_len_fit is not None:
        # the engine's own figures: vLLM's estimated maximum model length and maximum concurrency
        largest_ctx = min(req.model.max_context, em.max_model_len_fit)
        largest_batch = max(1, int(em.max_concurrency)) if em.max_concurrency is not None else max_batch(req)
    else:
        largest_ctx = max_context(req) if ok else None
        largest_batch = max_batch(req) if ok else None
    perf = Performance(
        decode_tokens_per_s=round(decode, 1) if decode else None,
        prefill_tokens_per_s=round(prefill, 1) if prefill else None,
        max_context=largest_ctx,
        max_batch=largest_batch,
        basis=basis,
    )
    warnings: list[Message] = []
    if refusal is not None:
        warnings.append(Message("engine_refuses", {"engine": s.engine.name, "refusal": refusal.code},
                                text=refusal.message))
    elif plan.reasons and verdict == Verdict.NO_FIT:
        warnings.extend(plan.reasons)
    cc_need = req.quant.min_compute_capability
    if cc_need:
        old = sorted({d.device.spec.compute_capability for d in plan.used if d.device.spec
                      and float(d.device.spec.compute_capability) < float(cc_need)})
        if old:
            warnings.append(Message("native_kernels_missing", {"quant": req.quant.key, "need": cc_need, "have": old}))
    mig = [d for d in req.devices if d.mig_profile or d.parent is not None]
    if verdict == Verdict.NO_FIT and len(mig) > 1:
        big = max(mig, key=lambda d: d.free_bytes)
        warnings.append(Message("mig_one_at_a_time", {"gpu": big.index, "profile": big.mig_profile,
                                                      "free_bytes": big.free_bytes}))
    if refusal is None and req.quant.key not in ("fp32",) and req.engine not in req.quant.engines:
        warnings.append(Message("engine_cannot_run_quant", {"engine": req.engine, "quant": req.quant.key,
                                                            "engines": list(req.quant.engines)}))
    if req.context > req.model.max_context:
        warnings.append(Message("context_over_max", {"context": req.context, "max_context": req.model.max_context,
                                                     "model": req.model.name}))
    for dp in plan.used:
        if dp.device.spec is None:
            warnings.append(Message("gpu_not_in_catalog", {"gpu": dp.device.index, "name": dp.device.name}))
    result = FitResult(
        request=req, verdict=verdict, memory=_breakdown(s, plan), devices=tuple(uses),
        placement=placement, performance=perf, warnings=tuple(warnings),
        notes=tuple(n if isinstance(n, Message) else Message("engine_default", {"engine": s.engine.name}, text=n)
                    for n in s.engine.notes(req)),
        engine_memory=em, refusal=refusal,
    )
    result = dataclasses.replace(result, engine_args=engine_args(result))
    if alternatives and candidates is not None and verdict != Verdict.FITS:
        if callable(candidates):
            candidates = candidates()
        from .alternatives import find_alternatives

        result = dataclasses.replace(result, alternatives=tuple(find_alternatives(result, candidates)))
    return result
