"""gpufit: does this model fit on the GPUs in this box right now?

The public Python API is this module's `__all__`; everything else is internal and may change.

    import gpufit
    snap = gpufit.snapshot()                      # this box now (NVML); or gpufit.load_snapshot("box.json")
    res = gpufit.fit("llama3-8b", snap, engine="vllm", context=32768)
    res.verdict, res.engine_memory.kv_pool_tokens, res.engine_args["vllm"]
    res = gpufit.plan("llama3.1-70b", ["h100-sxm:2"], quant="fp8")   # catalog cards, nothing probed
    gpufit.recommend(snap, top=5)

Each returns typed, frozen results (`FitResult`, `Snapshot`); `FitResult.to_dict()` is the
`gpufit.fit/1` JSON object the CLI prints. Errors are `GpufitError` subclasses with an `exit_code`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["snapshot", "load_snapshot", "load_catalog", "fit", "plan", "recommend", "GpufitError",
           "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .catalog import Catalog
    from .estimator.types import FitResult
    from .app.recommend import Recommendation
    from .probe.snapshot import Snapshot


def __getattr__(name: str) -> Any:
    # the error base class without importing anything heavy at `import gpufit`
    if name == "GpufitError":
        from .errors import GpufitError

        return GpufitError
    raise AttributeError(f"module 'gpufit' has no attribute {name!r}")


def snapshot(timeout_s: float = 10.0) -> "Snapshot":
    """Probe this machine's GPUs now through NVML (ProbeError when there is no driver or GPU)."""
    from .probe import take_snapshot

    return take_snapshot(timeout_s=timeout_s)


def load_snapshot(path) -> "Snapshot":
    """A saved `gpufit probe --save` file or an `nvidia-smi -q -x` / `--query-gpu` capture."""
    from .probe import load_snapshot as _load

    return _load(path)


def load_catalog() -> "Catalog":
    """The built-in catalog of GPUs, models and quantization formats."""
    from .catalog import load_catalog as _load

    return _load()


def fit(model: str, snap: "Snapshot | None" = None, *, gpus: str | None = None, quant: str | None = None,
        context: int | None = None, batch: int = 1, kv_dtype: str | None = None, engine: str = "auto",
        reserve_bytes: int = 0, gpu_memory_utilization: float | None = None,
        alternatives: bool = True) -> "FitResult":
    """The verdict for `model` on the GPUs of `snap` (default: probe this box now), as `gpufit here` gives
    it. `gpus` selects GPUs ("0,2" or UUIDs) as `--gpus` does."""
    from . import app
    from .app.devices import select_devices

    catalog = load_catalog()
    snap = snapshot() if snap is None else snap
    devices = select_devices(snap, catalog, gpus, {})
    req, notes = app.build_request(app.resolve_model(model, catalog), devices, catalog, quant=quant, context=context,
                                   batch=batch, kv_dtype=kv_dtype, engine=engine, reserve_bytes=reserve_bytes,
                                   gpu_memory_utilization=gpu_memory_utilization,
                                   host_ram_available_bytes=snap.host.ram_available_bytes)
    return app.run_estimate(req, notes, catalog, alternatives=alternatives)


def plan(model: str, gpus: list[str], *, quant: str | None = None, context: int | None = None,
         batch: int | None = None,
         kv_dtype: str | None = None, engine: str = "auto", ram_bytes: int | None = None,
         gpu_memory_utilization: float | None = None, alternatives: bool = True) -> "FitResult":
    """The verdict on catalog cards (`["rtx-4090", "rtx-3060"]`, `["h100-sxm:8"]`), nothing probed, as
    `gpufit plan` gives it. `batch` None is one sequence, as `--batch` not given is."""
    from .app.plan import PlanOptions, fit_plan

    return fit_plan(PlanOptions(model=model, gpus=tuple(gpus), quant=quant, context=context, batch=batch,
                                kv_dtype=kv_dtype, engine=engine, gpu_memory_utilization=gpu_memory_utilization,
                                ram=None if ram_bytes is None else str(ram_bytes)),
                    alternatives=alternatives)


def recommend(snap: "Snapshot | None" = None, *, gpus: list[str] | None = None, context: int = 8192,
              engine: str = "auto", top: int = 10) -> "list[Recommendation]":
    """Which catalog models fit (on `snap`, or on catalog cards `gpus`), each at its best quantization,
    largest first, as `gpufit recommend` ranks them."""
    from . import app
    from .app.devices import select_devices
    from .estimator.types import devices_from_specs
    from .app.recommend import recommend as _recommend

    catalog = load_catalog()
    if gpus:
        devices, ram, planning = devices_from_specs(app.parse_gpu_option(gpus, catalog)), None, True
    else:
        snap = snapshot() if snap is None else snap
        devices, ram, planning = select_devices(snap, catalog, None, {}), snap.host.ram_available_bytes, False
    return _recommend(catalog, devices, context=context, engine=engine, host_ram=ram, planning=planning)[:top]
