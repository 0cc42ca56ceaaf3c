"""The one way gpufit writes a file, and the one way it reads a data file.

Writes (`write_atomic`): `--output`, `--save` and the catalog cache all go through here. The target must be
a regular file or not exist yet; an empty path, a folder, a device node (`/dev/stdout`, `/dev/null`), a FIFO,
a socket or a symlink (to anything, a regular file included) is refused before anything is written, with
`WriteError` (exit 2: the path is an option value the user can change). Symlinks are refused rather than
followed so that a root-run timer writing into a shared folder cannot be pointed at another file; give the
real path. The data goes to a temp file in the target's folder (a rename is atomic only within one file
system), is fsynced, and is renamed over the target, then the folder is fsynced: a reader sees the old
file or the new one, never a mix, and an interrupted run (Ctrl-C, SIGTERM) leaves no temp file behind.

Reads (`read_data_file`): snapshots and captures are read through here. Only a regular file is read, and
at most `limit` bytes of it, so `/dev/zero`, a FIFO or a folder never hangs or fills memory; each problem
is the caller's DataFileError subclass (exit 6), naming the file.

Records (`read_record`): what a parsed data file holds (a snapshot's JSON, a catalog or config TOML table)
becomes a frozen dataclass through here, checked against the class's type hints; a value of the wrong
type, a missing or unknown key is the caller's DataFileError subclass naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import stat
import typing
from pathlib import Path

from .errors import DataFileError, WriteError
from .units import MIB

DEFAULT_MODE = 0o644  # node_exporter reads the textfile as another user


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_writable_target(path) -> tuple[Path, int | None]:
    """Refuse a target that is not a regular file (or absent); return (path, mode of the existing file)."""
    text = os.fspath(path) if path is not None else ""
    if not str(text).strip():
        raise WriteError(repr(text), "an empty path names no file; give a file name, or '-' for stdout")
    p = Path(text)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p, None
    except OSError as e:
        raise WriteError(p, f"cannot write: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise WriteError(p, "is a symlink; gpufit does not write through symlinks: give the real path "
                         f"({os.path.realpath(p)})")
    if not stat.S_ISREG(st.st_mode):
        raise WriteError(p, f"is {_kind(st.st_mode)}, not a regular file; gpufit replaces only regular files")
    return p, stat.S_IMODE(st.st_mode)


def write_atomic(path, data: str | bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically (see the module doc). A new file gets `mode` (default 0644);
    an existing one keeps its permission bits unless `mode` is given. Raises WriteError."""
    import tempfile  # here, not at the top: every `plan` imports this module to read, few write

    target, old_mode = check_writable_target(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    folder = target.parent if str(target.parent) else Path(".")
    want = mode if mode is not None else (old_mode if old_mode is not None else DEFAULT_MODE)
    tmp = None
    try:
        # the temp name does not end in the target's suffix (.prom), so node_exporter never reads it
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fchmod(f.fileno(), want)  # mkstemp creates 0600
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise WriteError(target, f"cannot write: {e.strerror or e}") from None
    finally:  # also on KeyboardInterrupt / SIGTERM: never leave a temp file behind
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows opening a folder."""
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - some file systems refuse to open folders
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


def read_data_file(path, limit: int, error: type[DataFileError] = DataFileError, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else raises `error` (exit 6).

    The file is opened non-blocking and checked with fstat on the open descriptor, so a FIFO (even one
    swapped in after a check) never blocks and a device is never read."""
    text = os.fspath(path) if path is not None else ""
    if not str(text).strip():
        raise error(repr(text), f"an empty path names no {what}")
    p = Path(text)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(p, "no such file") from None
    except IsADirectoryError:
        raise error(p, "is a folder, not a regular file") from None
    except OSError as e:
        raise error(p, f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(p, f"is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise error(p, f"is {st.st_size} bytes, more than the {limit // MIB} MiB any {what} needs "
                        "(wrong file?)")
        chunks, left = [], limit + 1
        while left > 0:
            b = os.read(fd, min(left, MIB))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
    except OSError as e:
        raise error(p, f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > limit:  # grew while being read
        raise error(p, f"is more than the {limit // MIB} MiB any {what} needs (wrong file?)")
    return raw


# ---- typed records from parsed JSON / TOML -------------------------------------------------------------

# the widest integers a data file holds: TOML's are signed 64-bit (toml.io), NVML's values unsigned 64-bit
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


@functools.lru_cache(maxsize=None)
def _schema(cls) -> tuple[dict, tuple]:
    """Type hints and fields of a record class, resolved once (get_type_hints is slow)."""
    return typing.get_type_hints(cls), dataclasses.fields(cls)


def _short(value) -> str:
    """A value for a message: JSON numbers can be 400 digits and lists a megabyte."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"of {len(str(abs(value)))} digits"
    return text if len(text) <= 80 else text[:77] + "..."


def read_record(cls, value, error: type[DataFileError], path, where: str | None = None, *,
                ignore_unknown_keys: bool = False):
    """`value` (a dict parsed from JSON or TOML) -> a `cls` dataclass, by its type hints: nested dataclasses,
    `X | None`, `tuple[X, ...]` (from a list), `dict[str, X]`, bool, int (64-bit), float (finite; an integer
    is taken) and str. Anything else is `error(path, "key 'a.b[0]' must be ..., got ...", where)`, `where`
    naming the entry; a key the class does not have is an error with "did you mean" unless
    `ignore_unknown_keys` (a newer writer may add keys to a versioned schema)."""
    from .errors import unknown_text

    def fail(key: str, message: str):
        raise error(path, f"key {key!r} {message}" if key else message, where)

    def read(hint, v, key: str):
        if dataclasses.is_dataclass(hint):
            if not isinstance(v, dict):
                fail(key, f"must be an object, got {_short(v)}")
            hints, fields = _schema(hint)
            if not ignore_unknown_keys:
                names = [f.name for f in fields]
                extra = sorted(set(v) - set(names))
                if extra:
                    raise error(path, unknown_text("key", extra[0], names) + (f" (in {key!r})" if key else ""),
                                where)
            kwargs = {}
            for f in fields:
                sub = f"{key}.{f.name}" if key else f.name
                if f.name in v:
                    kwargs[f.name] = read(hints[f.name], v[f.name], sub)
                elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise error(path, f"missing required key {sub!r}", where)
            return hint(**kwargs)
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Union or type(hint).__name__ == "UnionType":
            inner = [a for a in args if a is not type(None)]
            if len(inner) != 1:  # pragma: no cover - a record type gpufit does not define
                raise TypeError(f"read_record reads X | None, not {hint}")
            return None if v is None and type(None) in args else read(inner[0], v, key)
        if origin is tuple:
            if not isinstance(v, list):
                fail(key, f"must be a list, got {_short(v)}")
            return tuple(read(args[0], x, f"{key}[{i}]") for i, x in enumerate(v))
        if origin is dict:
            if not isinstance(v, dict):
                fail(key, f"must be an object, got {_short(v)}")
            return {k: read(args[1], x, f"{key}.{k}") for k, x in v.items()}
        if hint is bool:
            if not isinstance(v, bool):
                fail(key, f"must be true or false, got {_short(v)}")
            return v
        if hint is int:
            if isinstance(v, bool) or not isinstance(v, int):
                fail(key, f"must be an integer, got {_short(v)}")
            if not _INT_MIN <= v <= _INT_MAX:
                fail(key, f"is out of range (64-bit integers), got {_short(v)}")
            return v
        if hint is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                fail(key, f"must be a number, got {_short(v)}")
            if isinstance(v, int) and not _INT_MIN <= v <= _INT_MAX or not math.isfinite(v):
                fail(key, f"must be a finite number, got {_short(v)}")
            return float(v)
        if hint is str:
            if not isinstance(v, str):
                fail(key, f"must be a string, got {_short(v)}")
            return v
        raise TypeError(f"read_record cannot read a {hint}")  # pragma: no cover - a record type gpufit does not define

    return read(cls, value, "")
