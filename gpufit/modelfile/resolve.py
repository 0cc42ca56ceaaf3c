"""MODEL as the user wrote it -> what is on this disk: a path (model folder, .gguf / .safetensors file,
config.json alone, a Hugging Face cache repo folder) or a name found in a local store (stores.py).

`resolve_local` returns None when nothing local matches, so the caller falls back to the catalog; the local
copy wins over the catalog, and the notes say which file(s) were read and, for a name in two stores,
which copy was used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..catalog.types import ModelSpec
from ..errors import ModelFileError
from .common import model_key
from .stores import LocalModel, find_local, hf_snapshot_state, is_hf_repo_folder

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class Resolved:
    """A local model: the architecture and, where weight files were read, their exact bytes."""
    spec: ModelSpec
    weights_bytes: int | None  # None: config.json alone, weights come from the architecture and --quant
    weights_source: str | None
    quant: str | None  # the format the file(s) are stored in; None for config.json alone unless quantized
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    config_only: bool = False


def _files_note(files, limit: int = 4) -> str:
    """'a, b, c in DIR' when the files share a folder, else their paths; long lists are cut."""
    paths = [Path(f) for f in files]
    parents = {p.parent for p in paths}
    names = [p.name for p in paths] if len(parents) == 1 else [str(p) for p in paths]
    text = ", ".join(names[:limit]) + (f", … ({len(names)} files)" if len(names) > limit else "")
    return text + (f" in {paths[0].parent}" if len(parents) == 1 else "")


def _from_modelfile(mf, where: str, extra: tuple[Path, ...] = (), name: str | None = None) -> Resolved:
    spec = mf.spec
    if name:
        spec = dataclasses.replace(spec, key=model_key(name.replace(":", "-")), name=name)
    weights = mf.weights_bytes
    notes = [f"{where}: read {_files_note(mf.files)}"] if mf.files else []
    source = mf.weights_source
    if extra:
        add = sum(p.stat().st_size for p in extra)
        weights += add
        source += f" + {len(extra)} projector file{'s' if len(extra) > 1 else ''}"
        notes.append(f"vision projector counted in the weights: {_files_note(extra)} ({add} bytes)")
    return Resolved(spec, weights, source, mf.quant, tuple(notes) + mf.notes, mf.warnings)


def _config_only(config: Path, where: str) -> Resolved:
    from .hf import load_hf_config_only

    spec, quant, notes = load_hf_config_only(config)
    first = (f"{where}: read {config} alone (no weights): estimated from the config's architecture; "
             f"weights = parameters x the quant's bytes per weight (--quant to choose; default the config's "
             f"{'quantization_config' if quant else 'torch_dtype'})")
    return Resolved(spec, None, f"estimated from {config.name} (no weight files)", quant,
                    (first, *notes), config_only=True)


def _hf_folder(folder: Path, where: str) -> Resolved:
    from .hf import load_hf_folder

    present, missing, _ = hf_snapshot_state(folder)
    if not present and not missing and (folder / CONFIG_NAME).is_file():
        return _config_only(folder / CONFIG_NAME, where)
    return _from_modelfile(load_hf_folder(folder, allow_missing=True), where)


def load_local_entry(e: LocalModel) -> Resolved:
    """Read the model a store entry names."""
    where = {"huggingface": "Hugging Face cache", "ollama": "Ollama store", "lm-studio": "LM Studio models",
             "llama.cpp": "llama.cpp cache"}[e.store]
    where = f"local copy of {e.name} ({where}" + (f", revision {e.revision}" if e.revision else "") + ")"
    if e.format == "gguf":
        from .gguf_file import load_gguf

        r = _from_modelfile(load_gguf(e.path), where, e.extra, e.name if e.store == "ollama" else None)
    elif e.format == "config.json":
        r = _config_only(e.path / CONFIG_NAME, where)
    elif e.format == "safetensors":
        r = _hf_folder(e.path, where)
    else:
        raise ModelFileError(e.path, "the cached snapshot has neither config.json nor weights")
    warnings = r.warnings
    if e.incomplete and not e.missing:
        warnings += (f"{e.incomplete} download(s) of {e.name} did not finish (blobs/*.incomplete in "
                     f"{e.path.parent.parent}); " + ("the estimate comes from config.json alone"
                                                     if r.config_only else "the weights read are those present"),)
    return dataclasses.replace(r, notes=e.notes + r.notes, warnings=warnings)


def resolve_path(p: Path, revision: str | None = None) -> Resolved | None:
    """A path that exists. None when it is no model (the caller says so)."""
    from . import GGUF_SUFFIX, SAFETENSORS_SUFFIX, load_model_file

    if p.is_dir():
        if is_hf_repo_folder(p):  # models--ORG--NAME: the repo folder itself, not a snapshot
            from .stores import _hf_entry

            return load_local_entry(_hf_entry(p, p.parent, revision))
        if (p / CONFIG_NAME).is_file():
            return _hf_folder(p, f"model folder {p}")
        return _from_modelfile(load_model_file(p), f"model folder {p}")  # raises: no config.json (+ hint)
    if p.name == CONFIG_NAME or (p.suffix.lower() == ".json" and p.is_file() and _looks_like_config(p)):
        return _config_only(p, "config file")
    if p.suffix.lower() in (GGUF_SUFFIX, SAFETENSORS_SUFFIX) and p.is_file():
        mf = load_model_file(p)
        return _from_modelfile(mf, f"model file {p}")
    return None


def _looks_like_config(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)  # the head only: a multi-GB .json is not read whole to peek at it
    except OSError:
        return False
    return b'"model_type"' in head


def resolve_local(arg: str, in_catalog: bool = False, revision: str | None = None,
                  env: Mapping[str, str] | None = None) -> Resolved | None:
    """`arg` as a path, else as a name in a local store; None if neither. `ORG/NAME@REV` picks an HF
    revision as `--revision REV` does."""
    p = Path(arg).expanduser()
    try:
        exists = p.exists() or p.is_symlink()
    except (OSError, ValueError):
        exists = False
    if exists:
        if p.is_symlink() and not p.exists():
            raise ModelFileError(p, f"dangling symlink to {p.readlink()}")
        return resolve_path(p, revision)
    name = arg.strip()
    if revision is None and "@" in name and "/" in name.split("@", 1)[0]:
        name, revision = name.split("@", 1)
    # a cached repo with neither config.json nor weights (only a tokenizer or README was fetched) is no
    # model: the name falls through to the catalog
    found = [f for f in find_local(name, env, revision) if f.format != "other"]
    if not found:
        return None
    chosen = found[0]
    r = load_local_entry(chosen)
    extra = []
    if len(found) > 1:
        others = "; ".join(f"{f.store} {f.path}" for f in found[1:])
        extra.append(f"{name} is in {len(found)} local stores: the {chosen.store} copy ({chosen.path}) was used, "
                     f"not {others} (pass a path to choose)")
    if in_catalog:
        extra.append(f"the local copy was used instead of the catalog entry for {name}")
    return dataclasses.replace(r, notes=tuple(extra) + r.notes)
