"""Load and validate catalog TOML: `[[gpu]]`, `[[model]]`, `[[quant]]` arrays of tables.

Each table's keys are the field names of the matching dataclass in `types.py`. Unknown keys, missing
required keys, wrong types and broken invariants raise CatalogError naming the file, the entry and the key.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TypedDict, TypeVar

from ..errors import CatalogError
from ..fsutil import read_record
from ..units import MIB
from .types import GpuSpec, ModelSpec, OllamaTag, QuantFormat

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
PathArg = str | os.PathLike[str]  # a catalog file's path, or a config's for its inline entries
Record = GpuSpec | ModelSpec | QuantFormat | OllamaTag
R = TypeVar("R", bound=Record)
TABLES: dict[str, type[Record]] = {"gpu": GpuSpec, "model": ModelSpec, "quant": QuantFormat,
                                   "ollama_tag": OllamaTag}
# an Ollama library name: NAME:TAG, both parts lowercase (ollama.com/library/NAME/tags)
OLLAMA_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*$")
# bump when validation rules change, so cached records validated by older rules are not reused
CACHE_RULES_VERSION = 8  # 8: Gemma 4 shapes, KV sharing, per-layer embeddings; 7: entries start with a CRC-32
MAX_CATALOG_BYTES = 64 * MIB  # the built-in files are ~160 kB together


class Records(TypedDict):
    """The validated entries of one catalog file, by table (a plain dict at run time)."""
    gpu: list[GpuSpec]
    model: list[ModelSpec]
    quant: list[QuantFormat]
    ollama_tag: list[OllamaTag]


def cache_dir() -> Path:
    """Where validated catalog files are cached: $GPUFIT_CACHE_DIR, else $XDG_CACHE_HOME/gpufit, else
    ~/.cache/gpufit."""
    env = os.environ.get("GPUFIT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpufit"


@functools.lru_cache(maxsize=None)
def _schema_tag() -> str:
    """Changes whenever a record class gains, loses or retypes a field, or the rules version moves."""
    desc = repr([(name, [(f.name, str(f.type)) for f in dataclasses.fields(cls)])
                 for name, cls in TABLES.items()]) + str(CACHE_RULES_VERSION)
    return f"{zlib.crc32(desc.encode()):08x}"


def _cache_entry(raw: bytes) -> Path:
    # content checksum + length + record schema: an edited file or changed code never hits old entries
    return cache_dir() / f"catalog-{zlib.crc32(raw):08x}-{len(raw)}-{_schema_tag()}.json"


def _rebuild(cls: type[R], rows: list[dict[str, Any]]) -> list[R]:
    """JSON rows as `_to_cache` wrote them -> records (JSON arrays back to the tuples the records hold)."""
    out: list[R] = []
    for d in rows:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        out.append(cls(**values))
    return out


def _from_cache(entry: Path) -> Records | None:
    """Records validated on an earlier run, rebuilt without parsing and validating the TOML again (tomllib
    and the checks cost more than the rest of a `plan`). The entry's first line is the CRC-32 of the JSON
    after it, as `_to_cache` wrote it: an entry changed on disk since (a hand edit, a value of the wrong
    type, a truncated file) does not match, is discarded — None, and the TOML is parsed anew and the entry
    rewritten — instead of failing every later run. The checksum costs ~0.1 ms; checking every value's
    type would cost more than the cache saves."""
    try:
        with open(entry, "rb") as f:
            head, _, payload = f.read().partition(b"\n")
        if head != f"{zlib.crc32(payload):08x}".encode():
            return None
        data = json.loads(payload)
        return Records(gpu=_rebuild(GpuSpec, data["gpu"]), model=_rebuild(ModelSpec, data["model"]),
                       quant=_rebuild(QuantFormat, data["quant"]),
                       ollama_tag=_rebuild(OllamaTag, data["ollama_tag"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def _rows(recs: Sequence[Record]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in recs]


def _to_cache(entry: Path, out: Records) -> None:
    """Keep the validated records for the next run; a cache that cannot be written is no harm (a read-only
    home under a hardened unit): the file is just validated again next time."""
    from ..errors import WriteError
    from ..fsutil import write_atomic

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"gpu": _rows(out["gpu"]), "model": _rows(out["model"]), "quant": _rows(out["quant"]),
                              "ollama_tag": _rows(out["ollama_tag"])}).encode()
        write_atomic(entry, f"{zlib.crc32(payload):08x}\n".encode() + payload)
    except (OSError, WriteError, TypeError, ValueError):
        pass


def parse_toml(path: Path, text: str | None = None) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes CatalogError with the line tomllib reports. tomllib
    (tomli before 3.11) is imported only when a file must really be parsed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        # tomli (typed) is installed only under Python 3.10 (pyproject); mypy run from a newer venv with
        # the project's python_version 3.10 cannot find it there
        import tomli as tomllib
    try:
        if text is None:
            text = Path(path).read_text(encoding="utf-8")
        data: dict[str, Any] = tomllib.loads(text)  # typed by tomllib, and by tomli where it is installed
        return data
    except OSError as e:
        raise CatalogError(path, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise CatalogError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(path, f"invalid TOML: {e}") from None


def build_record(cls: type[R], table: dict[str, Any], path: PathArg, where: str) -> R:
    """One catalog table -> its record, type-checked by the record's hints (fsutil.read_record): an unknown
    key (with "did you mean"), a missing required key or a value of the wrong type is a CatalogError."""
    rec = read_record(cls, table, CatalogError, path, where)
    if not isinstance(rec, cls):  # read_record builds `cls` or raises; this tells the type checker so
        raise TypeError(f"read_record returned {type(rec).__name__}, not {cls.__name__}")
    return rec


def _check_invariants(rec: Record, path: PathArg, where: str) -> None:
    def bad(msg: str) -> NoReturn:
        raise CatalogError(path, msg, where)

    if isinstance(rec, OllamaTag):
        for name in (rec.key, *rec.aliases):
            if not (OLLAMA_TAG_RE.match(name) or (name is not rec.key and KEY_RE.match(name))):
                bad(f"Ollama tag {name!r} must be NAME:TAG in lowercase (a bare NAME only as an alias)")
    elif not KEY_RE.match(rec.key):
        bad(f"key {rec.key!r} must be lowercase letters, digits, '.', '-' or '_'")
    if not rec.source.strip():
        bad("'source' must say where the facts come from")
    if isinstance(rec, GpuSpec):
        if rec.memory_bytes <= 0:
            bad(f"memory_bytes must be positive, got {rec.memory_bytes}")
        if rec.bandwidth_gbps <= 0:
            bad(f"bandwidth_gbps must be positive, got {rec.bandwidth_gbps}")
        if not re.match(r"^\d+\.\d+$", rec.compute_capability):
            bad(f"compute_capability must look like '8.6', got {rec.compute_capability!r}")
        for pci in rec.pci_device_ids:
            if not re.match(r"^[0-9A-F]{4}$", pci):
                bad(f"pci_device_ids entries are 4 upper-case hex digits, got {pci!r}")
        if rec.datasheet_memory_bytes is not None and rec.datasheet_memory_bytes <= 0:
            bad(f"datasheet_memory_bytes must be positive, got {rec.datasheet_memory_bytes}")
        if rec.datasheet_memory_bytes and rec.memory_bytes > rec.datasheet_memory_bytes * 1.01:
            bad(f"memory_bytes {rec.memory_bytes} (as reported) exceeds datasheet_memory_bytes "
                f"{rec.datasheet_memory_bytes}: a driver reports at most the board's memory")
        for sid in rec.shared_ids:
            if sid in rec.nvml_names or sid.upper() in rec.pci_device_ids:
                bad(f"shared_ids entry {sid!r} is also claimed outright in nvml_names / pci_device_ids")
        if rec.vendor_class not in ("datacenter", "workstation", "geforce", "embedded"):
            bad(f"vendor_class must be datacenter|workstation|geforce|embedded, got {rec.vendor_class!r}")
    elif isinstance(rec, ModelSpec):
        for k in ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab", "max_context"):
            if getattr(rec, k) <= 0:
                bad(f"{k} must be positive, got {getattr(rec, k)}")
        if rec.heads % rec.kv_heads:
            bad(f"heads ({rec.heads}) must be a multiple of kv_heads ({rec.kv_heads})")
        if not 0 <= rec.sliding_layers <= rec.layers:
            bad(f"sliding_layers must be between 0 and layers ({rec.layers})")
        if rec.sliding_layers and not rec.sliding_window:
            bad("sliding_layers set without sliding_window")
        if rec.chunked_layers and not rec.attention_chunk:
            bad("chunked_layers set without attention_chunk")
        if rec.linear_layers and not rec.linear_state_elems:
            bad("linear_layers set without linear_state_elems")
        lin_shape = (rec.linear_key_heads, rec.linear_value_heads, rec.linear_key_head_dim,
                     rec.linear_value_head_dim)
        if any(v is not None for v in lin_shape) and not (all(v and v > 0 for v in lin_shape)
                                                          and rec.linear_conv_kernel):
            bad("linear_key_heads, linear_value_heads, linear_key_head_dim, linear_value_head_dim and "
                "linear_conv_kernel go together, each positive")
        if rec.linear_key_heads and not rec.linear_layers:
            bad("linear-attention shape given but linear_layers is 0")
        mamba = (rec.mamba_heads, rec.mamba_head_dim, rec.mamba_state, rec.mamba_groups)
        if any(v is not None for v in mamba):
            if not all(v and v > 0 for v in mamba) or not rec.linear_conv_kernel:
                bad("mamba_heads, mamba_head_dim, mamba_state, mamba_groups and linear_conv_kernel go together, "
                    "each positive")
            if not rec.linear_layers or rec.linear_key_heads:
                bad("a Mamba2 shape needs linear_layers and excludes the DeltaNet linear_key_heads shape")
        idx = (rec.indexer_heads, rec.indexer_head_dim, rec.indexer_topk)
        if any(v is not None for v in idx) and not (all(v and v > 0 for v in idx) and rec.q_lora_rank):
            bad("indexer_heads, indexer_head_dim and indexer_topk go together, each positive, on an MLA model "
                "with q_lora_rank (the indexer's queries come from the q latent)")
        if rec.linear_conv_kernel and not (rec.linear_key_heads or rec.mamba_heads):
            bad("linear_conv_kernel given without a DeltaNet or Mamba2 shape")
        if rec.mlp_only_layers and not rec.single_sublayer:
            bad("mlp_only_layers needs single_sublayer (layers that are one sublayer each, as in Nemotron-H)")
        if rec.sliding_layers + rec.chunked_layers + rec.linear_layers + rec.mlp_only_layers > rec.layers:
            bad(f"sliding_layers + chunked_layers + linear_layers exceed layers ({rec.layers})")
        for k in ("global_head_dim", "global_kv_heads", "per_layer_embed_vocab"):
            if getattr(rec, k) is not None and getattr(rec, k) <= 0:
                bad(f"{k} must be positive, got {getattr(rec, k)}")
        if rec.global_kv_heads and rec.heads % rec.global_kv_heads:
            bad(f"heads ({rec.heads}) must be a multiple of global_kv_heads ({rec.global_kv_heads})")
        attn_full = (rec.layers - rec.sliding_layers - rec.chunked_layers - rec.linear_layers
                     - rec.mlp_only_layers)
        if not (0 <= rec.kv_shared_sliding <= min(rec.kv_shared_layers, rec.sliding_layers)
                and 0 <= rec.kv_shared_layers - rec.kv_shared_sliding <= attn_full):
            bad(f"kv_shared_layers ({rec.kv_shared_layers}) and kv_shared_sliding ({rec.kv_shared_sliding}) must "
                f"count sliding ({rec.sliding_layers}) and full-attention ({attn_full}) layers the model has")
        if rec.kv_shared_double_mlp and not rec.kv_shared_layers:
            bad("kv_shared_double_mlp needs kv_shared_layers")
        if rec.altup_inputs < 0 or rec.laurel_rank < 0:
            bad("altup_inputs and laurel_rank cannot be negative")
        if rec.per_layer_embed_dim < 0 or (rec.per_layer_embed_vocab and not rec.per_layer_embed_dim):
            bad("per_layer_embed_vocab needs a positive per_layer_embed_dim")
        if rec.single_sublayer and rec.experts and rec.dense_layers > rec.mlp_only_layers:
            bad("dense_layers of a single-sublayer MoE model count its MLP-only layers: at most mlp_only_layers")
        if rec.experts and not (0 < rec.experts_active <= rec.experts and rec.moe_intermediate):
            bad("a MoE model needs 0 < experts_active <= experts and moe_intermediate")
        if rec.params is not None and rec.params <= 0:
            bad("params must be positive")
        if rec.active_params is not None and rec.params and rec.active_params > rec.params:
            bad("active_params cannot exceed params")
        if rec.mlp not in ("gated", "plain"):
            bad(f"mlp must be 'gated' or 'plain', got {rec.mlp!r}")
        if rec.kv_lora_rank is not None and rec.qk_rope_head_dim is None:
            bad("an MLA model needs qk_rope_head_dim with kv_lora_rank")
    elif isinstance(rec, QuantFormat):
        if rec.bits_per_weight <= 0:
            bad(f"bits_per_weight must be positive, got {rec.bits_per_weight}")
        if rec.block_size and rec.type_size_bytes:
            derived = rec.type_size_bytes * 8 / rec.block_size
            if abs(derived - rec.bits_per_weight) > 1e-9:
                bad(f"bits_per_weight {rec.bits_per_weight} != type_size_bytes*8/block_size = {derived}")
        if rec.kind not in ("float", "int", "gguf"):
            bad(f"kind must be float|int|gguf, got {rec.kind!r}")


def load_file(path: Path, text: str | None = None, cache: bool = True) -> Records:
    """Load one catalog file. Returns {"gpu": [...], "model": [...], "quant": [...]}.

    A file read from disk is validated once per content: the validated records are cached (see
    `_cache_entry`) and rebuilt from there on later runs."""
    entry: Path | None = None
    if text is None and cache:
        from ..fsutil import read_data_file

        raw = read_data_file(path, MAX_CATALOG_BYTES, CatalogError, "catalog file")
        entry = _cache_entry(raw)
        hit = _from_cache(entry)
        if hit is not None:
            return hit
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CatalogError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    out = validate_tables(path, parse_toml(path, text))
    if entry is not None:
        _to_cache(entry, out)
    return out


def validate_entry(kind: str, table: dict[str, Any], path: PathArg, where: str) -> Record:
    """One [[kind]] table -> its record: typed by the record's hints and its invariants checked."""
    rec = build_record(TABLES[kind], table, path, where)
    _check_invariants(rec, path, where)
    return rec


def _validate_table(path: PathArg, data: dict[str, Any], name: str, cls: type[R]) -> list[R]:
    """The [[name]] entries of a parsed file -> their records, each validated, keys unique in the file."""
    entries = data.get(name, [])
    if not isinstance(entries, list):
        raise CatalogError(path, f"[{name}] must be an array of tables: write [[{name}]]")
    seen: set[str] = set()
    out: list[R] = []
    for i, table in enumerate(entries):
        where = f"[[{name}]] #{i + 1}" + (f" key={table.get('key')!r}" if isinstance(table, dict) else "")
        if not isinstance(table, dict):
            raise CatalogError(path, "entry must be a table", where)
        rec = build_record(cls, table, path, where)
        _check_invariants(rec, path, where)
        if rec.key in seen:
            raise CatalogError(path, f"duplicate key {rec.key!r}", where)
        seen.add(rec.key)
        out.append(rec)
    return out


def validate_tables(path: PathArg, data: dict[str, Any]) -> Records:
    """A parsed catalog file ({"gpu": [table, ...], ...}: a TOML file, or a config's inline entries) ->
    its records, each entry validated, keys unique within the file. CatalogError names the entry."""
    for top in data:
        if top not in TABLES:
            raise CatalogError(path, f"unknown table [[{top}]]; expected one of {', '.join(TABLES)}")
    # one table after the other, in TABLES' order, so the first bad entry reported is the same as before
    return Records(gpu=_validate_table(path, data, "gpu", GpuSpec),
                   model=_validate_table(path, data, "model", ModelSpec),
                   quant=_validate_table(path, data, "quant", QuantFormat),
                   ollama_tag=_validate_table(path, data, "ollama_tag", OllamaTag))
