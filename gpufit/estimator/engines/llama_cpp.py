"""llama.cpp: how it places a model (src/llama-model.cpp, src/llama-kv-cache.cpp, common/arg.cpp).

Layers are split over every visible GPU in proportion to free memory (`--split-mode layer`, the
n_layer + 1 split with the output layer last), token embeddings stay in host memory, the KV cache is
allocated for the whole `-c` up front, and each device holds one compute buffer sized for a ubatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .. import memory
from .base import Engine
from .profiles import LLAMA_CPP

if TYPE_CHECKING:  # pragma: no cover
    from ..types import FitRequest, FitResult

DEFAULT_FOR_KINDS = ("gguf",)
PROGRAMS = ("llama-server", "llama-cli")

# --cache-type-k / --cache-type-v names (common/arg.cpp kv_cache_types)
LLAMA_KV = {"fp16": "f16", "bf16": "bf16", "fp32": "f32", "q8_0": "q8_0", "q4_0": "q4_0", "q4_1": "q4_1",
            "q5_0": "q5_0", "q5_1": "q5_1", "iq4_nl": "iq4_nl"}


def cuda_visible(result: "FitResult") -> str:
    """`CUDA_VISIBLE_DEVICES=...` for the GPUs a probed plan uses (nothing when planning)."""
    used = [d.index for d in result.devices if d.needed_bytes]
    if not used or result.request.planning:
        return ""
    return "CUDA_VISIBLE_DEVICES=" + ",".join(used) + " "


class LlamaCpp(Engine):
    key = "llama.cpp"
    profile = LLAMA_CPP
    uses_all_gpus = True
    splits_like_llama_cpp = True
    runs_gguf = True

    def activation_bytes(self, req: "FitRequest", tp: int = 1, multi_gpu: bool = False) -> int:
        return memory.llama_cpp_compute_bytes(req.model, req.context, multi_gpu=multi_gpu)

    def default_kv_dtype(self, m) -> str:
        return "fp16"

    def flags(self, result: "FitResult") -> str | None:
        r = result.request
        if "llama.cpp" not in r.quant.engines:
            return None
        p = result.placement
        ngl = p.gpu_layers if p.strategy == "cpu_offload" else 999
        parts = ["llama-server -m MODEL.gguf", f"-c {r.context * r.batch}"]
        if r.batch > 1:
            parts.append(f"-np {r.batch}")
        parts.append(f"-ngl {ngl}")
        layers = [n for n in p.layers_per_device if n]
        if len(layers) > 1:
            parts.append("--split-mode layer")
            parts.append("-ts " + ",".join(str(n) for n in p.layers_per_device))
        kv = LLAMA_KV.get(r.kv_dtype.key)
        if kv and kv not in ("f16", "bf16"):
            parts.append(f"--cache-type-k {kv} --cache-type-v {kv} -fa on")
        return cuda_visible(result) + " ".join(parts)


_ENGINE = LlamaCpp()


def for_version(version: str | None) -> Engine:
    if version is not None:
        from ...errors import UsageError

        raise UsageError(f"--engine llama.cpp@{version}: gpufit models the current llama.cpp only")
    return _ENGINE


def parse(argv: Sequence[str], env: Mapping[str, str]):  # pragma: no cover - replaced by issue 10
    return _ENGINE.parse_command(argv, env)
