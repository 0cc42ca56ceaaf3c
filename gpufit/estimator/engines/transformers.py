"""Hugging Face transformers + accelerate (`device_map="auto"`): weights placed layer by layer,
the rest spilled to the CPU, KV cache grown on demand (DynamicCache)."""

from __future__ import annotations

from .base import Engine
from .profiles import TRANSFORMERS


class Transformers(Engine):
    key = "transformers"
    profile = TRANSFORMERS


_ENGINE = Transformers()


def for_version(version: str | None) -> Engine:
    if version is not None:
        from ...errors import UsageError

        raise UsageError(f"--engine transformers@{version}: gpufit models the current transformers only")
    return _ENGINE
