"""Read safetensors headers with the standard library — never the tensor data.

Format (https://github.com/huggingface/safetensors#format): 8 bytes little-endian u64 N, then N bytes
of UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the
data; offsets are relative to the first byte after the header and the tensors tile it without gaps.
We check what the `safetensors` library checks at load time, but say which file, tensor and number.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError
from ..units import MIB

# safetensors/src/tensor.rs MAX_HEADER_SIZE is 100_000_000; we allow 100 MiB. Larger is corrupt, and is
# rejected before anything is allocated.
MAX_HEADER_BYTES = 100 * MIB

# Bits per element of each safetensors dtype (safetensors/src/tensor.rs `Dtype::bitsize`).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,  # float4_e2m1, two per byte
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    elements: int
    nbytes: int
    begin: int  # data_offsets, relative to the end of the header


def _uint(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_header(path: Path) -> list[TensorEntry]:
    """The tensor table of one .safetensors file, validated against the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelFileError(
                    path, f"file is {size} bytes, too short for a safetensors header (8-byte length prefix)"
                )
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise ModelFileError(
                    path,
                    f"header length {n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit "
                    "(corrupt, or not a safetensors file)",
                    "header",
                )
            if 8 + n > size:
                raise ModelFileError(
                    path,
                    f"file is {size} bytes but the header claims {n} bytes after the 8-byte prefix "
                    "(truncated, or not a safetensors file)",
                    "header",
                )
            raw = f.read(n)
    except OSError as e:
        raise ModelFileError(path, f"cannot read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(path, f"header is not valid JSON: {e}", "header") from None
    except RecursionError:
        raise ModelFileError(path, "header is not valid JSON: nested too deep", "header") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, f"header is a JSON {type(header).__name__}, expected an object", "header")

    data_size = size - 8 - n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name!r}"
        if not isinstance(info, dict):
            raise ModelFileError(path, f"entry is a JSON {type(info).__name__}, expected an object", where)
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if missing:
            raise ModelFileError(path, f"entry has no {', '.join(missing)}", where)
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_BITS:
            raise ModelFileError(
                path, f"unknown dtype {dtype!r}; known: {', '.join(sorted(DTYPE_BITS))}", where
            )
        if not isinstance(shape, list) or not all(_uint(d) for d in shape):
            raise ModelFileError(path, f"shape {shape!r} is not a list of non-negative integers", where)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_uint(o) for o in offsets)):
            raise ModelFileError(path, f"data_offsets {offsets!r} is not [begin, end]", where)
        begin, end = offsets
        if end < begin:
            raise ModelFileError(path, f"data_offsets [{begin}, {end}] end before they begin", where)
        elements = 1
        for d in shape:
            elements *= d
        bits = elements * DTYPE_BITS[dtype]
        if bits % 8:
            raise ModelFileError(path, f"shape {shape} of {dtype} is {bits} bits, not whole bytes", where)
        if end - begin != bits // 8:
            raise ModelFileError(
                path,
                f"shape {shape} x {dtype} is {bits // 8} bytes but data_offsets [{begin}, {end}] "
                f"span {end - begin}",
                where,
            )
        entries.append(TensorEntry(name, dtype, tuple(shape), elements, end - begin, begin))

    entries.sort(key=lambda e: (e.begin, e.nbytes))
    if entries:
        last = max(entries, key=lambda e: e.begin + e.nbytes)
        if last.begin + last.nbytes > data_size:
            raise ModelFileError(
                path,
                f"file is {size} bytes but tensor {last.name!r} ends at {8 + n + last.begin + last.nbytes} "
                "(truncated: download incomplete?)",
            )
    expect = 0
    prev = None
    for e in entries:
        if e.begin != expect:
            what = f"overlaps tensor {prev.name!r}" if e.begin < expect else f"leaves a {e.begin - expect}-byte gap"
            raise ModelFileError(
                path,
                f"data_offsets [{e.begin}, {e.begin + e.nbytes}] out of order: expected to start at {expect}; "
                f"it {what}",
                f"tensor {e.name!r}",
            )
        expect = e.begin + e.nbytes
        prev = e
    return entries
