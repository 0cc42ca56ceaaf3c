"""Output formats: the only place that formats units (GiB, GB, tokens/s) for people or machines.

FORMATS is the registry: a format is one module with a RENDERERS table (the kinds of result it can
render -> a function of that result returning a string). Adding a format is one module and one line
here; a command whose result needs a new kind adds one function to each format that renders it.

Kinds: fit (FitResult), check (FitResult, one line), snapshot (Snapshot), report (app.report.Report, the
gpufit.report/1 object), recommend (rows), models / gpus / local_models (listings), fleet (app.fleet.FleetAnswer).
"""

from __future__ import annotations

import importlib
from typing import Any

FORMATS = {
    "text": "gpufit.render.text",
    "json": "gpufit.render.json",
    "prometheus": "gpufit.render.prometheus",
}
# what each format renders, without importing it (a test checks this against each module's RENDERERS)
KINDS = {
    "text": frozenset({"fit", "check", "snapshot", "report", "recommend", "models", "gpus", "local_models", "fleet"}),
    "json": frozenset({"fit", "check", "snapshot", "report", "recommend", "models", "gpus", "local_models", "fleet"}),
    "prometheus": frozenset({"report"}),
}


def formats_for(kind: str) -> tuple[str, ...]:
    """The formats that can render `kind` (report: text, json, prometheus)."""
    return tuple(f for f in FORMATS if kind in KINDS[f])


def render(kind: str, obj: Any, fmt: str = "text", **kw: Any) -> str:
    """`obj` (a result of `kind`) in output format `fmt`."""
    from ..errors import UsageError, unknown

    if fmt not in FORMATS:
        raise unknown("output format", fmt, FORMATS)
    table = importlib.import_module(FORMATS[fmt]).RENDERERS
    if kind not in table:
        raise UsageError(f"{kind} has no {fmt} output; formats: {', '.join(formats_for(kind))}")
    return table[kind](obj, **kw)
