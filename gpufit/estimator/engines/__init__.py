"""Inference engines, one module each, behind the protocol in `base.py`.

REGISTRY is the one list of engines: a new engine is one module and one line here. `get(name)` takes
"vllm" or "vllm@0.18" (an older version family) and returns the engine object the core asks.
The calibrated constants shared by several engines live in `profiles.py`.
"""

from __future__ import annotations

from typing import Protocol

from .base import Engine, EngineMemory, Refusal, ServerCommand  # noqa: F401
from .profiles import *  # noqa: F401,F403  (engine profiles and calibrated speed factors)
from .profiles import PROFILES, EngineProfile  # noqa: F401
from . import llama_cpp, ollama, transformers, vllm


class EngineModule(Protocol):
    """What REGISTRY holds: an engine module (optional module constants, read with getattr:
    DEFAULT_FOR_KINDS, the quant kinds it is `--engine auto` for; PROGRAMS, its server programs)."""

    def for_version(self, version: str | None) -> Engine: ...


# engine key -> module exposing `for_version(version: str | None) -> Engine`
REGISTRY: dict[str, EngineModule] = {
    "vllm": vllm,
    "llama.cpp": llama_cpp,
    "ollama": ollama,
    "transformers": transformers,
}
ENGINES = tuple(REGISTRY)


def split_name(name: str) -> tuple[str, str | None]:
    """'vllm@0.18' -> ('vllm', '0.18'); 'vllm' -> ('vllm', None)."""
    key, _, version = name.partition("@")
    return key, (version or None)


def get(name: str, version: str | None = None) -> Engine:
    """The engine object for `name` ("vllm", "vllm@0.18"); UsageError with "did you mean" otherwise."""
    from ...errors import unknown

    key, v = split_name(name)
    if key not in REGISTRY:
        raise unknown("engine", key, ENGINES)
    return REGISTRY[key].for_version(version or v)


def all_engines() -> list[Engine]:
    return [mod.for_version(None) for mod in REGISTRY.values()]


def default_engine(quant_kind: str) -> str:
    """`--engine auto`: the first engine that names itself the default for this kind of format
    (llama.cpp for GGUF types, vLLM for everything else: DESIGN.md)."""
    for key, mod in REGISTRY.items():
        if quant_kind in getattr(mod, "DEFAULT_FOR_KINDS", ()):
            return key
    return "vllm"


def engine_for_program(program: str) -> Engine | None:
    """The engine whose server program this is (`vllm`, `llama-server`, `ollama`, `python -m ...`)."""
    for mod in REGISTRY.values():
        if program in getattr(mod, "PROGRAMS", ()):
            return mod.for_version(None)
    return None


def programs() -> list[str]:
    return [p for mod in REGISTRY.values() for p in getattr(mod, "PROGRAMS", ())]
