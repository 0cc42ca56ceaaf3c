"""The app layer: turns command-line values into a FitRequest, runs the estimate, adds the notes that
say which defaults were taken. No click here (cli.py renders and exits); no pynvml (probe does)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from ..catalog import Catalog, load_catalog
from ..catalog.types import GpuSpec, ModelSpec, QuantFormat
from ..errors import ExitCode, UsageError, did_you_mean_hint, unknown
from ..estimator import engines as engine_registry
from ..estimator.engines import EngineName, default_engine
from ..estimator.types import Device, FitRequest, FitResult, Verdict

if TYPE_CHECKING:
    from ..estimator.alternatives import Candidates
    from ..estimator.engines.base import Engine, ServerCommand
    from ..modelfile.resolve import Resolved
    from ..probe.snapshot import Snapshot

_T = TypeVar("_T")

VERDICT_EXIT = {Verdict.FITS: ExitCode.OK, Verdict.TIGHT: ExitCode.OK, Verdict.OFFLOAD: ExitCode.DEGRADED,
                Verdict.NO_FIT: ExitCode.NO_FIT}
DEFAULT_CONTEXT_CAP = 8192  # default context = min(8192, the model's max) (DESIGN.md)
# cards to count in "N of these would do" besides the selected one
REFERENCE_GPUS = ("h100-sxm",)
MAX_BATCH = 2**20  # concurrent sequences: far beyond what an engine schedules on one box; keeps the sums in range
MAX_GPU_COUNT = 1024  # --gpu KEY:COUNT on one box; far above any node (DGX: 8, NVL72 rack: 72)

class ModelWarning(str):
    """A warning about the model input (a partly downloaded repo): carried in the notes list that
    build_request returns and moved to the result's warnings by run_estimate."""


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A resolved MODEL argument: the architecture and, for a model file, its exact bytes."""
    spec: ModelSpec
    weights_bytes_exact: int | None = None
    weights_source: str | None = None
    file_quant: str | None = None  # quant the file is stored in (a .gguf's file type, a checkpoint's)
    notes: tuple[str, ...] = ()  # what reading the file assumed or left out
    warnings: tuple[str, ...] = ()  # what the user must know about the input (missing shards)
    ollama_tag: str | None = None  # the Ollama name given (`qwen3:4b`), served in `tag_quant`
    implied_engine: str | None = None  # the engine the name itself names (an Ollama library tag: ollama)
    tag_quant: str | None = None
    tag_quant_spelled: bool = False  # the name itself says the quant (`...-q8_0`): --quant may not differ

    @property
    def is_gguf(self) -> bool:
        """A .gguf file: only llama.cpp and Ollama load it, whatever its tensor type (F16 included)."""
        return bool(self.weights_source and self.weights_source.startswith("gguf"))


def resolve_model(arg: str, catalog: Catalog, revision: str | None = None, engine: str | None = None) -> ModelChoice:
    """A local model (a path, or a name found in the Hugging Face / Ollama / LM Studio / llama.cpp stores
    on this disk: it wins over the catalog), else an Ollama tag as the library serves it (`qwen3:4b`,
    `llama3.1:8b-instruct-q8_0`; a bare library name under --engine ollama is its `:latest`), else a
    catalog key / alias / HF repo id."""
    from ..modelfile.resolve import resolve_local

    local = resolve_local(arg, catalog.has_model(arg), revision)
    if local is not None:
        return choice_from_local(local)
    import os

    if os.path.exists(os.path.expanduser(arg)) and not catalog.has_model(arg):
        raise UsageError(f"{arg!r} is a file but not a model: give a model folder (config.json + "
                         "*.safetensors), a config.json, a .gguf or .safetensors file, or a catalog name")
    if not catalog.has_model(arg) and re.fullmatch(r"[\w.\-]+/[\w.\-]+(@[\w.\-/]+)?", arg.strip()):
        repo = arg.strip().split("@")[0]
        raise UsageError(
            f"unknown model {arg!r}: not in the catalog nor in a local store (Hugging Face cache, Ollama, LM "
            f"Studio, llama.cpp). Fetch the repo's config.json and pass its path: "
            f"hf download {repo} config.json --local-dir {repo.split('/')[-1]} (or mkdir {repo.split('/')[-1]} && "
            f"curl -L https://huggingface.co/{repo}/resolve/main/config.json -o {repo.split('/')[-1]}/config.json), "
            f"then gpufit plan {repo.split('/')[-1]}/config.json --quant ...{did_you_mean_hint(arg, catalog.models)}")
    tagged = ollama_choice(arg, catalog, engine)
    return tagged if tagged is not None else ModelChoice(catalog.model(arg))


def ollama_choice(arg: str, catalog: Catalog, engine: str | None = None) -> ModelChoice | None:
    """The model and format an Ollama name is served as, or None when `arg` is no Ollama name."""
    name = arg.strip()
    if ":" not in name and (engine or "").startswith("ollama") and name.lower() in catalog.ollama_names():
        name += ":latest"
    found = catalog.resolve_ollama_tag(name)
    if found is None:
        return None
    tag, quant, spelled = found
    spec = catalog.models[tag.model]
    if tag.name:
        spec = dataclasses.replace(spec, name=tag.name)
    where = tag.source.split(" ", 1)[0]
    said = (f"Ollama tag {arg}: {spec.name}" + (f" ({tag.key})" if tag.key != arg.strip().lower() else "")
            + (f", {quant} as the tag names it" if spelled else f", served as {quant} ({where})"))
    return ModelChoice(spec, notes=(said,), ollama_tag=arg.strip(), tag_quant=quant, tag_quant_spelled=spelled,
                       implied_engine=tag.engine)


def choice_from_local(local: Resolved) -> ModelChoice:
    """A modelfile.resolve.Resolved as a ModelChoice: config.json alone plans like a catalog entry (the
    quant is the user's, defaulting to the config's format)."""
    quant = None if local.config_only else local.quant
    spec = local.spec
    if local.config_only and local.quant:  # a quantized config: its format is the default
        spec = dataclasses.replace(spec, native_dtype=local.quant)
    return ModelChoice(spec, local.weights_bytes, local.weights_source, quant, local.notes, local.warnings)


def local_models(snapshot: Snapshot | None = None, catalog: Catalog | None = None,
                 env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """`gpufit models --local`: what the model stores on this disk hold and, given a snapshot, whether each
    fits on that box now at its defaults (verdict, or the error that stopped it)."""
    import os

    from ..errors import GpufitError
    from ..modelfile.resolve import load_local_entry
    from ..modelfile.stores import list_local

    rows: list[dict[str, Any]] = []
    for e in list_local(env):
        row: dict[str, Any] = {"name": e.name, "store": e.store, "format": e.format, "bytes": e.bytes, "path": str(e.path),
               "where": str(e.where), "revision": e.revision, "missing_shards": list(e.missing),
               "verdict": None, "reason": None}
        if snapshot is not None:
            from .devices import select_devices

            catalog = catalog or load_catalog()
            try:
                choice = choice_from_local(load_local_entry(e))
                devices = select_devices(snapshot, catalog, None, os.environ if env is None else env)
                req, notes = build_request(choice, devices, catalog,
                                           host_ram_available_bytes=snapshot.host.ram_available_bytes)
                row["verdict"] = run_estimate(req, notes, catalog, alternatives=False).verdict
            except GpufitError as err:
                if err.exit_code == 6:
                    raise
                row["reason"] = str(err)
        rows.append(row)
    return rows


def parse_gpu_option(values: Iterable[str], catalog: Catalog) -> list[tuple[GpuSpec, int]]:
    """--gpu KEY[:COUNT], repeatable."""
    out: list[tuple[GpuSpec, int]] = []
    for v in values:
        key, _, count = v.partition(":")
        n = 1
        if count or v.endswith(":"):
            if not re.fullmatch(r"[0-9]{1,5}", count) or not 1 <= int(count) <= MAX_GPU_COUNT:
                raise UsageError(f"--gpu {v}: COUNT must be a whole number from 1 to {MAX_GPU_COUNT}, "
                                 f"got {count!r}")
            n = int(count)
        out.append((catalog.gpu(key), n))
    return out


def _file_quant(model: ModelChoice, key: str, catalog: Catalog) -> QuantFormat:
    """The catalog format `key` a model file is stored in (its `file_quant`); a GGUF file type the catalog
    lacks gets its bits from the file itself (exact bytes x 8 / parameters), so nothing is guessed."""
    from ..estimator.params import count_params

    try:
        return catalog.quant(key)
    except UsageError:
        params = count_params(model.spec).total
        bits = model.weights_bytes_exact * 8 / params if model.weights_bytes_exact and params else 16.0
        gguf = (model.weights_source or "").startswith("gguf") or model.spec.source.endswith(".gguf")
        runs = tuple(e.key for e in engine_registry.all_engines() if e.runs_gguf == gguf)
        return QuantFormat(key=key, name=f"{key} (from the model file)", kind="gguf" if gguf else "int",
                           bits_per_weight=bits, source=model.spec.source, engines=runs)


def build_request(model: ModelChoice, devices: tuple[Device, ...], catalog: Catalog, *,
                  quant: str | None = None, context: int | None = None, batch: int = 1,
                  kv_dtype: str | None = None, engine: str = "auto", reserve_bytes: int = 0,
                  gpu_memory_utilization: float | None = None, min_headroom_bytes: int | None = None,
                  host_ram_available_bytes: int | None = None, planning: bool = False,
                  engine_settings: Mapping[str, Any] | None = None, model_path: str | None = None,
                  batch_given: bool | None = None) -> tuple[FitRequest, list[str]]:
    """Validate options, apply the defaults of DESIGN.md, and say which were taken (notes)."""
    m = model.spec
    notes: list[str] = []
    notes.extend(model.notes)
    notes.extend(ModelWarning(w) for w in model.warnings)
    if quant is None and model.tag_quant:
        q = catalog.quant(model.tag_quant)
        notes.append(f"quant {q.key}: what Ollama serves for {model.ollama_tag}"
                     + ("" if model.tag_quant_spelled else " (default; --quant to change)"))
    elif quant is None:
        qkey = model.file_quant or m.native_dtype
        notes.append(f"quant {qkey}: " + ("the model file's format" if model.file_quant
                                          else "the model's native dtype (default; --quant to change)"))
        q = _file_quant(model, model.file_quant, catalog) if model.file_quant else catalog.quant(qkey)
    else:
        q = catalog.quant(quant)
        if model.tag_quant_spelled and q.key != model.tag_quant:
            raise UsageError(f"--quant {quant}: the Ollama tag {model.ollama_tag} names {model.tag_quant}")
        if model.file_quant and q.key != model.file_quant:
            raise UsageError(f"--quant {quant}: the model file is stored as {model.file_quant}; "
                             "exact bytes come from the file, so its format is the one that loads")
    version = None
    if engine == "auto":
        if model.ollama_tag:  # a library tag is what `ollama run` serves
            eng, why = EngineName.OLLAMA, "the engine that serves Ollama tags"
        else:
            kind = "gguf" if model.is_gguf else q.kind
            eng = default_engine(kind)
            why = ("the default for a GGUF file" if model.is_gguf else
                   f"the default for {'GGUF types' if kind == 'gguf' else 'non-GGUF formats'}")
        notes.append(f"engine {eng}: {why} (default; --engine to change)")
    else:
        name, version = engine_registry.split_name(engine)
        if name not in engine_registry.ENGINES:
            raise unknown("engine", name, engine_registry.ENGINES)
        eng = EngineName(name)
    engine_obj = engine_registry.get(eng, version)  # an unknown version family is a usage error here
    if eng not in q.engines:
        raise UsageError(f"--quant {q.key} does not run on {eng}; engines that run it: {', '.join(q.engines)}")
    engine_default = engine_obj.default_context(m, devices, engine_settings) if context is None else None
    if engine_default is not None:
        context, why = engine_default
        notes.append(f"context {context}: {why} (default; --context to change)")
    elif context is None:
        context = min(DEFAULT_CONTEXT_CAP, m.max_context)
        notes.append(f"context {context}: min(8192, the model's maximum {m.max_context}) (default; --context to change)")
    if context < 1:
        raise UsageError(f"--context must be at least 1 token, got {context}")
    if context > m.max_context:
        raise UsageError(f"--context {context} exceeds {m.name}'s maximum context of {m.max_context} tokens")
    if not 1 <= batch <= MAX_BATCH:
        raise UsageError(f"--batch must be 1 to {MAX_BATCH} sequences, got {batch if batch < 10**12 else 'more'}")
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
    if model.ollama_tag:
        engine_settings = {**(engine_settings or {}), "ollama_tag": model.ollama_tag}
    engine_settings = dict(engine_settings or {})
    # every engine, the request's own among them, completes what its printed line needs (Ollama: the
    # library tag); a version family completes them as its engine's current release does
    for other in engine_registry.all_engines():
        engine_settings = other.settings_for(m, q, catalog, engine_settings)
    req = FitRequest(
        model=m, quant=q, kv_dtype=kv, context=context, batch=batch, engine=eng, devices=devices,
        host_ram_available_bytes=host_ram_available_bytes, reserve_bytes=reserve_bytes,
        gpu_memory_utilization=gpu_memory_utilization, min_headroom_bytes=min_headroom_bytes,
        weights_bytes_exact=model.weights_bytes_exact, weights_source=model.weights_source,
        planning=planning, engine_version=engine_obj.version, engine_settings=dict(engine_settings or {}),
        model_path=model_path, batch_given=batch > 1 if batch_given is None else batch_given,
    )
    refit = engine_obj.refit(req)  # what the engine changes itself to fit these GPUs (llama.cpp --fit)
    if refit is not None:
        req = refit[0]
        notes.extend(refit[1])
    if batch > 1:
        notes.append(f"batch {batch}: {batch} concurrent sequences of {req.context} tokens each")
    return req, notes


def candidates_for(req: FitRequest, catalog: Catalog) -> Candidates:
    from ..estimator.alternatives import Candidates

    refs = tuple(catalog.gpus[k] for k in REFERENCE_GPUS if k in catalog.gpus)
    family = tuple(catalog.family_models(req.model.family)) if req.weights_bytes_exact is None else ()
    return Candidates(quants=tuple(catalog.quants.values()), family=family, reference_gpus=refs)


def run_estimate(req: FitRequest, notes: list[str], catalog: Catalog, alternatives: bool = True,
                 limits: bool = True) -> FitResult:
    from ..estimator.fit import estimate
    from ..estimator.types import Message

    res = estimate(req, alternatives=alternatives, candidates=lambda: candidates_for(req, catalog),
                   limits=limits)
    # what the app layer said (defaults taken, files read) is a statement of its own: code "assumed"
    # for the notes, "model_input" for what the user must know about the input
    warns = tuple(Message("model_input", text=str(n)) for n in notes if isinstance(n, ModelWarning))
    said = tuple(n if isinstance(n, Message) else Message("assumed", text=str(n))
                 for n in notes if not isinstance(n, ModelWarning))
    return dataclasses.replace(res, notes=said + res.notes, warnings=warns + res.warnings)


def exit_code(res: FitResult, strict: bool = False) -> ExitCode:
    """The exit code of `here`, `plan` and `check` for a result (DESIGN.md): 0 fits (and tight, unless
    `strict`), 4 fits only with CPU offload (or tight under --strict), 3 does not fit."""
    if res.verdict == Verdict.TIGHT and strict:
        return ExitCode.DEGRADED
    return VERDICT_EXIT[res.verdict]


def fit_on_snapshot(model: str, snapshot: Snapshot, *, quant: str | None = None, context: int | None = None,
                    batch: int = 1, kv_dtype: str | None = None, engine: str = "auto",
                    gpus: str | None = None, reserve_bytes: int = 0, catalog: Catalog | None = None,
                    env: Mapping[str, str] | None = None, alternatives: bool = False) -> FitResult:
    """The verdict for `model` on the box a snapshot describes (`report`'s watched models, the API):
    the path `here --snapshot` takes (app.live.fit_live)."""
    from .live import LiveOptions, fit_live

    opts = LiveOptions(model=model, quant=quant, context=context, batch=batch, kv_dtype=kv_dtype, engine=engine,
                       gpus=gpus, reserve=str(reserve_bytes))
    return fit_live(opts, snapshot=snapshot, env=env, alternatives=alternatives, catalog=catalog)


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
                        by_repo = _by_repo_name(name, catalog)
                        if by_repo is None:
                            continue
                        spec = by_repo
                    return ModelChoice(spec, file_quant=quant,
                                       notes=(f"{arg}: {spec.name} stored as {quant} (from the checkpoint's name)",))
        if "/" in base and not os.path.exists(os.path.expanduser(base)):
            try:
                return resolve_model(base.rsplit("/", 1)[-1], catalog)
            except UsageError:
                pass
        named = _gguf_by_name(base, catalog)
        if named is not None:
            return named
        raise first


# a GGUF file named as the usual converters write it: MODEL-QUANT.gguf (split: -00001-of-00003)
_GGUF_NAME = re.compile(r"^(?P<stem>.+?)[-._](?P<quant>i?q\d[a-z0-9_]*|f16|bf16|f32|mxfp4)"
                        r"(?:-\d{5}-of-\d{5})?\.gguf$", re.I)


def _gguf_by_name(path: str, catalog: Catalog) -> ModelChoice | None:
    """A .gguf the server names that is not on this disk: the catalog model and format its file name
    says (`Qwen3-30B-A3B-Q4_K_M.gguf`), said under "Assumed:"; None when the name says neither."""
    m = _GGUF_NAME.match(os.path.basename(path))
    if m is None or not catalog.has_quant(m.group("quant")):
        return None
    q = catalog.quant(m.group("quant"))
    stem = m.group("stem")
    for name in (stem, re.sub(r"(?i)^meta-", "", stem), re.sub(r"(?i)[-_](instruct|it|chat)$", "", stem)):
        if catalog.has_model(name):
            spec = catalog.model(name)
            return ModelChoice(spec, file_quant=q.key, notes=(
                f"{path} is not on this disk: {spec.name} in {q.key}, from the file's name",))
    return None


def _by_repo_name(name: str, catalog: Catalog) -> ModelSpec | None:
    """The catalog model whose Hugging Face repo (or an alias of the form ORG/NAME) ends in NAME, when
    exactly one does: a re-upload such as RedHatAI/Mixtral-8x7B-Instruct-v0.1 names mistralai's model."""
    want = name.rsplit("/", 1)[-1].lower()
    hits = {m.key for m in catalog.models.values()
            for a in (m.hf_repo or "", *m.aliases) if "/" in a and a.rsplit("/", 1)[-1].lower() == want}
    return catalog.models[hits.pop()] if len(hits) == 1 else None


def server_command(argv: Iterable[str], env: Mapping[str, str]) -> tuple[Engine, ServerCommand]:
    """The engine and its parsed flags from a server command line: `vllm serve M ...`,
    `python -m vllm.entrypoints.openai.api_server --model M ...`, `llama-server -m F ...`, `ollama run T`."""
    from ..estimator import engines as reg

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


def reg_unknown_program(prog: str, programs: Iterable[str]) -> UsageError:
    return unknown("server program", prog, programs)


class ServerOptions(TypedDict):
    """The estimate options a server command line and gpufit's own options agree on (None = neither)."""

    quant: str | None
    context: int | None
    kv_dtype: str | None
    gpu_memory_utilization: float | None
    gpus: str | None


def _agree(mine: _T | None, theirs: _T | None, opt: str) -> _T | None:
    """Our option where given, else the server's flag; both given and different is a usage error."""
    if mine is not None and theirs is not None and mine != theirs:
        raise UsageError(f"{opt} {mine} contradicts the server's own flag ({theirs}); give one of them")
    return mine if mine is not None else theirs


def merge_server_options(cmd: ServerCommand, *, quant: str | None, context: int | None, kv_dtype: str | None,
                         gpu_memory_utilization: float | None, gpus: str | None) -> ServerOptions:
    """Estimate options from the server's flags; an option that contradicts a flag is a usage error."""
    # checked in this order: the first contradiction is the one reported
    q = _agree(quant, cmd.quant, "--quant")
    ctx = _agree(context, cmd.context, "--context")
    kv = _agree(kv_dtype, cmd.kv_dtype, "--kv-dtype")
    util = _agree(gpu_memory_utilization, cmd.gpu_memory_utilization, "--gpu-memory-utilization")
    return ServerOptions(quant=q, context=ctx, kv_dtype=kv, gpu_memory_utilization=util,
                         gpus=gpus if gpus is not None else cmd.gpus)
