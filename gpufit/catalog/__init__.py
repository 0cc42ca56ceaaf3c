"""The catalog: GPU specs, model architectures and quantization formats, loaded from TOML.

`load_catalog()` reads the built-in files in `data/` (once per process) plus any user additions, and
returns a `Catalog` with lookups that raise UsageError with "did you mean" for unknown names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import CatalogError, unknown
from .loader import load_file
from .types import GpuSpec, ModelSpec, OllamaTag, QuantFormat

DATA_DIR = Path(__file__).parent / "data"
BUILTIN_FILES = ("gpus.toml", "models.toml", "quants.toml", "ollama_tags.toml")

__all__ = ["Catalog", "GpuSpec", "ModelSpec", "OllamaTag", "QuantFormat", "load_catalog", "normalize_name"]


def normalize_name(s: str) -> str:
    """Fold a name for matching: lowercase, drop 'nvidia', spaces/underscores to '-'."""
    s = s.strip().lower().replace("nvidia", "").replace("geforce", "")
    s = re.sub(r"[\s_/]+", "-", s)
    return re.sub(r"-+", "-", s).strip("-")


@dataclass
class Catalog:
    """GPU specs, model architectures and formats, with lookups by key, alias, NVML name and PCI id."""
    gpus: dict[str, GpuSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    quants: dict[str, QuantFormat] = field(default_factory=dict)
    ollama_tags: dict[str, OllamaTag] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    _tag_alias: dict[str, str] = field(default_factory=dict)
    _tag_file: dict[str, str] = field(default_factory=dict)
    _gpu_alias: dict[str, str] = field(default_factory=dict)
    _model_alias: dict[str, str] = field(default_factory=dict)
    _quant_alias: dict[str, str] = field(default_factory=dict)
    _nvml_name: dict[str, str] = field(default_factory=dict)
    _pci_id: dict[str, str] = field(default_factory=dict)
    _shared: dict[str, list[str]] = field(default_factory=dict)  # shared NVML name / PCI id -> keys

    def add_file(self, path: Path, text: str | None = None, override: bool = False) -> None:
        """Add the entries of one catalog file. A key already present is an error unless `override`
        (user additions in a config may replace a built-in entry on purpose)."""
        self.add_records(load_file(path, text), path, override)

    def add_records(self, loaded: dict[str, list], path: Path, override: bool = False) -> None:
        """Add validated records ({"gpu": [...], "model": [...], ...}, as `loader.load_file` or
        `loader.validate_tables` return them) that came from `path`: the one way entries join a catalog."""
        self.files.append(str(path))
        for rec in loaded["gpu"]:
            self._add(self.gpus, rec, path, override, "gpu")
            for alias in (rec.key, normalize_name(rec.name), *rec.aliases):
                self._alias(self._gpu_alias, normalize_name(alias), rec.key, path, override, "gpu")
            for n in rec.nvml_names:
                self._claim(self._nvml_name, n, rec.key, path, "NVML name")
            for p in rec.pci_device_ids:
                self._claim(self._pci_id, p.upper(), rec.key, path, "PCI device id")
            for sid in rec.shared_ids:
                ident = sid.upper() if re.fullmatch(r"[0-9A-Fa-f]{4}", sid) else sid
                keys = self._shared.setdefault(ident, [])
                if rec.key not in keys:
                    keys.append(rec.key)
        for rec in loaded["model"]:
            self._add(self.models, rec, path, override, "model")
            for alias in (rec.key, rec.hf_repo, *rec.aliases):
                if alias:
                    self._alias(self._model_alias, alias.lower(), rec.key, path, override, "model")
        for rec in loaded["quant"]:
            self._add(self.quants, rec, path, override, "quant")
            for alias in (rec.key, *rec.aliases):
                self._alias(self._quant_alias, alias.lower(), rec.key, path, override, "quant")
        for rec in loaded["ollama_tag"]:
            self._add(self.ollama_tags, rec, path, override, "ollama_tag")
            self._tag_file[rec.key] = str(path)
            for alias in (rec.key, *rec.aliases):
                self._alias(self._tag_alias, alias, rec.key, path, override, "ollama_tag")

    def copy(self) -> Catalog:
        """A catalog that can take additions without changing this one (the process-cached built-in
        catalog): the indexes are copied, the frozen records shared."""
        new = Catalog(**{f.name: type(getattr(self, f.name))(getattr(self, f.name)) for f in fields(self)})
        new._shared = {ident: list(keys) for ident, keys in self._shared.items()}
        return new

    def check_references(self) -> None:
        """Every Ollama tag names a catalog model and a format Ollama runs (checked once all files are
        in, since a user file may add the model a tag names)."""
        for tag in self.ollama_tags.values():
            where = f"[[ollama_tag]] key={tag.key!r}"
            if tag.model not in self.models:
                from ..errors import did_you_mean_hint

                raise CatalogError(self._tag_file[tag.key], f"model {tag.model!r} is not in the catalog"
                                   + did_you_mean_hint(tag.model, self.models), where)
            q = self.quants.get(tag.quant)
            if q is None or "ollama" not in q.engines:
                raise CatalogError(self._tag_file[tag.key], f"quant {tag.quant!r} is no format Ollama runs", where)

    @staticmethod
    def _add(table, rec, path, override, kind):
        if rec.key in table and not override:
            raise CatalogError(path, f"{kind} key {rec.key!r} is already defined", f"[[{kind}]] key={rec.key!r}")
        table[rec.key] = rec

    @staticmethod
    def _alias(index, alias, key, path, override, kind):
        """An alias names one entry. Built-in files may not reuse one; a user addition (override) may
        re-point it on purpose."""
        owner = index.get(alias)
        if owner is not None and owner != key and not override:
            raise CatalogError(path, f"alias {alias!r} already names {kind} {owner!r}", f"[[{kind}]] key={key!r}")
        index[alias] = key

    @staticmethod
    def _claim(index, ident, key, path, what):
        owner = index.get(ident)
        if owner is not None and owner != key:
            raise CatalogError(path, f"{what} {ident!r} is claimed by both {owner!r} and {key!r}", f"[[gpu]] key={key!r}")
        index[ident] = key

    # ---- lookups -------------------------------------------------------------------------------
    def has_model(self, name: str) -> bool:
        return name.strip().lower() in self._model_alias

    def has_quant(self, name: str) -> bool:
        return name.strip().lower() in self._quant_alias

    def gpu(self, name: str) -> GpuSpec:
        key = self._gpu_alias.get(normalize_name(name))
        if key is None:
            both = self._shared_by_name(name)
            if both:
                from ..errors import UsageError

                raise UsageError(f"GPU {name!r} names {len(both)} cards that differ in memory: "
                                 f"{', '.join(both)}; give one of them")
            raise unknown("GPU", name, self.gpus)
        return self.gpus[key]

    def model(self, name: str) -> ModelSpec:
        key = self._model_alias.get(name.strip().lower())
        if key is None:
            raise unknown("model", name, list(self.models))
        return self.models[key]

    def quant(self, name: str) -> QuantFormat:
        key = self._quant_alias.get(name.strip().lower())
        if key is None:
            raise unknown("quantization", name, list(self.quants))
        return self.quants[key]

    def kv_dtype(self, name: str) -> QuantFormat:
        q = self.quant(name)
        if not q.kv_cache:
            kv = [k for k, v in self.quants.items() if v.kv_cache]
            raise unknown("KV-cache dtype", name, kv) from None
        return q

    def _shared_by_name(self, name: str) -> list[str]:
        folded = normalize_name(name)
        return next((keys for ident, keys in self._shared.items()
                     if not re.fullmatch(r"[0-9A-F]{4}", ident) and normalize_name(ident) == folded), [])

    def match_gpu(self, nvml_name: str | None, pci_device_id: str | None = None,
                  memory_total: int | None = None) -> GpuSpec | None:
        """Match what NVML reports to a catalog entry: exact NVML name first, then the PCI device id
        (the upper 16 bits of NVML's pciDeviceId, e.g. 0x220410DE -> '2204'), then a name / id two cards
        share told apart by the reported memory total, then a folded name.
        Returns None when nothing matches; never guesses between two entries."""
        if nvml_name and nvml_name in self._nvml_name:
            return self.gpus[self._nvml_name[nvml_name]]
        dev = pci_device_key(pci_device_id)
        if dev and dev in self._pci_id:
            return self.gpus[self._pci_id[dev]]
        cands = self._shared.get(nvml_name or "") or self._shared.get(dev or "") or []
        if cands and memory_total:
            # nearest memory total; a card reports at most a few % under its catalog total
            best = min(cands, key=lambda k: abs(self.gpus[k].memory_bytes - memory_total))
            if abs(self.gpus[best].memory_bytes - memory_total) <= 0.125 * self.gpus[best].memory_bytes:
                return self.gpus[best]
        if cands:
            return None
        if nvml_name:
            key = self._gpu_alias.get(normalize_name(nvml_name))
            if key:
                return self.gpus[key]
        return None

    def ollama_tag(self, name: str) -> OllamaTag | None:
        """The library tag `name` names exactly (NAME:TAG or an alias such as NAME / NAME:latest)."""
        key = self._tag_alias.get(name.strip().lower())
        return self.ollama_tags[key] if key else None

    def resolve_ollama_tag(self, name: str) -> tuple[OllamaTag, str, bool] | None:
        """An Ollama model name -> (the library tag, the quant key it is served in, whether the name
        itself spelled the quant). NAME:TAG as listed; NAME:SIZE[-VARIANT]-QUANT (`llama3.1:8b-instruct-
        q8_0`, `gemma3:27b-it-fp16`) as that tag's weights in QUANT. None when `name` is no Ollama
        name (no ':' or a library name gpufit has no tags of, or a catalog alias); UsageError with
        "did you mean" for an unknown tag or quant suffix of a known library name."""
        n = name.strip().lower()
        family, colon, tag = n.partition(":")
        if not colon or family not in self.ollama_names():
            return None
        hit = self.ollama_tag(n)
        if hit is not None:
            return hit, hit.quant, False
        m = _OLLAMA_QUANT_SUFFIX.match(tag)
        if m is not None:
            runs = [k for k, q in self.quants.items() if "ollama" in q.engines and not q.tensor_only]
            key = self._quant_alias.get(m.group("quant"))
            if key is None or key not in runs:
                from ..errors import UsageError, did_you_mean_hint

                raise UsageError(f"unknown quantization {m.group('quant')!r} in Ollama tag {name!r}"
                                 + did_you_mean_hint(m.group("quant"), runs))
            base = m.group("base")
            for cand in (f"{family}:{base}", f"{family}:{base.split('-')[0]}"):
                hit = self.ollama_tag(cand)
                if hit is not None:
                    return hit, key, True
        if self.has_model(n):
            return None  # a catalog alias written like a tag: the model, in its native dtype
        raise unknown("Ollama tag", name, self.ollama_tag_names(family))

    def ollama_names(self) -> set[str]:
        """Library names with tags here ('qwen3', 'llama3.1', ...)."""
        return {k.partition(":")[0] for k in self._tag_alias if ":" in k}

    def ollama_tag_names(self, family: str | None = None) -> list[str]:
        """Every tag name (keys and aliases), those of one library name when `family` is given."""
        names = sorted(self._tag_alias)
        return [n for n in names if family is None or n.partition(":")[0] == family]

    def family_models(self, family: str) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.family == family]


def pci_device_key(pci_device_id) -> str | None:
    """'0x220410DE' / '220410DE' / 0x220410DE / '2204' -> '2204'. Vendor must be NVIDIA (10DE) if given."""
    if pci_device_id is None:
        return None
    if isinstance(pci_device_id, int):
        s = f"{pci_device_id:08X}"
    else:
        s = str(pci_device_id).strip().upper()
        if s.startswith("0X"):
            s = s[2:]
    if not re.fullmatch(r"[0-9A-F]{4}|[0-9A-F]{8}", s):
        return None
    if len(s) == 8:
        if s[4:] != "10DE":
            return None
        s = s[:4]
    return s


# NAME:SIZE[-VARIANT]-QUANT: the quant is the last '-'-part that looks like a ggml/float type
_OLLAMA_QUANT_SUFFIX = re.compile(r"^(?P<base>.+?)-(?P<quant>i?q\d[a-z0-9_]*|tq\d_\d|fp16|f16|bf16|fp32|f32|mxfp4)$")

_CACHE: dict[tuple, Catalog] = {}


def load_catalog(extra_files: tuple = ()) -> Catalog:
    """The built-in catalog plus user additions (validated like the built-in files). Cached per process."""
    key = tuple(str(p) for p in extra_files)
    if key not in _CACHE:
        cat = Catalog()
        for name in BUILTIN_FILES:
            path = DATA_DIR / name
            if path.exists():
                cat.add_file(path)
        for p in extra_files:
            cat.add_file(Path(p), override=True)
        cat.check_references()
        _CACHE[key] = cat
    return _CACHE[key]
