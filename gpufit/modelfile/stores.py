"""Models already on this disk: the Hugging Face hub cache, Ollama's store, LM Studio's models folder and
llama.cpp's `-hf` cache, resolved offline (nothing is downloaded, no tool is run).

Layouts, as the tools write them:

- Hugging Face hub cache (huggingface_hub `constants.py` / `file_download.py`): `$HF_HUB_CACHE`, else
  `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. A repo is
  `models--ORG--NAME/` with `refs/BRANCH` (a text file holding the commit), `blobs/ETAG` (the bytes;
  `ETAG.incomplete` while downloading) and `snapshots/COMMIT/FILE`, a relative symlink into `blobs/`
  (a copy on file systems without symlinks). A file that has not finished downloading has no entry in
  `snapshots/` yet.
- Ollama (ollama `envconfig` Models(), `server/manifest.go`, `server/layer.go`): `$OLLAMA_MODELS`, else
  `~/.ollama/models` (the Linux service user's `/usr/share/ollama/.ollama/models` too). A name
  `[HOST/][NAMESPACE/]MODEL[:TAG]` (defaults registry.ollama.ai, library, latest) has its manifest at
  `manifests/HOST/NAMESPACE/MODEL/TAG`, JSON with `layers[]` of {mediaType, digest, size}; digest
  `sha256:HEX` is the file `blobs/sha256-HEX`. The `application/vnd.ollama.image.model` layer is the GGUF;
  `application/vnd.ollama.image.projector` layers (vision projectors) load beside it.
- LM Studio: `~/.lmstudio/models/PUBLISHER/REPO/FILE.gguf` (0.3 and later), `~/.cache/lm-studio/models`
  (earlier releases).
- llama.cpp `-hf` cache (common/common.cpp `fs_get_cache_directory`): `$LLAMA_CACHE`, else
  `$XDG_CACHE_HOME/llama.cpp`, else `~/.cache/llama.cpp` (`~/Library/Caches/llama.cpp` on macOS). Files are
  flat: `ORG_REPO_FILE.gguf`, with `manifest=ORG=REPO=TAG.json` naming the GGUF file; newer builds keep
  Hugging Face cache folders (`models--ORG--NAME`) there, read like the hub cache.

Everything here is file-system reads of small files (refs, manifests, JSON indexes); weights are never read.
A broken store (a dangling snapshot symlink, a manifest naming a missing blob, invalid JSON) raises
ModelFileError naming the file (exit 6).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFileError, UsageError
from ..units import MIB

HF_INDEX = "model.safetensors.index.json"
OLLAMA_HOST = "registry.ollama.ai"
OLLAMA_NAMESPACE = "library"
OLLAMA_TAG = "latest"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_PROJECTOR_LAYER = "application/vnd.ollama.image.projector"
DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

STORES = ("huggingface", "ollama", "lm-studio", "llama.cpp")


@dataclass(frozen=True)
class LocalModel:
    """One model found on disk."""
    name: str  # how to ask for it: "meta-llama/Llama-3.1-8B-Instruct", "llama3.1:8b", "pub/repo/file.gguf"
    store: str  # one of STORES
    format: str  # "safetensors" | "gguf" | "config.json"
    path: Path  # what the readers load: a snapshot folder, a .gguf file or Ollama blob
    bytes: int  # bytes of the weight files present on disk
    where: Path  # the store folder it was found in
    revision: str | None = None  # HF: the commit of the snapshot
    extra: tuple[Path, ...] = ()  # files loaded beside the model (Ollama projector blobs, LM Studio mmproj)
    missing: tuple[str, ...] = ()  # HF: shards the index lists that are not in the snapshot
    incomplete: int = 0  # HF: blobs/*.incomplete files (downloads that did not finish)
    notes: tuple[str, ...] = field(default=(), compare=False)


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _home(env: Mapping[str, str]) -> Path:
    h = env.get("HOME")
    return Path(h) if h else Path.home()


def _xdg_cache(env: Mapping[str, str]) -> Path:
    x = env.get("XDG_CACHE_HOME")
    return Path(x).expanduser() if x else _home(env) / ".cache"


# ---------------------------------------------------------------------------------------------- folders
def hf_cache_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    e = _env(env)
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if e.get(k):
            return [Path(e[k]).expanduser()]
    if e.get("HF_HOME"):
        return [Path(e["HF_HOME"]).expanduser() / "hub"]
    return [_xdg_cache(e) / "huggingface" / "hub"]


def ollama_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    e = _env(env)
    if e.get("OLLAMA_MODELS"):
        return [Path(e["OLLAMA_MODELS"]).expanduser()]
    dirs = [_home(e) / ".ollama" / "models"]
    if sys.platform.startswith("linux") and env is None:  # install.sh's service user
        dirs.append(Path("/usr/share/ollama/.ollama/models"))
    return dirs


def lmstudio_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    e = _env(env)
    return [_home(e) / ".lmstudio" / "models", _xdg_cache(e) / "lm-studio" / "models"]


def llamacpp_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    e = _env(env)
    if e.get("LLAMA_CACHE"):
        return [Path(e["LLAMA_CACHE"]).expanduser()]
    if sys.platform == "darwin":
        return [_home(e) / "Library" / "Caches" / "llama.cpp"]
    return [_xdg_cache(e) / "llama.cpp"]


def _isdir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _entries(d: Path) -> list[Path]:
    """The entries of a store folder; one this user cannot list (another user's store) holds nothing."""
    try:
        return list(d.iterdir())
    except OSError:
        return []


def _read_json(path: Path):
    from ..fsutil import read_data_file

    raw = read_data_file(path, 64 * MIB, ModelFileError, "store manifest")  # manifests are a few kB
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(path, f"not valid JSON: {e}") from None
    except RecursionError:
        raise ModelFileError(path, "not valid JSON: nested too deep") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------- Hugging Face
def hf_repo_folder_name(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def is_hf_repo_folder(p: Path) -> bool:
    return p.name.startswith("models--") and _isdir(p / "snapshots")


def repo_from_folder(p: Path) -> str:
    return p.name.removeprefix("models--").replace("--", "/", 1)


def _check_snapshot_entry(p: Path) -> None:
    """A snapshot entry that is a symlink must point at an existing blob."""
    if p.is_symlink() and not p.exists():
        raise ModelFileError(p, f"broken Hugging Face cache: symlink to {os.readlink(p)} points at a missing "
                             "blob (delete the snapshot folder and download again)")


def hf_snapshot(repo_dir: Path, revision: str | None = None) -> tuple[Path, str | None, list[str]]:
    """The snapshot folder of a cached repo for `revision` (a branch / tag in refs/, or a commit hash;
    default refs/main, else the only snapshot). Returns (folder, commit, notes)."""
    snaps = repo_dir / "snapshots"
    notes: list[str] = []
    ref_names = []
    refs = repo_dir / "refs"
    if _isdir(refs):
        ref_names = sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file())
    wanted = revision or "main"
    commit = None
    ref = refs / wanted
    if ref.is_file():
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ModelFileError(ref, f"cannot read: {e}") from None
        if not COMMIT_RE.match(commit):
            raise ModelFileError(ref, f"expected a 40-hex commit hash, got {commit[:60]!r}")
        if not _isdir(snaps / commit):
            raise ModelFileError(ref, f"refs/{wanted} names commit {commit} but snapshots/{commit} is missing")
    elif revision and _isdir(snaps / revision):
        commit = revision
    elif revision:
        have = sorted(p.name for p in _entries(snaps) if p.is_dir())
        raise UsageError(f"--revision {revision}: {repo_dir} has no such ref or snapshot; refs: "
                         f"{', '.join(ref_names) or 'none'}; snapshots: {', '.join(have) or 'none'}")
    else:
        have = sorted((p for p in _entries(snaps) if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if not have:
            raise ModelFileError(repo_dir, "the cached repo has no snapshot (the download did not finish); "
                                 "download it again")
        commit = have[-1].name
        if len(have) > 1:
            notes.append(f"{repo_dir.name} has no refs/main and {len(have)} snapshots: the newest, {commit}, "
                         "was used (--revision to choose)")
    return snaps / commit, commit, notes


def hf_snapshot_state(folder: Path) -> tuple[list[Path], list[str], int]:
    """(weight files present, shard names the index lists but the folder lacks, bytes present).
    Raises on dangling symlinks and an invalid index."""
    for p in _entries(folder):
        _check_snapshot_entry(p)
    index = folder / HF_INDEX
    missing: list[str] = []
    if index.is_file():
        data = _read_json(index)
        wm = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
            raise ModelFileError(index, "expected a weight_map of tensor name -> shard file", "weight_map")
        shards = sorted(set(wm.values()))
        present = [folder / s for s in shards if (folder / s).is_file()]
        missing = [s for s in shards if not (folder / s).is_file()]
    else:
        present = sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith("consolidated"))
    return present, missing, sum(_size(p) for p in present)


def _hf_entry(repo_dir: Path, where: Path, revision: str | None = None) -> LocalModel:
    folder, commit, notes = hf_snapshot(repo_dir, revision)
    present, missing, nbytes = hf_snapshot_state(folder)
    if present or missing:
        fmt = "safetensors"
    elif (folder / "config.json").is_file():
        fmt = "config.json"
    elif any(folder.glob("*.gguf")):
        fmt = "gguf"
    else:
        fmt = "other"
    incomplete = len(list((repo_dir / "blobs").glob("*.incomplete"))) if _isdir(repo_dir / "blobs") else 0
    return LocalModel(repo_from_folder(repo_dir), "huggingface", fmt, folder, nbytes, where, commit,
                      missing=tuple(missing), incomplete=incomplete, notes=tuple(notes))


def _hf_find(repo: str, dirs: list[Path]) -> list[tuple[Path, Path]]:
    want = hf_repo_folder_name(repo).lower()
    out = []
    for d in dirs:
        if not _isdir(d):
            continue
        exact = d / hf_repo_folder_name(repo)
        if is_hf_repo_folder(exact):
            out.append((exact, d))
            continue
        for p in _entries(d):  # hub ids are case-insensitive; the folder keeps the case it was asked with
            if p.name.lower() == want and is_hf_repo_folder(p):
                out.append((p, d))
                break
    return out


# --------------------------------------------------------------------------------------------- Ollama
def parse_ollama_name(name: str) -> tuple[str, str, str, str] | None:
    """'llama3.1:8b' -> (registry.ollama.ai, library, llama3.1, 8b); None if it cannot be an Ollama name."""
    if not name or name.startswith(("/", ".", "~")) or name.endswith(".gguf"):
        return None
    base, _, tag = name.partition(":")
    if ":" in tag or not re.fullmatch(r"[\w.\-]+", tag or OLLAMA_TAG):
        return None
    parts = base.split("/")
    if len(parts) == 1:
        host, ns, model = OLLAMA_HOST, OLLAMA_NAMESPACE, parts[0]
    elif len(parts) == 2:
        host, (ns, model) = OLLAMA_HOST, parts
    elif len(parts) == 3:
        host, ns, model = parts
    else:
        return None
    if not all(re.fullmatch(r"[\w.\-]+", p) for p in (host, ns, model)):
        return None
    return host, ns, model, tag or OLLAMA_TAG


def _ollama_display(host: str, ns: str, model: str, tag: str) -> str:
    base = model if (host, ns) == (OLLAMA_HOST, OLLAMA_NAMESPACE) else (
        f"{ns}/{model}" if host == OLLAMA_HOST else f"{host}/{ns}/{model}")
    return f"{base}:{tag}"


def _ollama_entry(manifest: Path, root: Path, display: str) -> LocalModel:
    data = _read_json(manifest)
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ModelFileError(manifest, "expected an Ollama manifest with a layers list", "layers")
    model_blob, extra = None, []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ModelFileError(manifest, "a layer is not an object", f"layers[{i}]")
        mt = layer.get("mediaType")
        if mt not in (OLLAMA_MODEL_LAYER, OLLAMA_PROJECTOR_LAYER):
            continue  # template, params, license, system: text, not loaded onto the GPU
        m = DIGEST_RE.match(str(layer.get("digest", "")))
        if not m:
            raise ModelFileError(manifest, f"digest {layer.get('digest')!r} is not sha256:<64 hex>",
                                 f"layers[{i}].digest")
        blob = root / "blobs" / f"sha256-{m.group(1)}"
        if not blob.is_file():
            raise ModelFileError(manifest, f"layer {mt} names blob {blob.name}, which is missing from "
                                 f"{root / 'blobs'} (ollama pull {display} again)", f"layers[{i}].digest")
        if mt == OLLAMA_MODEL_LAYER:
            if model_blob is not None:
                raise ModelFileError(manifest, "two model layers: an adapter model is not supported",
                                     f"layers[{i}]")
            model_blob = blob
        else:
            extra.append(blob)
    if model_blob is None:
        raise ModelFileError(manifest, f"no {OLLAMA_MODEL_LAYER} layer (a model that needs its "
                             "safetensors converted first?)", "layers")
    nbytes = _size(model_blob) + sum(_size(p) for p in extra)
    return LocalModel(display, "ollama", "gguf", model_blob, nbytes, root, extra=tuple(extra))


def _ollama_find(name: str, dirs: list[Path]) -> list[LocalModel]:
    parsed = parse_ollama_name(name)
    if parsed is None:
        return []
    out = []
    for root in dirs:
        mdir = root / "manifests"
        if not _isdir(mdir):
            continue
        host, ns, model, tag = parsed
        m = mdir / host / ns / model / tag
        if not m.is_file():  # Ollama matches names case-insensitively
            m = next((p for p in mdir.glob("*/*/*/*") if p.is_file() and
                      [x.lower() for x in p.relative_to(mdir).parts] == [host.lower(), ns.lower(),
                                                                       model.lower(), tag.lower()]), None)
        if m is not None:
            out.append(_ollama_entry(m, root, _ollama_display(host, ns, model, tag)))
    return out


# ------------------------------------------------------------------------------ LM Studio and llama.cpp
def _is_projector(p: Path) -> bool:
    return p.name.lower().startswith("mmproj")


def _lmstudio_find(name: str, dirs: list[Path]) -> list[LocalModel]:
    parts = name.strip("/").split("/")
    if len(parts) not in (2, 3) or any(not p or p in (".", "..") for p in parts):
        return []
    out = []
    for root in dirs:
        repo = root / parts[0] / parts[1]
        if not _isdir(repo):
            continue
        ggufs = sorted(p for p in repo.glob("*.gguf") if not _is_projector(p))
        mmproj = tuple(sorted(p for p in repo.glob("*.gguf") if _is_projector(p)))
        if len(parts) == 3:
            pick = [p for p in ggufs if p.name.lower() == parts[2].lower()]
        else:
            firsts = [p for p in ggufs if not re.search(r"-0000[2-9]-of-|-000[1-9]\d-of-", p.name)]
            if len(firsts) > 1:
                raise UsageError(f"{name}: {repo} holds {len(firsts)} GGUF files; name one: "
                                 + ", ".join(f"{name}/{p.name}" for p in firsts))
            pick = firsts
        for p in pick:
            out.append(LocalModel(f"{parts[0]}/{parts[1]}/{p.name}", "lm-studio", "gguf", p,
                                  _size(p) + sum(_size(x) for x in mmproj), root, extra=mmproj))
    return out


def _llamacpp_manifests(root: Path):
    """(org/repo:tag, gguf path) for every `manifest=ORG=REPO=TAG.json` of the flat cache."""
    for m in sorted(root.glob("manifest=*.json")):
        parts = m.name.removeprefix("manifest=").removesuffix(".json").split("=")
        if len(parts) != 3:
            continue
        org, repo, tag = parts
        data = _read_json(m)
        rf = (data.get("ggufFile") or {}).get("rfilename") if isinstance(data, dict) else None
        if not isinstance(rf, str) or not rf:
            raise ModelFileError(m, "expected ggufFile.rfilename", "ggufFile.rfilename")
        f = root / f"{org}_{repo}_{rf.replace('/', '_')}"
        if not f.is_file():
            raise ModelFileError(m, f"names {rf}, but {f.name} is missing from {root} (llama.cpp -hf "
                                 f"{org}/{repo}:{tag} downloads it again)", "ggufFile.rfilename")
        yield f"{org}/{repo}:{tag}", f


def _llamacpp_find(name: str, dirs: list[Path]) -> list[LocalModel]:
    want = name if ":" in name else name + ":latest"
    out = []
    for root in dirs:
        if not _isdir(root):
            continue
        for label, f in _llamacpp_manifests(root):
            if label.lower() == want.lower() or (":" not in name and label.lower().startswith(name.lower() + ":")):
                out.append(LocalModel(label, "llama.cpp", "gguf", f, _size(f), root))
                break
        else:
            for repo_dir, where in _hf_find(name.partition(":")[0], [root]):
                out.append(_hf_gguf_or_entry(repo_dir, where, "llama.cpp"))
    return out


def _hf_gguf_or_entry(repo_dir: Path, where: Path, store: str, revision: str | None = None) -> LocalModel:
    e = _hf_entry(repo_dir, where, revision)
    if e.format == "gguf":
        ggufs = sorted(p for p in e.path.glob("*.gguf") if not _is_projector(p))
        if len(ggufs) == 1:
            return LocalModel(e.name, store, "gguf", ggufs[0], _size(ggufs[0]), where, e.revision)
        raise UsageError(f"{e.name}: the cached snapshot {e.path} holds {len(ggufs)} GGUF files; pass one "
                         "of them as MODEL")
    return LocalModel(e.name, store, e.format, e.path, e.bytes, where, e.revision, missing=e.missing,
                      incomplete=e.incomplete, notes=e.notes)


# ------------------------------------------------------------------------------------------ find / list
def find_local(name: str, env: Mapping[str, str] | None = None, revision: str | None = None) -> list[LocalModel]:
    """Every store's copy of `name`, in the order huggingface, ollama, lm-studio, llama.cpp."""
    out: list[LocalModel] = []
    if "/" in name and ":" not in name and name.count("/") == 1:
        out += [_hf_gguf_or_entry(d, w, "huggingface", revision) for d, w in _hf_find(name, hf_cache_dirs(env))]
    out += _ollama_find(name, ollama_dirs(env))
    out += _lmstudio_find(name, lmstudio_dirs(env))
    out += _llamacpp_find(name, llamacpp_dirs(env))
    return out


def list_local(env: Mapping[str, str] | None = None) -> list[LocalModel]:
    """What is on disk in every store. A broken entry raises (exit 6 naming the file)."""
    out: list[LocalModel] = []
    for d in hf_cache_dirs(env):
        if _isdir(d):
            for p in sorted(_entries(d)):
                if is_hf_repo_folder(p):
                    out.append(_hf_entry(p, d))
    for root in ollama_dirs(env):
        mdir = root / "manifests"
        if _isdir(mdir):
            for m in sorted(mdir.glob("*/*/*/*")):
                if m.is_file():
                    host, ns, model, tag = m.relative_to(mdir).parts
                    out.append(_ollama_entry(m, root, _ollama_display(host, ns, model, tag)))
    for root in lmstudio_dirs(env):
        if _isdir(root):
            for repo in sorted(p for p in root.glob("*/*") if p.is_dir()):
                mmproj = tuple(sorted(p for p in repo.glob("*.gguf") if _is_projector(p)))
                for f in sorted(repo.glob("*.gguf")):
                    if not _is_projector(f) and not re.search(r"-0000[2-9]-of-|-000[1-9]\d-of-", f.name):
                        out.append(LocalModel(f"{repo.parent.name}/{repo.name}/{f.name}", "lm-studio", "gguf",
                                              f, _size(f) + sum(_size(x) for x in mmproj), root, extra=mmproj))
    for root in llamacpp_dirs(env):
        if _isdir(root):
            named = set()
            for label, f in _llamacpp_manifests(root):
                named.add(f)
                out.append(LocalModel(label, "llama.cpp", "gguf", f, _size(f), root))
            for f in sorted(root.glob("*.gguf")):
                if f not in named and not _is_projector(f):
                    out.append(LocalModel(f.name, "llama.cpp", "gguf", f, _size(f), root))
            for p in sorted(_entries(root)):
                if is_hf_repo_folder(p):
                    out.append(_hf_entry(p, root))
    return out
