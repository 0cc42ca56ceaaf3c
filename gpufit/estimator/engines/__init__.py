"""Inference engines, one module each, behind the protocol in `base.py`.

REGISTRY is the one list of engines, keyed by EngineName: a new engine is one module, and one member and
one line here. `get(name)` takes
"vllm" or "vllm@0.18" (an older version family) and returns the engine object the core asks.
The calibrated constants shared by several engines live in `profiles.py`.
"""

from __future__ import annotations

from typing import Protocol

from . import llama_cpp, ollama, transformers, vllm
from ..types import TextEnum
from .base import Engine
from .profiles import (  # the shared calibrated constants the core reads as engines.NAME
    ALLREDUCE_LATENCY_S,
    HOST_DECODE_BANDWIDTH_GBPS,
    LLAMA_CPP,
    LLAMA_CPP_ATTN_HIDDEN_F32_TENSORS,
    LLAMA_CPP_MLP_FF_F32_TENSORS,
    LLAMA_CPP_MLP_HIDDEN_F32_TENSORS,
    LLAMA_CPP_MULTI_GPU_COMPUTE_FACTOR,
    STAGE_HOP_LATENCY_S,
    TRANSFORMERS_LOGITS_LAST_TOKEN_ONLY,
    decode_efficiency,
    memory_class,
)


class EngineModule(Protocol):
    """What REGISTRY holds: an engine module (optional module constants, read with getattr:
    DEFAULT_FOR_KINDS, the quant kinds it is `--engine auto` for; PROGRAMS, its server programs)."""

    def for_version(self, version: str | None) -> Engine: ...


class EngineName(TextEnum):
    """The engines gpufit models. Each value is the name `--engine` takes and its module's `Engine.key`."""
    VLLM = "vllm"
    LLAMA_CPP = "llama.cpp"
    OLLAMA = "ollama"
    TRANSFORMERS = "transformers"


# engine -> module exposing `for_version(version: str | None) -> Engine`
REGISTRY: dict[EngineName, EngineModule] = {
    EngineName.VLLM: vllm,
    EngineName.LLAMA_CPP: llama_cpp,
    EngineName.OLLAMA: ollama,
    EngineName.TRANSFORMERS: transformers,
}
ENGINES: tuple[str, ...] = tuple(e.value for e in REGISTRY)

__all__ = [
    "ALLREDUCE_LATENCY_S", "ENGINES", "Engine", "EngineName", "EngineModule", "HOST_DECODE_BANDWIDTH_GBPS", "LLAMA_CPP",
    "LLAMA_CPP_ATTN_HIDDEN_F32_TENSORS", "LLAMA_CPP_MLP_FF_F32_TENSORS", "LLAMA_CPP_MLP_HIDDEN_F32_TENSORS",
    "LLAMA_CPP_MULTI_GPU_COMPUTE_FACTOR", "REGISTRY", "STAGE_HOP_LATENCY_S", "TRANSFORMERS_LOGITS_LAST_TOKEN_ONLY",
    "all_engines", "decode_efficiency", "default_engine", "engine_for_program", "get", "llama_cpp", "memory_class",
    "ollama", "programs", "split_name", "transformers", "vllm",
]


def split_name(name: str) -> tuple[str, str | None]:
    """'vllm@0.18' -> ('vllm', '0.18'); 'vllm' -> ('vllm', None)."""
    key, _, version = name.partition("@")
    return key, (version or None)


def get(name: str, version: str | None = None) -> Engine:
    """The engine object for `name` ("vllm", "vllm@0.18"); UsageError with "did you mean" otherwise."""
    from ...errors import unknown

    key, v = split_name(name)
    if key not in ENGINES:
        raise unknown("engine", key, ENGINES)
    return REGISTRY[EngineName(key)].for_version(version or v)


def all_engines() -> list[Engine]:
    return [mod.for_version(None) for mod in REGISTRY.values()]


def default_engine(quant_kind: str) -> EngineName:
    """`--engine auto`: the first engine that names itself the default for this kind of format
    (llama.cpp for GGUF types, vLLM for everything else: DESIGN.md)."""
    for key, mod in REGISTRY.items():
        if quant_kind in getattr(mod, "DEFAULT_FOR_KINDS", ()):
            return key
    return EngineName.VLLM


def engine_for_program(program: str) -> Engine | None:
    """The engine whose server program this is (`vllm`, `llama-server`, `ollama`, `python -m ...`)."""
    for mod in REGISTRY.values():
        if program in getattr(mod, "PROGRAMS", ()):
            return mod.for_version(None)
    return None


def programs() -> list[str]:
    return [p for mod in REGISTRY.values() for p in getattr(mod, "PROGRAMS", ())]
