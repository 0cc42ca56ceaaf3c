"""The app layer: turns command-line values into a FitRequest, runs the estimate, adds the notes that
say which defaults were taken. No click here (cli.py renders and exits); no pynvml (probe does)."""

from __future__ import annotations

import dataclasses
import os
import re

from .catalog import Catalog, load_catalog
from .catalog.types import GpuSpec, ModelSpec
from .errors import UsageError, unknown
from .estimator import engines as engine_registry
from .estimator.engines import default_engine
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
        runs = tuple(e.key for e in engine_registry.all_engines() if e.runs_gguf == gguf)
        return QuantFormat(key=key, name=f"{key} (from the model file)", kind="gguf" if gguf else "int",
                           bits_per_weight=bits, source=model.spec.source, engines=runs)


def build_request(model: ModelChoice, devices: tuple[Device, ...], catalog: Catalog, *,
                  quant: str | None = None, context: int | None = None, batch: int = 1,
                  kv_dtype: str | None = None, engine: str = "auto", reserve_bytes: int = 0,
                  gpu_memory_utilization: float | None = None, min_headroom_bytes: int | None = None,
                  host_ram_available_bytes: int | None = None, planning: bool = False,
                  engine_settings: dict | None = None, model_path: str | None = None,
                  batch_given: bool | None = None) -> tuple[FitRequest, list[str]]:
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
    version = None
    if engine == "auto":
        eng = default_engine(q.kind)
        notes.append(f"engine {eng}: the default for {'GGUF types' if q.kind == 'gguf' else 'non-GGUF formats'}"
                     " (default; --engine to change)")
    else:
        eng, version = engine_registry.split_name(engine)
        if eng not in engine_registry.ENGINES:
            raise unknown("engine", eng, engine_registry.ENGINES)
    engine_obj = engine_registry.get(eng, version)  # an unknown version family is a usage error here
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
        kvk = engine_obj.default_kv_dtype(m)
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
        planning=planning, engine_version=engine_obj.version, engine_settings=dict(engine_settings or {}),
        model_path=model_path, batch_given=batch > 1 if batch_given is None else batch_given,
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


# ---- a server's own command line (`gpufit check -- vllm serve ...`) --------------------------------
# checkpoint names that carry their storage format: "Qwen/Qwen3-235B-A22B-FP8" is Qwen3-235B-A22B in fp8
_CHECKPOINT_SUFFIXES = (
    (re.compile(r"[-_](fp8(?:[-_]dynamic)?|fp8[-_]block)$", re.I), "fp8"),
    (re.compile(r"[-_]awq$", re.I), "awq"),
    (re.compile(r"[-_]gptq(?:[-_]int4)?$", re.I), "gptq"),
    (re.compile(r"[-_](?:w8a8|int8)$", re.I), "int8"),
    (re.compile(r"[-_](?:bnb[-_]4bit|nf4)$", re.I), "nf4"),
    (re.compile(r"[-_]mxfp4$", re.I), "mxfp4"),
)


def resolve_checkpoint(arg: str, catalog: Catalog) -> ModelChoice:
    """A model name as a server gets it: a catalog name, a local path, or a checkpoint id whose suffix
    names its format (-FP8, -AWQ, -GPTQ-Int4, -bnb-4bit, ...): then the base model in that format."""
    try:
        return resolve_model(arg, catalog)
    except UsageError as first:
        base = arg.rstrip("/")
        for rx, quant in _CHECKPOINT_SUFFIXES:
            if rx.search(base):
                stem = rx.sub("", base)
                for name in (stem, stem.rsplit("/", 1)[-1]):
                    try:
                        spec = catalog.model(name)
                    except UsageError:
                        continue
                    return ModelChoice(spec, file_quant=quant,
                                       notes=(f"{arg}: {spec.name} stored as {quant} (from the checkpoint's name)",))
        if "/" in base and not os.path.exists(os.path.expanduser(base)):
            try:
                return resolve_model(base.rsplit("/", 1)[-1], catalog)
            except UsageError:
                pass
        raise first


def server_command(argv, env):
    """The engine and its parsed flags from a server command line: `vllm serve M ...`,
    `python -m vllm.entrypoints.openai.api_server --model M ...`, `llama-server -m F ...`, `ollama run T`."""
    from .estimator import engines as reg

    args = list(argv)
    if not args:
        raise UsageError("check --: give the server's command line, e.g. gpufit check -- vllm serve MODEL")
    prog = os.path.basename(args[0])
    rest = args[1:]
    if re.match(r"^python(\d(\.\d+)?)?$", prog):
        if len(rest) >= 2 and rest[0] == "-m":
            prog, rest = rest[1], rest[2:]
        else:
            raise UsageError(f"check --: {' '.join(args[:3])}: a Python server is read only as `python -m MODULE ...`")
    eng = reg.engine_for_program(prog)
    if eng is None:
        raise reg_unknown_program(prog, reg.programs())
    return eng, eng.parse_command(rest, env)


def reg_unknown_program(prog: str, programs) -> UsageError:
    return unknown("server program", prog, programs)


def merge_server_options(cmd, *, quant, context, kv_dtype, gpu_memory_utilization, gpus) -> dict:
    """Estimate options from the server's flags; an option that contradicts a flag is a usage error."""
    out = {}
    pairs = (("quant", quant, cmd.quant, "--quant"), ("context", context, cmd.context, "--context"),
             ("kv_dtype", kv_dtype, cmd.kv_dtype, "--kv-dtype"),
             ("gpu_memory_utilization", gpu_memory_utilization, cmd.gpu_memory_utilization,
              "--gpu-memory-utilization"))
    for key, mine, theirs, opt in pairs:
        if mine is not None and theirs is not None and mine != theirs:
            raise UsageError(f"{opt} {mine} contradicts the server's own flag ({theirs}); give one of them")
        out[key] = mine if mine is not None else theirs
    out["gpus"] = gpus if gpus is not None else cmd.gpus
    return out
