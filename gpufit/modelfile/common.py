"""Helpers shared by the safetensors and GGUF readers: model keys and per-block byte grouping."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Bounds on what model metadata may claim. Past them a file is corrupt or hostile: the largest published
# models have 126 layers (Llama 3.1 405B) and a 262,208-token vocabulary (Gemma 3, see hf_config.py), and
# engines keep shapes in 32-bit ints. Per-layer tables are built, so layers get a smaller bound.
MAX_LAYERS = 10_000
MAX_SIZE_INT = 2**31 - 1


def short(v) -> str:
    """A value for a message: a 400-digit number or a long list is not repeated whole."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**30:
        return f"a {len(str(abs(v)))}-digit number"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def model_key(name: str) -> str:
    """A catalog-style key from a folder or file name: lowercase, whitespace/underscores/slashes to '-'."""
    s = re.sub(r"[\s_/\\]+", "-", name.strip().lower())
    return re.sub(r"-+", "-", s).strip("-") or "model"


def group_layers(
    tensors: Iterable[tuple[str, int]], block_re: re.Pattern[str], n_layers: int
) -> tuple[tuple[int, ...], int, list[str]]:
    """Split (name, bytes) pairs into bytes per transformer block 0..n_layers-1 and everything else.

    A block index at or past `n_layers` (DeepSeek-V3's multi-token-prediction layer 61, which engines
    skip unless speculative decoding is on) is counted outside the layers and named in a note."""
    per = [0] * n_layers
    rest = 0
    extra: dict[int, int] = {}
    for name, nbytes in tensors:
        m = block_re.match(name)
        if m is None:
            rest += nbytes
            continue
        i = int(m.group(1))
        if i < n_layers:
            per[i] += nbytes
        else:
            extra[i] = extra.get(i, 0) + nbytes
            rest += nbytes
    notes = []
    if extra:
        idx = ", ".join(str(i) for i in sorted(extra))
        notes.append(
            f"tensors of block(s) {idx} lie past the {n_layers} layers the metadata declares "
            f"(e.g. a multi-token-prediction head): {sum(extra.values())} bytes counted outside the layers"
        )
    return tuple(per), rest, notes
