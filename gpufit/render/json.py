"""The JSON format: the stable schemas of DESIGN.md (gpufit.fit/1, gpufit.snapshot/1, gpufit.report/1)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .words import alternative, word


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2)


def _message(m) -> dict:
    return {"code": m.code, "message": word(m), "data": dict(m.data)}


def fit_object(res) -> dict:
    """The gpufit.fit/1 object of DESIGN.md (stable keys; absent values null)."""
    from ..estimator.params import count_params

    r = res.request
    m = r.model
    mem = dataclasses.asdict(res.memory)
    mem["total_bytes"] = res.memory.total_bytes
    pc = count_params(m)
    return {
        "schema": "gpufit.fit/1",
        "model": {"key": m.key, "name": m.name, "params": pc.total, "active_params": pc.active,
                  "layers": m.layers, "source": r.weights_source or "catalog"},
        "quant": r.quant.key,
        "kv_dtype": r.kv_dtype.key,
        "context": r.context,
        "batch": r.batch,
        "engine": r.engine_label,
        "verdict": str(res.verdict),
        "memory": mem,
        "devices": [dataclasses.asdict(d) for d in res.devices],
        "placement": {**dataclasses.asdict(res.placement), "strategy": str(res.placement.strategy),
                      "layers_per_device": list(res.placement.layers_per_device)},
        "performance": dataclasses.asdict(res.performance),
        "alternatives": [{**dataclasses.asdict(a), "verdict": str(a.verdict), "summary": alternative(a)}
                         for a in res.alternatives],
        "engine_args": dict(res.engine_args),
        "engine_memory": res.engine_memory.to_dict() if res.engine_memory is not None else None,
        "refusal": None if res.refusal is None else {"code": res.refusal.code, "message": res.refusal.message},
        "warnings": [_message(w) for w in res.warnings],
        "notes": [_message(n) for n in res.notes],
    }


def fit(res) -> str:
    return _dump(fit_object(res))


def snapshot(snap) -> str:
    return snap.to_json()


def report_object(rep) -> dict:
    """The gpufit.report/1 object of DESIGN.md from an app.report.Report (stable keys; absent values null).
    A GPU is its snapshot entry (gpufit.snapshot/1 keys) with catalog_key, status and checks added."""
    from ..probe.snapshot import to_jsonable
    from .words import model_check

    def gpu(g) -> dict:
        return {**to_jsonable(g.gpu), "catalog_key": g.catalog_key, "status": str(g.status),
                "checks": [c.to_dict() for c in g.checks]}

    def model(m) -> dict:
        return {"name": m.name, "quant": m.quant, "context": m.context, "batch": m.batch, "engine": m.engine,
                "kv_dtype": m.kv_dtype, "status": str(m.status),
                "verdict": None if m.verdict is None else str(m.verdict), "needed_bytes": m.needed_bytes,
                "headroom_bytes": m.headroom_bytes, "devices": [dataclasses.asdict(d) for d in m.devices],
                "message": model_check(m), "error": m.error}

    host = {"hostname": rep.hostname} if rep.host is None else {**to_jsonable(rep.host), "hostname": rep.hostname}
    return {
        "schema": rep.schema,
        "host": host,
        "time": rep.time,
        "timestamp": rep.timestamp,
        "duration_s": rep.duration_s,
        "success": rep.success,
        "status": str(rep.status),
        "source": rep.source,
        "config_files": list(rep.config_files),
        "host_checks": [c.to_dict() for c in rep.host_checks],
        "gpus": [gpu(g) for g in rep.gpus],
        "models": [model(m) for m in rep.models],
        "error": rep.error,
    }


def report(rep) -> str:
    return _dump(report_object(rep)) + "\n"


def rows(items) -> str:
    return _dump([i.to_dict() if hasattr(i, "to_dict") else i for i in items])


def gpus(specs) -> str:
    return _dump([dataclasses.asdict(g) for g in specs])


def models(specs) -> str:
    from ..estimator.params import count_params

    def one(m):
        pc = count_params(m)
        return {**dataclasses.asdict(m), "params": pc.total, "active_params": pc.active}

    return _dump([one(m) for m in specs])


def node_object(nf) -> dict:
    """One node of gpufit.fleet/1 (app.fleet.rank.NodeFit)."""
    r, snap = nf.result, nf.view.snapshot
    fits = nf.verdict is not None and nf.verdict.fits
    return {
        "node": nf.view.node,
        "source": nf.view.source,
        "stale": nf.view.stale,
        "gpus": len(snap.gpus) if snap is not None else 0,
        "verdict": None if nf.verdict is None else str(nf.verdict),
        "placement": None if r is None else {**dataclasses.asdict(r.placement), "strategy": str(r.placement.strategy),
                                             "layers_per_device": list(r.placement.layers_per_device)},
        "free_bytes": [] if r is None else [d.free_bytes for d in r.request.devices],
        "decode_tokens_per_s": r.performance.decode_tokens_per_s if r is not None and fits else None,
        "engine_args": {} if r is None else dict(r.engine_args),
        "reason": None if nf.reason is None else word(nf.reason),
    }


def fleet(ans) -> str:
    return _dump(ans.to_dict())


RENDERERS = {"fleet": fleet, "fit": fit, "check": fit, "snapshot": snapshot, "report": report, "recommend": rows,
             "local_models": rows, "gpus": gpus, "models": models}
