"""The app layer: turns command-line values into a FitRequest, runs the estimate, adds the notes that
say which defaults were taken. No click here (cli.py renders and exits); no pynvml (probe does)."""

from __future__ import annotations

import dataclasses
import re

from .catalog import Catalog, load_catalog
from .catalog.types import GpuSpec, ModelSpec
from .errors import UsageError, unknown
from .estimator.engines import ENGINES, default_engine
from .estimator.types import Device, FitRequest, FitResult

GIB = 1 << 30
DEFAULT_CONTEXT_CAP = 8192  # default context = min(8192, the model's max) (DESIGN.md)
# cards to count in "N of these would do" besides the selected one
REFERENCE_GPUS = ("h100-sxm",)

SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "ki": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "mi": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30, "t": 10**12,
          "tb": 10**12, "tib": 2**40, "ti": 2**40}


def parse_size(text: str, option: str) -> int:
    """'2GiB' / '1.5 GB' / '512MiB' / '1073741824' -> bytes. Bare numbers are bytes."""
    m = SIZE_RE.match(str(text))
    if not m:
        raise UsageError(f"{option}: cannot read size {text!r}; write e.g. 2GiB, 1.5GB or 512MiB")
    n = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    return int(n)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A resolved MODEL argument: the architecture and, for a model file, its exact bytes."""
    spec: ModelSpec
    weights_bytes_exact: int | None = None
    weights_source: str | None = None
    file_quant: str | None = None  # quant the file is stored in (a .gguf's file type, a checkpoint's)
    notes: tuple[str, ...] = ()  # what reading the file assumed or left out


def resolve_model(arg: str, catalog: Catalog) -> ModelChoice:
    """A catalog key / alias / HF repo id, or a local model folder / .gguf file (exact bytes)."""
    import os

    if os.path.exists(os.path.expanduser(arg)):  # the model-file readers load only for a real path
        from . import modelfile

        if modelfile.is_model_path(arg):
            mf = modelfile.load_model_file(arg)
            return ModelChoice(mf.spec, mf.weights_bytes, mf.weights_source, mf.quant, mf.notes)
        if not catalog.has_model(arg):
            raise UsageError(f"{arg!r} is a file but not a model: give a model folder (config.json + "
                             "*.safetensors), a .gguf or .safetensors file, or a catalog name")
    return ModelChoice(catalog.model(arg))


def parse_gpu_option(values, catalog: Catalog) -> list[tuple[GpuSpec, int]]:
    """--gpu KEY[:COUNT], repeatable."""
    out = []
    for v in values:
        key, _, count = v.partition(":")
        n = 1
        if count:
            if not count.isdigit() or int(count) < 1:
                raise UsageError(f"--gpu {v}: COUNT must be a whole number >= 1")
            n = int(count)
        out.append((catalog.gpu(key), n))
    return out


def plan_devices(items: list[tuple[GpuSpec, int]]) -> tuple[Device, ...]:
    """Catalog hardware, nothing running on it: free = total. (Kept out of devices.py's import, which
    pulls in the probe: `plan` never probes.)"""
    from .estimator.types import devices_from_specs

    return devices_from_specs(items)


def _file_quant(model: ModelChoice, catalog: Catalog):
    """The catalog format a model file is stored in; a GGUF file type the catalog lacks gets its bits
    from the file itself (exact bytes x 8 / parameters), so nothing is guessed."""
    from .catalog.types import QuantFormat
    from .estimator.params import count_params

    key = model.file_quant
    try:
        return catalog.quant(key)
    except UsageError:
        params = count_params(model.spec).total
        bits = model.weights_bytes_exact * 8 / params if model.weights_bytes_exact and params else 16.0
        gguf = model.spec.source.endswith(".gguf")
        return QuantFormat(key=key, name=f"{key} (from the model file)", kind="gguf" if gguf else "int",
                           bits_per_weight=bits, source=model.spec.source,
                           engines=("llama.cpp", "ollama") if gguf else ("vllm", "transformers"))


def build_request(model: ModelChoice, devices: tuple[Device, ...], catalog: Catalog, *,
                  quant: str | None = None, context: int | None = None, batch: int = 1,
                  kv_dtype: str | None = None, engine: str = "auto", reserve_bytes: int = 0,
                  gpu_memory_utilization: float | None = None, min_headroom_bytes: int | None = None,
                  host_ram_available_bytes: int | None = None, planning: bool = False
                  ) -> tuple[FitRequest, list[str]]:
    """Validate options, apply the defaults of DESIGN.md, and say which were taken (notes)."""
    m = model.spec
    notes: list[str] = []
    notes.extend(model.notes)
    if quant is None:
        qkey = model.file_quant or m.native_dtype
        notes.append(f"quant {qkey}: " + ("the model file's format" if model.file_quant
                                          else "the model's native dtype (default; --quant to change)"))
        q = _file_quant(model, catalog) if model.file_quant else catalog.quant(qkey)
    else:
        q = catalog.quant(quant)
        if model.file_quant and q.key != model.file_quant:
            raise UsageError(f"--quant {quant}: the model file is stored as {model.file_quant}; "
                             "exact bytes come from the file, so its format is the one that loads")
    if engine == "auto":
        eng = default_engine(q.kind)
        notes.append(f"engine {eng}: " + ("llama.cpp for GGUF types" if eng == "llama.cpp" else "vLLM for non-GGUF formats")
                     + " (default; --engine to change)")
    elif engine not in ENGINES:
        raise unknown("engine", engine, ENGINES)
    else:
        eng = engine
    if eng not in q.engines:
        raise UsageError(f"--quant {q.key} does not run on {eng}; engines that run it: {', '.join(q.engines)}")
    if context is None:
        context = min(DEFAULT_CONTEXT_CAP, m.max_context)
        notes.append(f"context {context}: min(8192, the model's maximum {m.max_context}) (default; --context to change)")
    if context < 1:
        raise UsageError(f"--context must be at least 1 token, got {context}")
    if context > m.max_context:
        raise UsageError(f"--context {context} exceeds {m.name}'s maximum context of {m.max_context} tokens")
    if batch < 1:
        raise UsageError(f"--batch must be at least 1 sequence, got {batch}")
    if kv_dtype is None:
        kvk = "fp16" if (eng in ("llama.cpp", "ollama") or m.native_dtype == "fp16") else "bf16"
        notes.append(f"kv-dtype {kvk} (default; --kv-dtype to change)")
        kv = catalog.kv_dtype(kvk)
    else:
        kv = catalog.kv_dtype(kv_dtype)
        takes = kv.kv_engines or kv.engines
        if eng not in takes:
            raise UsageError(f"--kv-dtype {kv.key}: {eng} has no such KV cache; engines that do: {', '.join(takes)}")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise UsageError(f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}")
    if reserve_bytes < 0:
        raise UsageError("--reserve cannot be negative")
    if batch > 1:
        notes.append(f"batch {batch}: {batch} concurrent sequences of {context} tokens each")
    req = FitRequest(
        model=m, quant=q, kv_dtype=kv, context=context, batch=batch, engine=eng, devices=devices,
        host_ram_available_bytes=host_ram_available_bytes, reserve_bytes=reserve_bytes,
        gpu_memory_utilization=gpu_memory_utilization, min_headroom_bytes=min_headroom_bytes,
        weights_bytes_exact=model.weights_bytes_exact, weights_source=model.weights_source,
        planning=planning,
    )
    return req, notes


def candidates_for(req: FitRequest, catalog: Catalog):
    from .estimator.alternatives import Candidates

    refs = tuple(catalog.gpus[k] for k in REFERENCE_GPUS if k in catalog.gpus)
    family = tuple(catalog.family_models(req.model.family)) if req.weights_bytes_exact is None else ()
    return Candidates(quants=tuple(catalog.quants.values()), family=family, reference_gpus=refs)


def run_estimate(req: FitRequest, notes: list[str], catalog: Catalog, alternatives: bool = True,
                 limits: bool = True) -> FitResult:
    from .estimator.fit import estimate

    res = estimate(req, alternatives=alternatives, candidates=lambda: candidates_for(req, catalog),
                   limits=limits)
    return dataclasses.replace(res, notes=tuple(notes) + res.notes)


def fit_on_snapshot(model: str, snapshot, *, quant: str | None = None, context: int | None = None,
                    batch: int = 1, kv_dtype: str | None = None, engine: str = "auto",
                    gpus: str | None = None, reserve_bytes: int = 0, catalog: Catalog | None = None,
                    env=None, alternatives: bool = False) -> FitResult:
    """The verdict for `model` on the box a snapshot describes (used by `here`, `check`, `report`)."""
    import os

    from .devices import select_devices

    catalog = catalog or load_catalog()
    devices = select_devices(snapshot, catalog, gpus, os.environ if env is None else env)
    choice = resolve_model(model, catalog)
    req, notes = build_request(choice, devices, catalog, quant=quant, context=context, batch=batch,
                               kv_dtype=kv_dtype, engine=engine, reserve_bytes=reserve_bytes,
                               host_ram_available_bytes=snapshot.host.ram_available_bytes)
    return run_estimate(req, notes, catalog, alternatives=alternatives)
