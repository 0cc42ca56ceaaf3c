"""Ollama: llama.cpp underneath, plus its scheduler (server/sched.go) and per-GPU minimum
(discover/gpu.go). It loads a model onto the fewest GPUs that hold it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .llama_cpp import LLAMA_KV, LlamaCpp
from .profiles import OLLAMA

if TYPE_CHECKING:  # pragma: no cover
    from ..types import FitResult

PROGRAMS = ("ollama",)


class Ollama(LlamaCpp):
    key = "ollama"
    profile = OLLAMA
    uses_all_gpus = False  # fewest GPUs that hold it (server/sched.go pickBestFullFitByLibrary)

    def flags(self, result: "FitResult") -> str | None:
        r = result.request
        if "ollama" not in r.quant.engines:
            return None
        p = result.placement
        env = [f"OLLAMA_CONTEXT_LENGTH={r.context}"]
        if r.batch > 1:
            env.append(f"OLLAMA_NUM_PARALLEL={r.batch}")
        kv = LLAMA_KV.get(r.kv_dtype.key)
        if kv and kv not in ("f16", "bf16"):
            env += ["OLLAMA_FLASH_ATTENTION=1", f"OLLAMA_KV_CACHE_TYPE={kv}"]
        opts = f"num_ctx={r.context}"
        if p.strategy == "cpu_offload":
            opts += f" num_gpu={p.gpu_layers}"
        return " ".join(env) + f" ollama serve  # model options: {opts}"


_ENGINE = Ollama()


def for_version(version: str | None):
    if version is not None:
        from ...errors import UsageError

        raise UsageError(f"--engine ollama@{version}: gpufit models the current Ollama only")
    return _ENGINE
