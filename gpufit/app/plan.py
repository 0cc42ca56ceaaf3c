"""`gpufit plan`: fit on catalog cards, nothing probed. The server's environment is only what `--env`
gives (this shell's is not the target box's). No click, no printing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..estimator.types import FitResult
from .live import EstimateOptions, from_environment

if TYPE_CHECKING:
    from ..catalog import Catalog


@dataclass(frozen=True, kw_only=True)
class PlanOptions(EstimateOptions):
    """`plan`: MODEL on catalog cards `gpus` (KEY or KEY:COUNT); `ram` None is unknown host RAM."""
    model: str
    gpus: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # the server's environment (--env)


def fit_plan(o: PlanOptions, *, catalog: Catalog | None = None, alternatives: bool = True) -> FitResult:
    """The verdict for the options on catalog cards, each card's whole memory counted as free."""
    from .. import app
    from ..catalog import load_catalog
    from ..estimator.types import devices_from_specs

    catalog = catalog or load_catalog()
    choice = app.resolve_model(o.model, catalog, o.revision, engine=o.engine)
    devices = devices_from_specs(app.parse_gpu_option(o.gpus, catalog))
    context, kv_dtype, batch = o.context, o.kv_dtype, o.batch
    settings: dict[str, Any] = {}
    said: list[str] = []
    ev = from_environment(choice, o.model, o.engine, o.env, quant=o.quant, context=context, kv_dtype=kv_dtype,
                          gpu_memory_utilization=o.gpu_memory_utilization, gpus=None, batch=batch)
    if ev is not None:
        context, kv_dtype, batch, settings = ev.context, ev.kv_dtype, ev.batch, dict(ev.settings)
        said.extend(ev.notes)
    req, notes = app.build_request(
        choice, devices, catalog, quant=o.quant, context=context, batch=1 if batch is None else batch,
        kv_dtype=kv_dtype, engine=o.engine, reserve_bytes=app.parse_size(o.reserve, "--reserve"),
        gpu_memory_utilization=o.gpu_memory_utilization, batch_given=o.batch is not None,
        min_headroom_bytes=o.min_headroom_bytes,
        host_ram_available_bytes=app.parse_size(o.ram, "--ram") if o.ram is not None else None, planning=True,
        engine_settings=settings)
    notes += said
    notes.append("planning on catalog hardware: each card's whole memory counted as free")
    return app.run_estimate(req, notes, catalog, alternatives=alternatives)
