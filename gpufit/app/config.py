"""The gpufit.toml config: health thresholds, models to watch, user catalog additions.

Files read, later overriding earlier: `/etc/gpufit/gpufit.toml`, then `$XDG_CONFIG_HOME/gpufit/gpufit.toml`
(default `~/.config`); `--config FILE` names the one file to read instead. Merging: `[thresholds]` and
`[report]` key by key; a later file's `[[model]]` list replaces the earlier one; catalog additions
(`[catalog] files`, `[[catalog.gpu]]`, `[[catalog.model]]`, `[[catalog.quant]]`) accumulate, a later entry
replacing an earlier one with the same key.

```toml
[thresholds]
temperature_warn_c = 83
temperature_crit_c = 90

[report]
probe_timeout_s = 10

[[model]]
name = "llama3-8b"
quant = "int8"
context = 8192
engine = "vllm"

[catalog]
files = ["extra-gpus.toml"]        # relative to this config file

[[catalog.gpu]]                    # same keys as the built-in catalog's [[gpu]]
key = "my-card"
...
```

Every error is a ConfigError naming the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypedDict

from ..errors import CatalogError, ConfigError, UsageError, unknown_text
from ..units import MIB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    # tomli (typed) is installed only on 3.10; mypy checks this branch (python_version = "3.10") on newer
    # Pythons too, where it is absent
    import tomli as tomllib

if TYPE_CHECKING:
    from ..catalog import Catalog

SYSTEM_CONFIG = Path("/etc/gpufit/gpufit.toml")
MAX_CONFIG_BYTES = 16 * MIB  # a config with inline catalog entries is a few kB
from ..estimator.engines import ENGINES as _ENGINE_KEYS  # noqa: E402  (the one engine list)

ENGINES = ("auto", *_ENGINE_KEYS)
CATALOG_KINDS = ("gpu", "model", "quant")


@dataclass(frozen=True)
class Thresholds:
    """Health-check thresholds. Each default is named with where it comes from."""

    # NVIDIA data-centre boards start software slowdown near 85-90 C (nvidia-smi -q "GPU Slowdown Temp");
    # GeForce boards target ~83 C. Warn at the consumer target, crit near the slowdown point.
    temperature_warn_c: float = 83.0
    temperature_crit_c: float = 90.0
    # drawing >= 95 % of the enforced limit means the power cap is about to clip clocks
    power_near_limit_ratio: float = 0.95
    # any uncorrectable error since the driver loaded: the running job may have seen bad data (NVIDIA
    # "GPU Memory Error Management" guide: a volatile DBE means reset the GPU / drain the node)
    ecc_volatile_uncorrected_crit: int = 1
    # uncorrectable errors over the board's life: worth a look, not an outage
    ecc_aggregate_uncorrected_warn: int = 1
    # single-bit corrected errors are expected in small numbers; a burst points at failing memory
    ecc_volatile_corrected_warn: int = 100
    ecc_aggregate_corrected_warn: int = 1000
    # "busy": GPU utilisation at or above this percent. PCIe links and clocks are only judged when busy,
    # because idle GPUs downshift link generation and clocks on purpose to save power.
    busy_utilization_percent: float = 50.0
    # SM clock below this fraction of its max while busy = stuck low (not explained by load)
    clocks_low_ratio: float = 0.5
    # memory in use at or above this fraction of the card: the next job will not get its memory
    memory_held_warn_ratio: float = 0.9
    # host RAM available below these fractions of total (CPU offload and page cache need it)
    host_ram_available_warn_ratio: float = 0.10
    host_ram_available_crit_ratio: float = 0.05


@dataclass(frozen=True)
class ReportSettings:
    probe_timeout_s: float = 10.0  # NVML calls can hang on a wedged GPU; give up after this
    format: str | None = None  # default for --format (text | json | prometheus)
    output: str | None = None  # default for --output


@dataclass(frozen=True)
class ModelWatch:
    """One model the report checks: does it fit now, with how much headroom."""

    name: str
    quant: str | None = None
    context: int | None = None
    engine: str = "auto"
    batch: int = 1
    kv_dtype: str | None = None
    path: str = "<config>"  # where it was declared, for messages
    line: int | None = None


@dataclass(frozen=True)
class InlineCatalogEntry:
    kind: str  # gpu | model | quant
    table: dict[str, Any]  # the TOML table as tomllib read it
    path: str
    line: int | None


@dataclass(frozen=True)
class Config:
    thresholds: Thresholds = field(default_factory=Thresholds)
    report: ReportSettings = field(default_factory=ReportSettings)
    models: tuple[ModelWatch, ...] = ()
    catalog_files: tuple[str, ...] = ()
    catalog_inline: tuple[InlineCatalogEntry, ...] = ()
    files: tuple[str, ...] = ()  # config files actually read, in order

    def catalog(self) -> Catalog:
        """The built-in catalog plus this config's additions, validated like the built-in files."""
        return build_catalog(self)


# ---- locating files --------------------------------------------------------------------------------


def default_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return [SYSTEM_CONFIG, Path(xdg) / "gpufit" / "gpufit.toml"]


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                search: Iterable[str | os.PathLike[str]] | None = None) -> Config:
    """Read `path` alone if given (it must exist), else every default file that exists, merged."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(p, "no such config file" if not p.exists() else "not a regular file")
        return _merge([_read_one(p)])
    paths = default_paths(env) if search is None else [Path(p) for p in search]
    return _merge([_read_one(p) for p in paths if p.is_file()])


# ---- reading one file ------------------------------------------------------------------------------

_TOP = {"thresholds", "report", "model", "catalog"}
_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelWatch)} - {"path", "line"}
from ..render import formats_for  # noqa: E402  (the one list of output formats)

_REPORT_FORMATS = formats_for("report")


class _Part(TypedDict):
    """What one config file says, checked, before merging."""

    path: str
    thresholds: dict[str, Any]  # Thresholds field -> value
    report: dict[str, Any]  # ReportSettings field -> value
    models: list[ModelWatch] | None  # None: the file has no [[model]] (an empty list replaces the earlier ones)
    catalog_files: list[str]
    catalog_inline: list[InlineCatalogEntry]


class _Bad(Protocol):
    """Raise the ConfigError for `table`.`key` (of the `index`th [[table]]), with its line."""

    def __call__(self, message: str, table: str, key: str | None = None, index: int | None = None) -> NoReturn: ...


def _read_one(path: Path) -> _Part:
    from ..fsutil import read_data_file

    try:
        text = read_data_file(path, MAX_CONFIG_BYTES, ConfigError, "config file").decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line 3, column 7)"; keep its wording, put the line where we put lines
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"line {m.group(1)}" if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise ConfigError(path, f"invalid TOML: {msg}" + (f" (column {m.group(2)})" if m else ""), where) from None
    lines = _KeyLines(text)

    def bad(message: str, table: str, key: str | None = None, index: int | None = None) -> NoReturn:
        line = lines.find(table, key, index)
        name = ".".join(x for x in (table, key) if x)
        if index is not None:
            name = f"[[{table}]] #{index + 1}" + (f" {key}" if key else "")
        where = f"line {line}: {name}" if line else name or None
        raise ConfigError(path, message, where)

    for top in data:
        if top not in _TOP:
            bad(_unknown_key(top, _TOP, "section"), top)

    th = data.get("thresholds", {})
    if not isinstance(th, dict):
        bad("[thresholds] must be a table", "thresholds")
    thresholds = _check_fields(Thresholds, th, "thresholds", bad)
    merged_th = dataclasses.replace(Thresholds(), **thresholds)
    for lo, hi in (("temperature_warn_c", "temperature_crit_c"),
                   ("host_ram_available_crit_ratio", "host_ram_available_warn_ratio")):
        if getattr(merged_th, lo) > getattr(merged_th, hi):
            key = lo if lo in th else hi
            bad(f"{lo} ({getattr(merged_th, lo)}) must not exceed {hi} ({getattr(merged_th, hi)})", "thresholds", key)

    rep = data.get("report", {})
    if not isinstance(rep, dict):
        bad("[report] must be a table", "report")
    report = _check_fields(ReportSettings, rep, "report", bad)
    if "format" in rep and rep["format"] not in _REPORT_FORMATS:
        bad(f"format must be one of {', '.join(_REPORT_FORMATS)}, got {rep['format']!r}", "report", "format")
    if "probe_timeout_s" in rep and not rep["probe_timeout_s"] > 0:
        bad("probe_timeout_s must be positive", "report", "probe_timeout_s")

    watched: list[ModelWatch] | None = None
    if "model" in data:
        models = data["model"]
        if not isinstance(models, list):
            bad("models are an array of tables: write [[model]]", "model")
        watched = [_read_model(t, i, path, lines, bad) for i, t in enumerate(models)]
        seen: dict[tuple[str, str], int] = {}
        for i, w in enumerate(watched):
            # Prometheus series of a watched model are labelled {model, quant}: two entries with one pair
            # would write duplicate series, and node_exporter drops the whole textfile for that
            pair = (w.name, w.quant or "")
            if pair in seen:
                first = watched[seen[pair]].line
                bad(f"duplicate [[model]] name={w.name!r} quant={w.quant!r} (first at line {first}): its "
                    "Prometheus series are labelled by model and quant, so each pair may appear once",
                    "model", "name", i)
            seen[pair] = i

    cat = data.get("catalog", {})
    if not isinstance(cat, dict):
        bad("[catalog] must be a table", "catalog")
    for key in cat:
        if key not in ("files", *CATALOG_KINDS):
            bad(_unknown_key(key, ("files", *CATALOG_KINDS)), "catalog", key)
    files = cat.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        bad("files must be a list of paths (strings)", "catalog", "files")
    resolved: list[str] = []
    for f in files:
        fp = Path(f).expanduser()
        if not fp.is_absolute():
            fp = path.parent / fp
        if not fp.is_file():
            bad(f"catalog file {str(fp)!r} does not exist", "catalog", "files")
        resolved.append(str(fp))
    inline: list[InlineCatalogEntry] = []
    for kind in CATALOG_KINDS:
        entries = cat.get(kind, [])
        if not isinstance(entries, list) or not all(isinstance(t, dict) for t in entries):
            bad(f"write user {kind}s as [[catalog.{kind}]] tables", "catalog", kind)
        for i, t in enumerate(entries):
            inline.append(InlineCatalogEntry(kind, t, str(path), lines.find(f"catalog.{kind}", None, i)))
    # validate inline entries now, so the error names this file and line
    for entry in inline:
        _validate_inline(entry)
    return _Part(path=str(path), thresholds=thresholds, report=report, models=watched,
                 catalog_files=resolved, catalog_inline=inline)


def _read_model(t: object, i: int, path: Path, lines: _KeyLines, bad: _Bad) -> ModelWatch:
    if not isinstance(t, dict):
        bad("each [[model]] must be a table", "model", None, i)
    for key in t:
        if key not in _MODEL_KEYS:
            bad(_unknown_key(key, _MODEL_KEYS), "model", key, i)
    if "name" not in t:
        bad("missing required key 'name' (a catalog model key, alias, model folder or .gguf file)", "model", None, i)
    kw: dict[str, Any] = {}
    for key, kind in (("name", str), ("quant", str), ("kv_dtype", str), ("engine", str),
                      ("context", int), ("batch", int)):
        if key not in t:
            continue
        v = t[key]
        if kind is int and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**31):
            bad(f"{key} must be a positive integer below 2**31, got {v!r}", "model", key, i)
        if kind is str and (not isinstance(v, str) or not v.strip()):
            bad(f"{key} must be a non-empty string, got {v!r}", "model", key, i)
        kw[key] = v
    if kw.get("engine", "auto") not in ENGINES:
        bad(f"{unknown_text('engine', kw['engine'], ENGINES)} (one of {', '.join(ENGINES)})", "model", "engine", i)
    return ModelWatch(**kw, path=str(path), line=lines.find("model", None, i))


def _check_fields(cls: type[Thresholds] | type[ReportSettings], table: dict[str, Any], section: str,
                  bad: _Bad) -> dict[str, Any]:
    """Type-check a flat table against a dataclass's fields (numbers for numbers, strings for strings)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            bad(_unknown_key(key, fields), section, key)
        default = fields[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad(f"{key} must be a number, got {value!r}", section, key)
            if isinstance(value, int) and abs(value) >= 2**63:  # TOML integers are 64-bit (toml.io spec)
                bad(f"{key} is out of range, got {value!r}", section, key)
            if isinstance(value, float) and not math.isfinite(value):  # TOML has nan and inf; no
                # threshold or timeout can be either
                bad(f"{key} must be a finite number, got {value!r}", section, key)
            if value < 0:
                bad(f"{key} must not be negative, got {value!r}", section, key)
            if key.endswith("_ratio") and value > 1.5:
                bad(f"{key} is a ratio (0.95 = 95 %), got {value!r}", section, key)
            if isinstance(default, int) and isinstance(value, float):
                bad(f"{key} must be a whole number, got {value!r}", section, key)
            value = type(default)(value)
        elif not isinstance(value, str):
            bad(f"{key} must be a string, got {value!r}", section, key)
        out[key] = value
    return out


def _unknown_key(key: str, choices: Iterable[str], what: str = "key") -> str:
    return unknown_text(what, key, sorted(choices))


def _merge(parts: list[_Part]) -> Config:
    th: dict[str, Any] = {}
    rep: dict[str, Any] = {}
    models: tuple[ModelWatch, ...] = ()
    files: list[str] = []
    inline: list[InlineCatalogEntry] = []
    paths: list[str] = []
    for p in parts:
        paths.append(p["path"])
        th.update(p["thresholds"])
        rep.update(p["report"])
        if p["models"] is not None:
            models = tuple(p["models"])
        files += p["catalog_files"]
        inline += p["catalog_inline"]
    thresholds = dataclasses.replace(Thresholds(), **th)
    if thresholds.temperature_warn_c > thresholds.temperature_crit_c and paths:
        raise ConfigError(paths[-1], "after merging the config files, temperature_warn_c exceeds temperature_crit_c",
                          "thresholds.temperature_warn_c")
    return Config(thresholds=thresholds, report=dataclasses.replace(ReportSettings(), **rep), models=models,
                  catalog_files=tuple(files), catalog_inline=tuple(inline), files=tuple(paths))


# ---- finding the line of a key ---------------------------------------------------------------------


class _KeyLines:
    """Where a key sits in TOML text. tomllib keeps no positions, so scan the lines: track the current
    [table] / [[array]] header (and which occurrence of an array), match `key =` under it. Good enough
    for the flat files a config is; returns None when it cannot tell."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str):
        self.entries: list[tuple[str, int | None, str | None, int]] = []  # (table, occurrence, key, line)
        table: str = ""
        occ: int | None = None
        counts: dict[str, int] = {}
        for n, raw in enumerate(text.splitlines(), start=1):
            m = self._HEADER.match(raw)
            if m:
                table = self._norm(m.group(2))
                if m.group(1) == "[[":
                    occ = counts.get(table, 0)
                    counts[table] = occ + 1
                else:
                    occ = None
                self.entries.append((table, occ, None, n))
                continue
            km = re.match(r'^\s*("[^"]*"|\'[^\']*\'|[A-Za-z0-9_.-]+)\s*=', raw)
            if km:
                key = self._norm(km.group(1))
                # a dotted key `a.b = 1` under [t] is key b of table t.a
                t, k = table, key
                if "." in key:
                    head, k = key.rsplit(".", 1)
                    t = f"{table}.{head}" if table else head
                self.entries.append((t, occ, k, n))

    @staticmethod
    def _norm(s: str) -> str:
        return ".".join(part.strip().strip("\"'") for part in s.split("."))

    def find(self, table: str | None, key: str | None, index: int | None = None) -> int | None:
        table = table or ""
        for t, occ, k, n in self.entries:
            if t == table and k == key and (index is None or occ == index):
                return n
        if key is not None:  # key not found: fall back to its table's header
            return self.find(table, None, index)
        return None


# ---- catalog additions -----------------------------------------------------------------------------


def _validate_inline(e: InlineCatalogEntry) -> None:
    from ..catalog.loader import validate_entry

    where = f"[[catalog.{e.kind}]] key={e.table.get('key')!r}"
    try:
        validate_entry(e.kind, e.table, e.path, where)
    except CatalogError as err:
        line = f"line {e.line}: " if e.line else ""
        raise ConfigError(e.path, err.detail, f"{line}{err.where or where}") from None


def build_catalog(config: Config) -> Catalog:
    """Built-in catalog + `[catalog] files` + inline entries. Each config file's inline tables go through
    the loader's validation (`validate_tables`, as a catalog file's would) and join a copy of the cached
    catalog the way a file's records do (`Catalog.add_records`), replacing built-in entries of the same key."""
    from ..catalog import load_catalog
    from ..catalog.loader import validate_tables

    cat = load_catalog(tuple(config.catalog_files))
    if not config.catalog_inline:
        return cat
    cat = cat.copy()
    by_file: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in config.catalog_inline:
        by_file.setdefault(e.path, {}).setdefault(e.kind, []).append(e.table)
    for path, tables in by_file.items():
        try:
            cat.add_records(validate_tables(path, tables), Path(path), override=True)
        except CatalogError as err:
            raise ConfigError(path, err.detail, (err.where or "").replace("[[", "[[catalog.") or None) from None
    return cat


def check_models(config: Config, catalog: Catalog) -> None:
    """Every watched model and quant must be known (or a local model file); ConfigError names the line."""
    for m in config.models:
        where = f"line {m.line}: [[model]] " if m.line else "[[model]] "
        if not _is_model_file(m.name):
            try:
                catalog.model(m.name)
            except UsageError as e:
                raise ConfigError(m.path, str(e), where + "name") from None
        for key in ("quant", "kv_dtype"):
            value = getattr(m, key)
            if value is None:
                continue
            try:
                catalog.quant(value) if key == "quant" else catalog.kv_dtype(value)
            except UsageError as e:
                raise ConfigError(m.path, str(e), where + key) from None


def _is_model_file(name: str) -> bool:
    p = Path(name).expanduser()
    return name.endswith(".gguf") or p.exists() or "/" in name and p.is_absolute()
