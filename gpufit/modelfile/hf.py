"""A Hugging Face model folder: config.json + *.safetensors (single file or sharded with an index)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..catalog.types import ModelSpec
from ..errors import ModelFileError
from ..units import MIB
from . import ModelFile
from .common import group_layers, model_key
from .hf_config import build_spec, native_from_config, quant_from_config, read_config
from .st_header import TensorEntry, read_header

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# transformer block i of the language model; vision-tower blocks ("vision_tower...layers.N") do not match
BLOCK_RE = re.compile(r"^(?:model\.language_model\.|language_model\.model\.|model\.)?layers\.(\d+)\.")

# stored dtype -> gpufit quant key, for a checkpoint without quantization_config
_DTYPE_QUANT = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F8_E4M3": "fp8", "F8_E5M2": "fp8"}
_FLOAT_DTYPES = {"BF16", "F16", "F32", "F64"}


def _shards(folder: Path, allow_missing: bool = False
            ) -> tuple[list[Path], dict[str, str] | None, Path | None, list[str], int | None]:
    """The safetensors files that make up the model, the index's weight_map when there is one, the shards
    it lists that are absent (only with `allow_missing`; else absent shards are an error) and the
    index's metadata.total_size."""
    index = folder / INDEX_NAME
    if index.is_file():
        from ..fsutil import read_data_file

        # one line per tensor: far below this bound for any model; it only keeps a device or a huge file out
        raw = read_data_file(index, 256 * MIB, ModelFileError, "safetensors index")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ModelFileError(index, f"not valid JSON: {e}") from None
        except RecursionError:
            raise ModelFileError(index, "not valid JSON: nested too deep") from None
        wm = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
            raise ModelFileError(index, "expected a non-empty weight_map of tensor name -> shard file", "weight_map")
        files, missing = [], []
        for shard in sorted(set(wm.values())):
            p = folder / shard
            if not p.is_file():
                if not allow_missing:
                    raise ModelFileError(index, f"shard {shard} is listed but missing from {folder}", "weight_map")
                missing.append(shard)
                continue
            files.append(p)
        meta = data.get("metadata") if isinstance(data, dict) else None
        total = meta.get("total_size") if isinstance(meta, dict) else None
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total <= 0):
            raise ModelFileError(index, f"metadata.total_size = {total!r}, expected a positive integer",
                                 "metadata.total_size")
        return files, wm, index, missing, total
    if (folder / SINGLE_NAME).is_file():
        return [folder / SINGLE_NAME], None, None, [], None
    # Mistral repos ship consolidated*.safetensors (mistral-inference layout) beside the HF files
    files = sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith("consolidated"))
    return files, None, None, [], None


def _label(folder: Path) -> tuple[str, str | None]:
    """Display name and HF repo id. In the Hugging Face cache (models--ORG--NAME/snapshots/<commit>) the
    folder's own name is a commit hash, so the repo id is taken from the cache path."""
    folder = folder.resolve()
    cache = folder.parent.parent.name
    if folder.parent.name == "snapshots" and cache.startswith("models--"):
        repo = cache.removeprefix("models--").replace("--", "/")
        return repo.rsplit("/", 1)[-1], repo
    return folder.name, None


def load_hf_folder(folder: Path, only: Path | None = None, allow_missing: bool = False) -> ModelFile:
    """Read config.json and every shard's header; `only` restricts the weights to that one file.

    With `allow_missing` (a partly downloaded repo), shards the index lists but the folder lacks are a
    warning naming them, and the weights are the index's metadata.total_size: the size of the whole set."""
    config = folder / "config.json"
    if not config.is_file():
        hint = ""
        if any(folder.glob("*.gguf")):
            hint = " (for a GGUF model, pass the .gguf file itself)"
        raise ModelFileError(folder, f"no config.json in {folder}{hint}")
    hc = read_config(config)

    missing: list[str] = []
    total_size = None
    if only is not None:
        files, weight_map, index = [only], None, None
    else:
        files, weight_map, index, missing, total_size = _shards(folder, allow_missing)
    if missing and total_size is None:
        raise ModelFileError(index, f"{len(missing)} shard(s) missing ({', '.join(missing)}) and the index has "
                             "no metadata.total_size to size the whole set: finish the download",
                             "metadata.total_size")
    if not files and not missing:
        raise ModelFileError(folder, f"no *.safetensors weights in {folder} (config.json is there)")

    entries: list[TensorEntry] = []
    seen: dict[str, Path] = {}
    for f in files:
        for e in read_header(f):
            if e.name in seen:
                raise ModelFileError(f, f"tensor {e.name!r} is also in {seen[e.name].name}", f"tensor {e.name!r}")
            seen[e.name] = f
            entries.append(e)
    if weight_map is not None:
        for tname, shard in weight_map.items():
            if shard in missing:
                continue
            if seen.get(tname) != folder / shard:
                raise ModelFileError(
                    index, f"tensor {tname!r} is listed in shard {shard} but that shard's header has no such tensor",
                    "weight_map",
                )
    if not entries and not missing:
        raise ModelFileError(files[0], "no tensors in the safetensors header")

    notes: list[str] = []
    dtype_bytes: dict[str, int] = {}
    for e in entries:
        dtype_bytes[e.dtype] = dtype_bytes.get(e.dtype, 0) + e.nbytes
    weights = sum(dtype_bytes.values())
    warnings: list[str] = []
    if missing:
        warnings.append(f"incomplete download: {len(missing)} of {len(missing) + len(files)} shards missing from "
                        f"{folder} ({', '.join(missing)}); weights sized from {INDEX_NAME} metadata.total_size "
                        f"({total_size} bytes), {weights} of them present")
        weights = total_size

    qc = hc.top.get("quantization_config") or hc.text.get("quantization_config")
    if qc is not None:
        quant, qnotes = quant_from_config(config, qc)
        notes += qnotes
    else:
        floats = {d: b for d, b in dtype_bytes.items() if d in _DTYPE_QUANT}
        quant = _DTYPE_QUANT[max(floats, key=floats.get)] if floats else None
    native = native_from_config(hc, quant) or (quant if quant in ("bf16", "fp16", "fp32") else None) or "bf16"

    names = {e.name for e in entries} | set(weight_map or ())
    if only is not None and (folder / INDEX_NAME).is_file():
        # one shard of a set: the index still tells which tensors exist (lm_head, q_proj.bias)
        names |= set(_shards(folder, True)[1] or ())
    tie = not any(n.endswith("lm_head.weight") for n in names)
    attn_bias = any(BLOCK_RE.match(n) and n.endswith(("q_proj.bias", "qkv_proj.bias")) for n in names)
    if qc is None and not missing and all(e.dtype in _FLOAT_DTYPES for e in entries):
        params, params_source = sum(e.elements for e in entries), "element count of the safetensors headers"
    else:
        params, params_source = None, None  # packed / scaled tensors: element counts are not parameters

    label, repo = _label(folder)
    spec, snotes = build_spec(
        config, hc, key=model_key(label), name=label, source=str(only or folder), tie=tie, attn_bias=attn_bias,
        native_dtype=native, params=params, params_source=params_source, hf_repo=repo,
    )
    notes += snotes
    if only is not None and (folder / INDEX_NAME).is_file():
        warnings.append(f"only {only.name} was read; {INDEX_NAME} lists the full set of shards: pass the folder")
    layer_bytes, rest, lnotes = group_layers(((e.name, e.nbytes) for e in entries), BLOCK_RE, spec.layers)
    notes += lnotes
    return ModelFile(
        spec=spec,
        weights_bytes=weights,
        weights_source=f"safetensors headers ({len(files)} file{'s' if len(files) != 1 else ''})",
        dtype_bytes=dtype_bytes,
        quant=quant,
        tensor_count=len(entries),
        layer_bytes=layer_bytes,
        non_layer_bytes=rest,
        notes=tuple(notes),
        warnings=tuple(warnings),
        files=tuple(str(f) for f in [config, *([index] if index else []), *files]),
    )


def load_hf_config_only(config: Path) -> tuple["ModelSpec", str | None, list[str]]:
    """A config.json with no weights beside it: the architecture alone. Returns (spec, quant, notes): the
    quant from quantization_config (None: plan with --quant, or the torch_dtype that is the spec's native
    dtype). Tied head and q/k/v bias come from the config's keys, else the transformers class defaults."""
    hc = read_config(config)
    notes: list[str] = []
    qc = hc.top.get("quantization_config") or hc.text.get("quantization_config")
    quant = None
    if qc is not None:
        quant, qnotes = quant_from_config(config, qc)
        notes += qnotes
    native = native_from_config(hc, quant) or "bf16"
    if hc.torch_dtype is None and native == "bf16":
        notes.append(f"{config.name} names no torch_dtype: bf16 assumed as the native dtype")
    tie = hc.text.get("tie_word_embeddings", hc.top.get("tie_word_embeddings", hc.arch.tie_default))
    bias = hc.text.get("attention_bias", hc.arch.bias_default)
    if hc.model_type in ("qwen2", "qwen2_moe"):
        bias = True
    label, repo = _label(config.parent)
    if config.name != "config.json":  # my-model.json: the file names the model, not its folder
        label, repo = config.stem, None
    spec, snotes = build_spec(
        config, hc, key=model_key(label), name=label, source=str(config), tie=bool(tie), attn_bias=bool(bias),
        native_dtype=native, params=None, params_source=None, hf_repo=repo,
    )
    notes += snotes
    return spec, quant, notes
