"""Command-line flags that realise a placement on each engine.

vLLM: vllm/engine/arg_utils.py (EngineArgs); llama.cpp: tools/server README (llama-server flags);
Ollama: docs/faq.md + envconfig (OLLAMA_* variables) and the `num_gpu` / `num_ctx` model options.
"""

from __future__ import annotations

from . import engines

GIB = 1 << 30

# KV dtype names per engine
VLLM_KV = {"fp8": "fp8", "fp16": "auto", "bf16": "auto", "fp32": "auto"}
LLAMA_KV = {"fp16": "f16", "bf16": "bf16", "fp32": "f32", "q8_0": "q8_0", "q4_0": "q4_0", "q4_1": "q4_1",
            "q5_0": "q5_0", "q5_1": "q5_1", "iq4_nl": "iq4_nl"}
# --quantization for formats vLLM must be told about (others come from the checkpoint's config)
VLLM_QUANT = {"fp8": "fp8", "nf4": "bitsandbytes"}


def passing_utilization(free_bytes: int, total_bytes: int, reserve_bytes: int = 0) -> float:
    """The largest --gpu-memory-utilization (two decimals, rounded down) vLLM's start-up check passes on a
    card with `free_bytes` free, keeping `reserve_bytes` aside: util x total must be free."""
    return int((free_bytes - reserve_bytes) / total_bytes * 100) / 100


def _vllm(result) -> str:
    r = result.request
    p = result.placement
    model = r.model.hf_repo or r.model.key
    util = r.gpu_memory_utilization or engines.VLLM.default_utilization
    used = [d for d in result.devices if d.needed_bytes]
    if used and not r.planning:
        # the largest utilisation every used card can grant now (vLLM checks free >= util x total)
        can = min(passing_utilization(d.free_bytes, d.total_bytes, r.reserve_bytes) for d in used)
        util = min(util, can)
    parts = [f"vllm serve {model}"]
    if p.tensor_parallel > 1:
        parts.append(f"--tensor-parallel-size {p.tensor_parallel}")
    if p.pipeline_parallel > 1:
        parts.append(f"--pipeline-parallel-size {p.pipeline_parallel}")
    parts.append(f"--gpu-memory-utilization {util:.2f}")
    parts.append(f"--max-model-len {r.context}")
    parts.append(f"--max-num-seqs {r.batch}")
    if r.quant.key in VLLM_QUANT:
        parts.append(f"--quantization {VLLM_QUANT[r.quant.key]}")
    kv = VLLM_KV.get(r.kv_dtype.key)
    if kv and kv != "auto":
        parts.append(f"--kv-cache-dtype {kv}")
    if p.strategy == "cpu_offload" and p.cpu_bytes:
        parts.append(f"--cpu-offload-gb {max(1, -(-p.cpu_bytes // GIB))}")
    env = ""
    if p.pipeline_parallel > 1 and len(set(p.layers_per_device) - {0}) > 1:
        env = "VLLM_PP_LAYER_PARTITION=" + ",".join(str(n) for n in p.layers_per_device if n) + " "
    return env + " ".join(parts)


def _visible(result) -> str:
    used = [d.index for d in result.devices if d.needed_bytes]
    if not used or result.request.planning:
        return ""
    return "CUDA_VISIBLE_DEVICES=" + ",".join(d.split("/")[0] if "/" not in d else d for d in used) + " "


def _llama_cpp(result) -> str:
    r = result.request
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
    return _visible(result) + " ".join(parts)


def _ollama(result) -> str:
    r = result.request
    p = result.placement
    env = [f"OLLAMA_CONTEXT_LENGTH={r.context}"]
    if r.batch > 1:
        env.append(f"OLLAMA_NUM_PARALLEL={r.batch}")
    kv = LLAMA_KV.get(r.kv_dtype.key)
    if kv and kv not in ("f16", "bf16"):
        env += ["OLLAMA_FLASH_ATTENTION=1", f"OLLAMA_KV_CACHE_TYPE={kv}"]
    opts = f'num_ctx={r.context}'
    if p.strategy == "cpu_offload":
        opts += f" num_gpu={p.gpu_layers}"
    return " ".join(env) + f" ollama serve  # model options: {opts}"


def engine_args(result) -> dict:
    if result.verdict == "no_fit":
        return {}
    return {"vllm": _vllm(result), "llama.cpp": _llama_cpp(result), "ollama": _ollama(result)}
