"""`gpufit plan`: fit on catalog cards, nothing probed. The server's environment is only what `--env`
gives (this shell's is not the target box's). No click, no printing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..estimator.types import FitResult

if TYPE_CHECKING:
    from ..catalog import Catalog


@dataclass(frozen=True)
class PlanOptions:
    """The estimate options of `plan`, as given (None = not given)."""
    model: str
    gpus: tuple[str, ...]  # catalog keys, KEY or KEY:COUNT
    quant: str | None = None
    context: int | None = None
    batch: int | None = None
    kv_dtype: str | None = None
    engine: str = "auto"
    reserve: str = "0"
    gpu_memory_utilization: float | None = None
    min_headroom_bytes: int | None = None
    ram: str | None = None  # host RAM for CPU offload; None = unknown
    revision: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # the server's environment (--env)


def fit_plan(o: PlanOptions, *, catalog: Catalog | None = None, alternatives: bool = True) -> FitResult:
    """The verdict for the options on catalog cards, each card's whole memory counted as free."""
    from .. import app
    from ..catalog import load_catalog
    from ..estimator.types import devices_from_specs
    from .live import from_environment

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
