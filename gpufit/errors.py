"""Exit codes and the exception tree. Each exception maps to exactly one exit code, here."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit codes of DESIGN.md. One enum; README documents it."""

    OK = 0  # fits / report healthy
    INTERNAL = 1  # a bug, never bad input
    USAGE = 2  # bad option, unknown model or GPU
    NO_FIT = 3  # does not fit even split across the selected GPUs
    DEGRADED = 4  # fits only with CPU offload / below headroom with --strict / report warnings
    NO_PROBE = 5  # no driver / NVML / GPU; report critical
    BAD_DATA = 6  # a data file is invalid (catalog, config, snapshot, model file)


class GpufitError(Exception):
    """Base of every error gpufit reports to a person instead of a traceback."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(GpufitError):
    """Bad option value, unknown model / GPU / quant. Message names the input and nearest choices."""

    exit_code = ExitCode.USAGE


class ProbeError(GpufitError):
    """The machine could not be probed: no NVML library, no driver, no GPU, a hung call."""

    exit_code = ExitCode.NO_PROBE


class DataFileError(GpufitError):
    """A data file is invalid. `path` and `where` (entry, key, line) name the place at fault."""

    exit_code = ExitCode.BAD_DATA

    def __init__(self, path, message: str, where: str | None = None):
        self.path = str(path)
        self.where = where
        self.detail = message
        loc = f"{self.path}: {where}: " if where else f"{self.path}: "
        super().__init__(loc + message)


class CatalogError(DataFileError):
    """A catalog TOML file (built-in or user addition) is invalid."""


class ConfigError(DataFileError):
    """The gpufit.toml config is invalid."""


class SnapshotError(DataFileError):
    """A saved snapshot or nvidia-smi capture could not be read."""


class ModelFileError(DataFileError):
    """A local model file (safetensors folder, .gguf) is invalid, truncated or unsupported."""


def did_you_mean(word: str, choices, n: int = 3) -> list[str]:
    """Nearest valid choices for an unknown input, best first (difflib ratio on lowercased keys)."""
    import difflib

    lowered = {c.lower(): c for c in choices}
    w = word.lower()
    hits = difflib.get_close_matches(w, list(lowered), n=n, cutoff=0.5)
    # substring matches are often what a person meant ("3090" -> "rtx-3090")
    subs = [k for k in lowered if w and w in k and k not in hits]
    return [lowered[h] for h in (hits + sorted(subs, key=len))[:n]]


def did_you_mean_hint(word: str, choices) -> str:
    """"; did you mean a, b?" with the nearest choices, "" when none is near: the one wording of the hint."""
    near = did_you_mean(word, choices)
    return f"; did you mean {', '.join(near)}?" if near else ""


def unknown_text(kind: str, word: str, choices) -> str:
    """"unknown engine 'vlm'; did you mean vllm?": the one wording of an unknown name, for any error class."""
    return f"unknown {kind} {word!r}{did_you_mean_hint(word, choices)}"


def unknown(kind: str, word: str, choices) -> UsageError:
    return UsageError(unknown_text(kind, word, choices))


class WriteError(GpufitError):
    """An output file (--output, --save) cannot be written: the path is empty, a folder, a device, a FIFO,
    a symlink, or the OS refused the write. Exit 2: the path is an option value the user can change; the
    old file, if any, is left as it was."""

    exit_code = ExitCode.USAGE

    def __init__(self, path, message: str):
        self.path = str(path)
        self.detail = message
        super().__init__(f"{self.path}: {message}")
