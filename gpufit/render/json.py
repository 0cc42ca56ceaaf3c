"""The JSON format: the stable schemas of DESIGN.md (gpufit.fit/1, gpufit.snapshot/1, gpufit.report/1)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2)


def fit(res) -> str:
    return _dump(res.to_dict())


def snapshot(snap) -> str:
    return snap.to_json()


def report(rep: dict) -> str:
    return _dump(rep) + "\n"


def rows(items) -> str:
    return _dump(list(items))


def gpus(specs) -> str:
    return _dump([dataclasses.asdict(g) for g in specs])


def models(specs) -> str:
    from ..estimator.params import count_params

    def one(m):
        pc = count_params(m)
        return {**dataclasses.asdict(m), "params": pc.total, "active_params": pc.active}

    return _dump([one(m) for m in specs])


RENDERERS = {"fit": fit, "check": fit, "snapshot": snapshot, "report": report, "recommend": rows,
             "local_models": rows, "gpus": gpus, "models": models}
