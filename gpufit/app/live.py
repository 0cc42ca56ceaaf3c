"""Fit on the box as it is now (or as a snapshot shows it), from the options of `here` / `check` or from
an inference server's own command line (`check -- vllm serve ...`). No click, no printing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ProbeError, UsageError
from ..estimator.types import FitResult

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..probe.snapshot import Snapshot
    from .request import ModelChoice

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, kw_only=True)
class EstimateOptions:
    """The estimate options every fitting command takes, as given (None = not given)."""
    quant: str | None = None
    context: int | None = None
    batch: int | None = None
    kv_dtype: str | None = None
    engine: str = "auto"
    reserve: str = "0"
    gpu_memory_utilization: float | None = None
    ram: str | None = None  # host RAM for CPU offload
    min_headroom_bytes: int | None = None
    revision: str | None = None


@dataclass(frozen=True, kw_only=True)
class LiveOptions(EstimateOptions):
    """`here` / `check`: MODEL or the server's command line after `--` (program first), on GPUs `gpus`."""
    model: str | None = None
    server: tuple[str, ...] = ()
    gpus: str | None = None


@dataclass(frozen=True)
class EnvironmentOptions:
    """What the engine's server would take from its environment, merged with the options given."""
    context: int | None
    kv_dtype: str | None
    gpus: str | None
    batch: int | None
    settings: Mapping[str, Any]
    notes: tuple[str, ...]


def from_environment(choice: ModelChoice, model: str, engine: str, env: Mapping[str, str], *, quant: str | None,
                     context: int | None, kv_dtype: str | None, gpu_memory_utilization: float | None,
                     gpus: str | None, batch: int | None) -> EnvironmentOptions | None:
    """The engine reads its server's environment (Ollama: OLLAMA_*) as the server would; options given
    win where they agree and are refused where they contradict. None: the environment sets nothing."""
    from .. import app
    from ..estimator import engines

    implied = engine if engine != "auto" else (choice.implied_engine or "auto")
    if implied == "auto":
        return None
    cmd = engines.get(implied).environment_command(choice.ollama_tag or model, env)
    if cmd is None:
        return None
    opts = app.merge_server_options(cmd, quant=quant, context=context, kv_dtype=kv_dtype,
                                    gpu_memory_utilization=gpu_memory_utilization, gpus=gpus)
    return EnvironmentOptions(
        context=opts["context"], kv_dtype=opts["kv_dtype"], gpus=opts["gpus"],
        batch=batch if batch is not None else cmd.batch,
        settings={k: v for k, v in cmd.settings.items() if k != "ollama_tag"},
        notes=("from the environment: " + " ".join(cmd.environment), *cmd.notes))


def parse_env(values: Iterable[str]) -> dict[str, str]:
    """`--env KEY=VALUE` (repeatable): the server's environment as it will start. A malformed one is a
    usage error naming it."""
    out: dict[str, str] = {}
    for v in values:
        key, eq, value = v.partition("=")
        if not eq or not _ENV_KEY.match(key):
            raise UsageError(f"--env {v!r}: write KEY=VALUE, e.g. --env OLLAMA_NUM_PARALLEL=4")
        out[key] = value
    return out


def load_or_probe(snapshot_path: str | None) -> Snapshot:
    """The snapshot at `snapshot_path`, else a probe of this box now."""
    from ..probe import load_snapshot, take_snapshot

    if snapshot_path is not None:
        return load_snapshot(snapshot_path)
    return take_snapshot()


def fit_live(o: LiveOptions, *, snapshot_path: str | None = None, env: Mapping[str, str] | None = None,
             alternatives: bool = True, snapshot: Snapshot | None = None,
             catalog: Catalog | None = None) -> FitResult:
    """The verdict for the options on this box now, on `snapshot_path`'s box, or on `snapshot`.
    `env` is the environment the server would start in (CUDA_VISIBLE_DEVICES, OLLAMA_*)."""
    from .. import app
    from ..catalog import load_catalog
    from .devices import select_devices_noted

    env = os.environ if env is None else env
    catalog = catalog or load_catalog()
    model, server = o.model, o.server
    quant, context, batch, kv_dtype, engine, gpus, util = (o.quant, o.context, o.batch, o.kv_dtype, o.engine,
                                                           o.gpus, o.gpu_memory_utilization)
    reserve, ram, min_headroom = o.reserve, o.ram, o.min_headroom_bytes
    settings: dict[str, Any] = {}
    extra_notes: list[str] = []
    batch_given = batch is not None

    if server:
        eng, cmd = app.server_command(server, env)
        if engine not in ("auto", eng.key) and not engine.startswith(eng.key + "@"):
            raise UsageError(f"--engine {engine} contradicts the server command ({eng.key})")
        opts = app.merge_server_options(cmd, quant=quant, context=context, kv_dtype=kv_dtype,
                                        gpu_memory_utilization=util, gpus=gpus)
        quant, context, kv_dtype, util = (opts["quant"], opts["context"], opts["kv_dtype"],
                                          opts["gpu_memory_utilization"])
        if gpus is None and opts["gpus"] != env.get("CUDA_VISIBLE_DEVICES"):
            gpus = opts["gpus"]  # a GPU choice of the command line itself; the server's CUDA_VISIBLE_DEVICES
            # is this shell's, applied below by CUDA's rules to the live probe only
        engine = engine if engine != "auto" else eng.name
        settings = dict(cmd.settings)
        if cmd.model is None:  # each engine's parser refuses a command line without a model
            raise UsageError(f"check --: {' '.join(server)}: the command line names no model")
        model = cmd.model
        extra_notes.append(f"plan from the server's command line: {' '.join(server)}")
        extra_notes.extend(cmd.notes)
        if batch is None and cmd.batch:
            batch = cmd.batch
        if cmd.ignored:
            extra_notes.append("flags that do not change memory: " + " ".join(cmd.ignored))
        if cmd.unknown:
            extra_notes.append("flags gpufit does not read (assumed not to change memory): " + " ".join(cmd.unknown))
        choice = app.resolve_checkpoint(model, catalog)
        if context is None and cmd.default_context is not None:  # 0: the model's maximum
            context = min(cmd.default_context or choice.spec.max_context, choice.spec.max_context)
    else:
        if model is None:  # the CLI asks for one of the two before this
            raise UsageError("give MODEL, or the server's command line after --: gpufit check -- vllm serve MODEL")
        choice = app.resolve_model(model, catalog, o.revision, engine=engine)  # a bad model name fails before the probe runs
        ev = from_environment(choice, model, engine, env, quant=quant, context=context, kv_dtype=kv_dtype,
                              gpu_memory_utilization=util, gpus=gpus, batch=batch)
        if ev is not None:
            context, kv_dtype, gpus, batch, settings = ev.context, ev.kv_dtype, ev.gpus, ev.batch, dict(ev.settings)
            extra_notes.extend(ev.notes)
    try:
        snap = snapshot if snapshot is not None else load_or_probe(snapshot_path)
    except ProbeError as e:
        raise ProbeError(f"{e} To estimate on hardware that is not here: gpufit plan {model} --gpu rtx-4090 "
                         "(see `gpufit gpus`), or --snapshot FILE from `gpufit probe --save` / `nvidia-smi -q -x` "
                         "on that box.") from None
    # CUDA_VISIBLE_DEVICES is this shell's: it filters the live probe, never a snapshot of another box
    sel = select_devices_noted(snap, catalog, gpus, env if snap.source == "nvml" else {})
    devices = sel.devices
    req, notes = app.build_request(
        choice, devices, catalog, quant=quant, context=context, batch=1 if batch is None else batch, kv_dtype=kv_dtype,
        engine=engine, reserve_bytes=app.parse_size(reserve, "--reserve"),
        gpu_memory_utilization=util, min_headroom_bytes=min_headroom,
        host_ram_available_bytes=app.parse_size(ram, "--ram") if ram is not None else snap.host.ram_available_bytes,
        engine_settings=settings, model_path=model if server and os.path.exists(os.path.expanduser(model)) else None,
        batch_given=batch_given,
    )
    notes += extra_notes
    if snapshot_path is not None:
        notes.append(f"GPUs from {snapshot_path} (taken {snap.host.taken_at or 'at an unknown time'})")
    notes.extend(sel.notes)
    return app.run_estimate(req, notes, catalog, alternatives=alternatives)
