"""Parse a GGUF file's header — metadata and tensor table — with every count bounds-checked.

Why not `gguf.GGUFReader`: it builds a numpy view per array element, so a real tokenizer (152k tokens,
scores, types, 150k merges) takes ~9 s to open, where this walk takes ~0.2 s; and on a corrupt file it
trusts the counts it reads — a numeric array claiming 2**62 elements keeps appending empty reads past the
end of the file. This parser checks every count and length against the bytes left, names the key or
tensor where the file went wrong, and never touches the tensor data. The `gguf` package still supplies
the facts (ggml block sizes, type and file-type names); tests cross-check the byte sums with GGUFReader.

Layout (ggml/docs/gguf.md, versions 2 and 3): magic "GGUF", u32 version, u64 tensor_count, u64 kv_count,
kv_count x (string key, u32 value type, value), tensor_count x (string name, u32 n_dims, u64 dims[n_dims],
u32 ggml type, u64 offset), padding to general.alignment, data. Strings are u64 length + UTF-8 bytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32  # ggml/docs/gguf.md: general.alignment, default 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 4  # arrays of arrays are allowed by the spec; no model nests deeper than one level
MAX_KEPT_ARRAY = 65536  # numeric arrays up to this long keep their values (per-layer counts, patterns)

# gguf_metadata_value_type -> struct code of the scalar types
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_KV_MIN = 8 + 4 + 1  # key length, value type, smallest value
_TENSOR_MIN = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


@dataclass(frozen=True)
class GgufArray:
    item_type: int  # gguf value type of the elements
    count: int
    values: tuple | None  # kept for numeric arrays up to MAX_KEPT_ARRAY long, else None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: ne[0] (the contiguous dimension) first
    ggml_type: int
    offset: int  # relative to the data section
    n_elements: int
    n_bytes: int  # n_elements / block size x bytes per block, as GGUFReader computes it


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict  # key -> int | float | bool | str | GgufArray
    tensors: tuple[TensorInfo, ...]
    data_start: int
    file_size: int


class _Cursor:
    def __init__(self, path: Path, buf, size: int):
        self.path, self.buf, self.size, self.pos = path, buf, size, 0
        self.context = "header"

    def fail(self, what: str):
        raise ModelFileError(self.path, f"truncated or corrupt GGUF at byte {self.pos} of {self.size}: {what}",
                             self.context)

    def take(self, n: int) -> bytes:
        if n > self.size - self.pos:
            self.fail(f"needs {n} more bytes, {self.size - self.pos} left")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, code: str):
        return struct.unpack("<" + code, self.take(struct.calcsize(code)))[0]

    def string(self) -> bytes:
        return self.take(self.unpack("Q"))


def _value(c: _Cursor, vtype: int, depth: int = 0):
    if vtype in _SCALAR:
        return c.unpack(_SCALAR[vtype])
    if vtype == _STRING:
        return c.string().decode("utf-8", "replace")
    if vtype != _ARRAY:
        c.fail(f"unknown value type {vtype}")
    if depth >= MAX_ARRAY_DEPTH:
        c.fail("arrays nested too deep")
    itype = c.unpack("I")
    count = c.unpack("Q")
    if itype in _SCALAR:
        least = struct.calcsize(_SCALAR[itype])
    elif itype in (_STRING, _ARRAY):
        least = 8 if itype == _STRING else 12
    else:
        c.fail(f"array of unknown value type {itype}")
    if count * least > c.size - c.pos:
        c.fail(f"array of {count} elements cannot fit in the {c.size - c.pos} bytes left")
    if itype in _SCALAR:
        raw = c.take(count * least)
        kept = struct.unpack(f"<{count}{_SCALAR[itype]}", raw) if count <= MAX_KEPT_ARRAY else None
        return GgufArray(itype, count, kept)
    for _ in range(count):
        if itype == _STRING:
            c.string()  # token strings: only the count matters here
        else:
            _value(c, itype, depth + 1)
    return GgufArray(itype, count, None)


def read_gguf_header(path: Path, type_sizes: dict[int, tuple[int, int]]) -> GgufHeader:
    """Parse `path`'s header; `type_sizes` is ggml type -> (block size, bytes per block)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise ModelFileError(path, f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
            if size < 24:
                raise ModelFileError(path, f"file is {size} bytes, too short for a GGUF header (24 bytes)")
            # mmap: pages are read on demand, so only the header region is ever touched
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf, size, type_sizes)
    except OSError as e:
        raise ModelFileError(path, f"cannot read: {e.strerror or e}") from None


def _parse(path: Path, buf, size: int, type_sizes) -> GgufHeader:
    c = _Cursor(path, buf, size)
    c.take(4)
    version = c.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        swapped = "; a big-endian file?" if version & 0xFFFF == 0 else ""
        raise ModelFileError(path, f"GGUF version {version} is not supported (supported: 2, 3){swapped}", "header")
    n_tensors, n_kv = c.unpack("Q"), c.unpack("Q")
    if n_kv * _KV_MIN + n_tensors * _TENSOR_MIN > size - c.pos:
        raise ModelFileError(
            path, f"truncated or corrupt GGUF: the header claims {n_kv} metadata keys and {n_tensors} tensors, "
            f"the file is only {size} bytes", "header")
    meta: dict = {}
    for i in range(n_kv):
        c.context = f"metadata entry {i}"
        key = c.string().decode("utf-8", "replace")
        c.context = f"metadata key {key!r}"
        if key in meta:
            c.fail("key appears twice")
        meta[key] = _value(c, c.unpack("I"))
    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelFileError(path, f"general.alignment {alignment!r} is not a power of two", "general.alignment")
    infos: list[TensorInfo] = []
    names: set[str] = set()
    for i in range(n_tensors):
        c.context = f"tensor info {i}"
        name = c.string().decode("utf-8", "replace")
        c.context = f"tensor {name!r}"
        if name in names:
            c.fail("tensor name appears twice")
        names.add(name)
        n_dims = c.unpack("I")
        if n_dims > MAX_DIMS:
            c.fail(f"{n_dims} dimensions (ggml allows {MAX_DIMS})")
        dims = tuple(c.unpack("Q") for _ in range(n_dims))
        gtype, offset = c.unpack("I"), c.unpack("Q")
        if gtype not in type_sizes:
            c.fail(f"unknown ggml type {gtype}")
        block, type_size = type_sizes[gtype]
        n = 1
        for d in dims:
            n *= d
        if n % block:
            c.fail(f"{n} elements is not a multiple of the type's block size {block}")
        infos.append(TensorInfo(name, dims, gtype, offset, n, n // block * type_size))
    data_start = -(-c.pos // alignment) * alignment
    for t in infos:
        end = data_start + t.offset + t.n_bytes
        if end > size:
            raise ModelFileError(path, f"file is {size} bytes but tensor {t.name!r} ends at {end} "
                                 "(truncated: download incomplete?)")
    return GgufHeader(version, meta, tuple(infos), data_start, size)
