"""Exact inputs from a local model: a Hugging Face folder (config.json + safetensors) or a .gguf file.

`load_model_file(path)` reads only metadata — safetensors JSON headers, the GGUF key/value table and tensor
table — never the weights, and returns a `ModelFile`: the architecture as a `ModelSpec` plus the exact
bytes the weights occupy, per dtype and per transformer block. Anything wrong with the files raises
`ModelFileError` (exit code 6) naming the file and the place at fault.

`is_model_path(arg)` tells the CLI whether MODEL names a local model rather than a catalog key. It only
looks at the file system and imports nothing heavy; the `gguf` library (numpy) is imported only when a
.gguf file is actually read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..catalog.types import ModelSpec
from ..errors import ModelFileError

__all__ = ["ModelFile", "ModelFileError", "is_model_path", "load_model_file"]

GGUF_SUFFIX = ".gguf"
SAFETENSORS_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ModelFile:
    """What a local model file says: architecture, exact weight bytes per dtype and per layer."""
    spec: ModelSpec  # architecture; key = folder / file stem, source = the path
    weights_bytes: int  # exact sum of tensor bytes in the file(s)
    weights_source: str  # "safetensors headers (N files)" | "gguf tensor table" (| "... (N split files)")
    dtype_bytes: dict[str, int]  # bytes per stored dtype ("BF16", "F8_E4M3") / ggml type ("Q4_K", "Q6_K")
    quant: str | None  # best-matching gpufit quant key, or None when nothing maps (see `notes`)
    tensor_count: int
    layer_bytes: tuple[int, ...] = ()  # exact bytes of transformer block i (model.layers.i / blk.i)
    non_layer_bytes: int = 0  # embeddings, output head, final norm, vision tower, MTP layers
    notes: tuple[str, ...] = ()  # what was assumed or left out, for the output's notes
    warnings: tuple[str, ...] = ()  # what the user must know (a partly downloaded repo), for the warnings
    files: tuple[str, ...] = ()  # the files whose metadata was read


def is_model_path(arg: str) -> bool:
    """True if `arg` names an existing directory, or an existing file ending .gguf / .safetensors.

    A name that does not exist is not a model path: the caller treats it as a catalog key."""
    try:
        p = Path(arg).expanduser()
        if p.is_dir():
            return True
        return p.is_file() and p.suffix.lower() in (GGUF_SUFFIX, SAFETENSORS_SUFFIX)
    except (OSError, ValueError):  # name too long, embedded NUL, ...
        return False


def load_model_file(path: str | Path) -> ModelFile:
    """Read a local model's metadata. Raises ModelFileError on anything missing, invalid or unsupported."""
    p = Path(path).expanduser()
    if p.is_dir():
        from .hf import load_hf_folder

        return load_hf_folder(p)
    if not p.exists():
        raise ModelFileError(p, "no such file or folder")
    suffix = p.suffix.lower()
    if suffix == GGUF_SUFFIX:
        from .gguf_file import load_gguf

        return load_gguf(p)
    if suffix == SAFETENSORS_SUFFIX:
        from .hf import load_hf_folder

        return load_hf_folder(p.parent, only=p)
    raise ModelFileError(
        p, "not a model file: expected a folder with config.json + *.safetensors, or a .gguf file"
    )
