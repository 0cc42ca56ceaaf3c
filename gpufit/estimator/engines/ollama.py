"""Ollama: llama.cpp underneath, plus its scheduler (server/sched.go), its own memory estimate
(llm/memory.go, fs/ggml/ggml.go GraphSize) and per-GPU minimum (discover/gpu.go). It loads a model onto
the fewest GPUs that hold it.

Version families (`--engine ollama@0.6` ...), from Ollama's source (ollama/ollama, tags v0.1-v0.30):
  0.6   (<= 0.6.6)       num_ctx 2048, 4 parallel slots when they fit, the memory.go estimate
  0.9   (0.6.7 - 0.9.x)  num_ctx 4096, 2 slots, the memory.go estimate
  0.12  (0.10 - 0.12.10) num_ctx 4096, 1 slot, the memory.go estimate
  current (>= 0.15.5)    num_ctx by total VRAM (server/routes.go: >= 47 GiB 262144, >= 23 GiB 32768,
                         else 4096), 1 slot; GGML models load through llama-server (v0.30+), so the
                         placement is llama.cpp's, with Ollama's per-GPU minimum kept free
The memory.go families place layers as Ollama's estimate does and report its `memory.required.*`
figures in `engine_memory`; `bench/ollama_offload.py` compares them with 67 public server logs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...catalog.types import ModelSpec, QuantFormat
from ...units import GIB, MIB
from .. import memory
from ..params import attention_layer_counts, attention_shape, required
from ..types import Strategy
from .base import EngineMemory, PrefillBatching, ServerCommand
from .llama_cpp import LLAMA_KV, LlamaCpp, setting
from .profiles import OLLAMA

if TYPE_CHECKING:  # pragma: no cover
    from ..placement import Plan
    from ..types import Device, FitRequest, FitResult

PROGRAMS = ("ollama",)
# discover/gpu.go: CudaMinimumMemory / GpuInfo.MinimumMemory, kept free on every CUDA GPU
MINIMUM_MEMORY = 457 * MIB
# api/types.go DefaultOptions: NumBatch 512
NUM_BATCH = 512
# server/routes.go (>= 0.15.5): the default context by total VRAM (less OLLAMA_GPU_OVERHEAD per GPU)
VRAM_CTX_TIERS = ((47 * GIB, 262144), (23 * GIB, 32768), (0, 4096))
# server/sched.go: gpt-oss gets num_ctx >= 8192 (outside "low VRAM mode", total < 20 GiB, from 0.11.4)
GPT_OSS_MIN_CTX = 8192
LOW_VRAM = 20 * GIB
# fs/ggml/ggml.go kvCacheBytesPerElement: q8_0 1 byte, q4_0 half a byte, else f16
KV_BYTES = {"q8_0": 1.0, "q4_0": 0.5, "f16": 2.0, "f32": 4.0}
# fs/ggml/ggml.go GraphSize: gemma3's every 6th layer is global; the rest keep window x slots + batch
GEMMA3_GLOBAL_EVERY = 6
# gpt-oss: even layers slide, keeping 4096 x slots + batch cells (the SWA memory size of its cache)
GPT_OSS_SWA_CELLS = 4096
# Gemma 3 4B/12B/27B carry a SigLIP vision tower (the catalog's published total less the text shape,
# ~0.42 B parameters, stored F16 in Ollama's blob); fs/ggml/ggml.go VisionGraphSize for gemma3:
# 4 x (image^2 x channels + embedding x patch + patches^2 x heads), google/gemma-3-*-it config.json
# vision_config: image 896, patch 14, 3 channels, 16 heads, width 1152. The Ollama engine charges the
# projector and its graph with the output layer (memoryLastLayer).
GEMMA3_VISION = {"image": 896, "patch": 14, "channels": 3, "heads": 16, "width": 1152}


@dataclass(frozen=True)
class Family:
    name: str | None  # None = the current release
    num_ctx: int | None  # None = by total VRAM
    parallel: int  # default slots (tried first when OLLAMA_NUM_PARALLEL is unset; else 1)
    old_estimate: bool  # llm/memory.go EstimateGPULayers places the layers
    note: str
    # before v0.7.0 (commit 0478d440f) memory.go placed layers from blk.0 upward; since then from the last
    ascending: bool = False


FAMILIES = {
    "0.6": Family("0.6", 2048, 4, True, "Ollama 0.6 (<= 0.6.6): num_ctx 2048, 4 parallel slots where they fit, "
                  "the llm/memory.go estimate", ascending=True),
    "0.9": Family("0.9", 4096, 2, True, "Ollama 0.9 (0.6.7 - 0.9.x): num_ctx 4096, 2 parallel slots where they fit, "
                  "the llm/memory.go estimate"),
    "0.12": Family("0.12", 4096, 1, True, "Ollama 0.12 (0.10 - 0.12.10): num_ctx 4096, 1 slot, the llm/memory.go estimate"),
    None: Family(None, None, 1, False, "Ollama: current release (>= 0.15.5: num_ctx by total VRAM, 1 slot, "
                 "llama-server placement); --engine ollama@0.12, @0.9 or @0.6 for older releases"),
}


def default_num_ctx(fam: Family, m: ModelSpec, devices: Sequence["Device"], gpu_overhead: int = 0) -> tuple[int, str]:
    """Ollama's num_ctx when none is asked for, capped at the model's context (Ollama reduces a
    num_ctx above the model's training context)."""
    total = sum(max(0, d.total_bytes - gpu_overhead) for d in devices)
    if fam.num_ctx is not None:
        n, why = fam.num_ctx, f"Ollama {fam.name}'s default num_ctx"
    else:
        n = next(ctx for floor, ctx in VRAM_CTX_TIERS if total >= floor)
        why = f"Ollama's default num_ctx for {total / GIB:.0f} GiB of total VRAM"
    if m.family == "gpt-oss" and (fam.name in ("0.6", "0.9") or total >= LOW_VRAM) and n < GPT_OSS_MIN_CTX:
        n, why = GPT_OSS_MIN_CTX, "Ollama's minimum num_ctx for gpt-oss"
    return min(n, m.max_context), why


# ---- llm/memory.go EstimateGPULayers, as pure arithmetic ---------------------------------------------
@dataclass(frozen=True)
class OllamaEstimate:
    """What Ollama's scheduler logs for one load ("offload to cuda" line)."""
    layers: int  # layers.offload (repeating layers + the output layer when it fits)
    split: tuple[int, ...]  # layers.split per GPU
    required_full: int  # memory.required.full
    required_partial: int  # memory.required.partial
    required_kv: int  # memory.required.kv
    allocations: tuple[int, ...]  # memory.required.allocations per GPU
    graph_full: int
    graph_partial: int
    layer_bytes: int  # blk.0 weights + its KV
    output_bytes: int  # output layer (output_norm + output or token_embd)


def kv_per_layer(req: "FitRequest", kv_type: str, num_ctx: int, parallel: int) -> list[int]:
    """fs/ggml/ggml.go GraphSize: KV bytes of each layer for num_ctx x parallel cells."""
    m = req.model
    ctx = num_ctx * parallel
    per_cell = 2 * m.kv_heads * m.head_dim * KV_BYTES.get(kv_type, 2.0)
    if m.is_mla:  # deepseek2 GGUF: K = kv_lora_rank + rope, V = v_head_dim, per head as GGUF lists them
        per_cell = m.kv_heads * ((m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0) + (m.v_head_dim or 0)) \
            * KV_BYTES.get(kv_type, 2.0)
    out = [int(ctx * per_cell)] * m.layers
    batch = min(num_ctx, NUM_BATCH)
    if m.family == "gemma3" and m.sliding_window:
        cells = parallel * m.sliding_window + batch
        out = [int(ctx * per_cell) if (i + 1) % GEMMA3_GLOBAL_EVERY == 0 else int(cells * per_cell)
               for i in range(m.layers)]
    elif m.family == "gpt-oss":
        out = [int((parallel * GPT_OSS_SWA_CELLS + batch) * per_cell) if i % 2 == 0 else int(ctx * per_cell)
               for i in range(m.layers)]
    if m.kv_shared_layers or m.global_head_dim or m.global_kv_heads:
        out = _gemma_n_kv(m, out, ctx, KV_BYTES.get(kv_type, 2.0))
    return out


def _gemma_n_kv(m: ModelSpec, out: list[int], ctx: int, elem: float) -> list[int]:
    """Gemma 3n / 4: GGUF head_count_kv and key_length / key_length_swa are per layer, so each
    full-attention layer (every n-th, the pattern of their config.json layer_types) is costed at its own
    width, and the last shared_kv_layers layers hold no cache (they read an earlier layer's)."""
    full, sliding, chunked = attention_layer_counts(m)
    period = (full + sliding + chunked) // full if full else 0
    heads, head_dim = attention_shape(m, full=True)
    first_shared = m.layers - m.kv_shared_layers
    res = []
    for i, v in enumerate(out):
        if i >= first_shared:
            res.append(0)
        elif period and (i + 1) % period == 0:
            res.append(int(ctx * 2 * heads * head_dim * elem))
        else:
            res.append(v)
    return res


def graph_sizes(req: "FitRequest", num_ctx: int, parallel: int, kv_total: int, flash_attn: bool) -> tuple[int, int]:
    """(graphPartialOffload, graphFullOffload) of GraphSize for the architectures gpufit's catalog
    has (llama / mistral / mixtral, gemma*, qwen2, deepseek2, gpt-oss); others take Ollama's fallback,
    partial = GQA x kv / 6, full = partial."""
    m = req.model
    ctx = num_ctx * parallel
    batch = min(num_ctx, NUM_BATCH)
    emb, heads, kvh, vocab = m.hidden, m.heads, m.kv_heads, m.vocab
    hd = m.head_dim
    full = partial = 0
    fam = m.family
    if fam in ("llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "mistral", "mixtral", "yi",
               "deepseek-r1-distill-llama"):
        full = max(4 * batch * (1 + 4 * emb + ctx * (1 + heads)), 4 * batch * (emb + vocab))
        partial = 4 * batch * emb + max(
            4 * batch * (1 + emb + max(ctx, emb)) + emb * emb * 9 // 16 + 4 * ctx * (batch * heads + hd * kvh),
            4 * batch * (emb + vocab) + emb * vocab * 105 // 128)
        if m.is_moe:  # mixtral 8x7b (ffn_gate.0.weight): ff = expert width
            ff = required(m, "moe_intermediate", m.moe_intermediate)
            full = 4 * batch * (2 + 3 * emb + ctx * (1 + heads) + 2 * kvh + ff)
            partial = max(4 * batch * (3 + hd * kvh + emb + ctx * (1 + heads) + ff)
                          + (emb * emb + 3 * emb * kvh * ff) * 9 // 16,
                          4 * batch * (1 + 2 * emb + ctx * (1 + heads)) + emb * (6 * ctx * kvh // heads + emb * 9 // 16))
    elif fam in ("gemma2", "gemma3"):
        full = max(4 * batch * (emb + vocab), 4 * batch * (2 + ctx + ctx * heads + 2 * emb + 2 * hd * heads))
        partial = max(4 * emb * batch + emb * vocab * 105 // 128 + 4 * vocab * batch,
                      4 * batch * (2 * emb + 1 + 2 * hd * heads + ctx + ctx * heads) + 4 * hd * ctx * 8
                      + emb * hd * heads * 9 // 16)
    elif fam in ("qwen2", "qwen2.5", "qwen2.5-coder", "deepseek-r1-distill-qwen"):
        full = max(4 * batch * (emb + vocab), 4 * batch * (1 + 2 * emb + ctx + ctx * heads))
        partial = max(4 * batch * (emb + vocab) + emb * vocab * 105 // 128,
                      4 * (batch * (1 + 2 * emb + ctx * (1 + heads)) + emb * (1 + ctx)))
    elif fam in ("deepseek-v2", "deepseek-v3", "deepseek-r1") and m.is_mla:
        hk = (m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0)
        full = max(4 * batch * (3 * emb + vocab), 4 * batch * (3 * emb + 2 + ctx * (1 + kvh) + 2 * hk * kvh))
        partial = max(4 * batch * (3 * emb + vocab) + emb * vocab * 105 // 128,
                      4 * batch * (2 * emb + 1 + 2 * hk * kvh + ctx + ctx * kvh) + 4 * hk * ctx * kvh
                      + emb * hk * kvh * 9 // 16)
    elif fam == "gpt-oss":
        partial = 2 * heads // max(kvh, 1) * kv_total // 6
        if flash_attn:
            partial = (4 * parallel + (ctx >> 10) + 110) * MIB
    if partial == 0:
        partial = heads // max(kvh, 1) * kv_total // 6
    if full == 0:
        full = partial
    return partial, full


def projector_bytes(m: ModelSpec) -> tuple[int, int]:
    """(projector weights, vision graph) Ollama charges for a Gemma 3 checkpoint with a vision tower."""
    if m.family != "gemma3" or not m.params:
        return 0, 0
    from ..params import count_params

    tower = m.params - count_params(m).computed_total
    if tower <= 0:
        return 0, 0
    v = GEMMA3_VISION
    patches = (v["image"] // v["patch"]) ** 2
    graph = 4 * (v["image"] ** 2 * v["channels"] + v["width"] * v["patch"] + patches * patches * v["heads"])
    return 2 * tower, graph


def layer_weights(m: ModelSpec, q: QuantFormat) -> list[int]:
    """Bytes of each block as the GGUF holds it: DeepSeek's leading dense layers are a fraction of its
    MoE layers (memory.go reads every blk.i's own size); the body total is the catalog's."""
    from ..params import attention_params, mlp_params

    ws = memory.weight_split(m, q)
    body = ws.per_layer * m.layers
    if not (m.is_moe and m.dense_layers):
        return [int(round(ws.per_layer))] * m.layers
    attn = attention_params(m) + 2 * m.hidden
    dense = attn + mlp_params(m.hidden, m.intermediate, m.mlp)
    expert = mlp_params(m.hidden, required(m, "moe_intermediate", m.moe_intermediate), m.mlp)
    moe = attn + (m.experts + m.shared_experts) * expert + m.hidden * m.experts
    params = [dense if i < m.dense_layers else moe for i in range(m.layers)]
    scale = body / sum(params)
    return [int(round(p * scale)) for p in params]


def estimate_gpu_layers(req: "FitRequest", free: Sequence[int], num_ctx: int, parallel: int, kv_type: str,
                        flash_attn: bool, gpu_overhead: int = 0, num_gpu: int | None = None,
                        ascending: bool = False) -> OllamaEstimate:
    """llm/memory.go estimateGPULayers for one library's GPUs (free memory of each, in the order the
    scheduler passes them): per-GPU admission, layers from the last block down round-robin over the
    GPUs with room, the output layer last, then the full or partial graph on every GPU used."""
    m = req.model
    ws = memory.weight_split(m, req.quant)
    kv = kv_per_layer(req, kv_type, num_ctx, parallel)
    kv_total = sum(kv)
    partial, full = graph_sizes(req, num_ctx, parallel, kv_total, flash_attn)
    if len(free) > 1:
        full = partial  # multigpu always uses the partial graph size
    blks = layer_weights(m, req.quant)
    layer0 = blks[0] + kv[0]
    # output_norm + output (token_embd when tied), and a vision projector with its graph
    proj_w, proj_g = projector_bytes(m)
    output = m.hidden * 4 + (ws.output or ws.embed) + proj_w + proj_g
    n = len(free)
    split = [0] * n
    alloc = [0] * n
    with_space: list[int] = []
    for i, f in enumerate(free):
        if f < gpu_overhead + max(partial, full) + MINIMUM_MEMORY + 2 * layer0:
            continue
        with_space.append(i)
        alloc[i] += MINIMUM_MEMORY + layer0
    overflow = 0
    count = 0
    for i in (range(m.layers) if ascending else range(m.layers - 1, -1, -1)):
        size = blks[i] + kv[i]
        if num_gpu is not None and count >= num_gpu:
            overflow += size
            continue
        j = len(with_space)
        placed = False
        while j > 0:
            g = with_space[i % j]
            used = alloc[g] + max(partial, full)
            if free[g] > gpu_overhead + used + size:
                alloc[g] += size
                split[g] += 1
                count += 1
                placed = True
                break
            with_space.pop(i % j)
            j -= 1
        if not placed:
            overflow += size
    fully = count >= m.layers
    if num_gpu is None or count < num_gpu:
        j = len(with_space)
        while j > 0:
            g = with_space[count % j]
            used = alloc[g] + max(partial, full)
            if free[g] > gpu_overhead + used + output:
                alloc[g] += output
                split[g] += 1
                count += 1
                break
            j -= 1
    if count < m.layers + 1:
        fully = False
        overflow += output
    for i in range(n):
        if split[i] > 0:
            alloc[i] += full if fully else partial
    required_partial = sum(alloc)
    return OllamaEstimate(layers=count, split=tuple(split), required_full=required_partial + overflow,
                          required_partial=required_partial if count else 0, required_kv=kv_total,
                          allocations=tuple(alloc if count else [0] * n), graph_full=full, graph_partial=partial,
                          layer_bytes=layer0, output_bytes=output)


def schedule(req: "FitRequest", frees: Sequence[int], num_ctx: int, parallel: int, kv_type: str, flash_attn: bool,
             gpu_overhead: int = 0, spread: bool = False, ascending: bool = False) -> tuple[list[int], OllamaEstimate]:
    """server/sched.go with llm/memory.go pickBestFullFitByLibrary: GPUs by free memory, largest first;
    the fewest that hold every layer (all of them with OLLAMA_SCHED_SPREAD), else all with partial
    offload. Returns the indexes (into `frees`) of the GPUs used and the estimate over them."""
    order = sorted(range(len(frees)), key=lambda i: -frees[i])
    sizes = [len(order)] if spread else range(1, len(order) + 1)
    for k in sizes:
        sub = order[:k]
        est = estimate_gpu_layers(req, [frees[i] for i in sub], num_ctx, parallel, kv_type, flash_attn, gpu_overhead,
                                  ascending=ascending)
        if est.layers >= req.model.layers + 1:
            return sub, est
    est = estimate_gpu_layers(req, [frees[i] for i in order], num_ctx, parallel, kv_type, flash_attn, gpu_overhead,
                              ascending=ascending)
    return order, est


def schedule_default_parallel(req: "FitRequest", frees: Sequence[int], fam: Family, num_ctx: int, kv_type: str,
                              flash_attn: bool, gpu_overhead: int = 0, spread: bool = False
                              ) -> tuple[int, list[int], OllamaEstimate]:
    """server/sched.go with OLLAMA_NUM_PARALLEL unset: try the family's default slots, then 1; the
    first that loads every layer on the GPUs wins (else the last tried). Returns (slots, GPUs, estimate)."""
    tries = [fam.parallel, 1] if fam.parallel > 1 else [1]
    for par in tries:
        used, est = schedule(req, frees, num_ctx, par, kv_type, flash_attn, gpu_overhead, spread, fam.ascending)
        if est.layers >= req.model.layers + 1:
            return par, used, est
    return tries[-1], used, est


class Ollama(LlamaCpp):
    key = "ollama"
    profile = OLLAMA
    uses_all_gpus = False  # fewest GPUs that hold it (server/sched.go pickBestFullFitByLibrary)
    # the llama runner applies no sliding window; the Ollama engine caches gemma3's and gpt-oss's
    # in its own way (kv_per_layer); the current release runs llama-server (llama.cpp's cells)
    swa_families: tuple[str, ...] = ()

    def __init__(self, fam: Family):
        self.family = fam
        self.version = fam.name
        self.default_version_note = FAMILIES[None].note if fam.name is None else None
        if fam.name is None:
            from .llama_cpp import SWA_FAMILIES

            self.swa_families = SWA_FAMILIES

    # ---- Ollama's own settings ------------------------------------------------------------------
    def kv_type(self, req: "FitRequest") -> str:
        """OLLAMA_KV_CACHE_TYPE applies only with flash attention (llm/memory.go)."""
        kv = LLAMA_KV.get(req.kv_dtype.key, "f16")
        return kv if setting(req, "flash_attn", False) else "f16"

    def gpu_overhead(self, req: "FitRequest") -> int:
        return int(setting(req, "gpu_overhead", 0))

    def estimate(self, req: "FitRequest",
                 devices: Sequence["Device"] | None = None) -> tuple[list[int], OllamaEstimate]:
        devs = list(devices if devices is not None else req.devices)
        frees = [max(0, d.free_bytes - req.reserve_bytes) for d in devs]
        return schedule(req, frees, req.context, req.batch, self.kv_type(req), bool(setting(req, "flash_attn", False)),
                        self.gpu_overhead(req), bool(setting(req, "sched_spread", False)), self.family.ascending)

    # ---- what the engine holds (memory.go families) -----------------------------------------------
    def kv_bytes(self, req: "FitRequest", layers: int | None = None, tp: int = 1) -> int:
        if not self.family.old_estimate:
            return super().kv_bytes(req, layers, tp)
        total = sum(kv_per_layer(req, self.kv_type(req), req.context, req.batch))
        return int(math.ceil(total * (layers if layers is not None else req.model.layers) / req.model.layers))

    def activation_bytes(self, req: "FitRequest", tp: int = 1, multi_gpu: bool = False) -> int:
        if not self.family.old_estimate:
            return super().activation_bytes(req, tp, multi_gpu)
        kv_total = sum(kv_per_layer(req, self.kv_type(req), req.context, req.batch))
        partial, full = graph_sizes(req, req.context, req.batch, kv_total, bool(setting(req, "flash_attn", False)))
        return partial if multi_gpu else max(partial, full)

    def overhead_bytes(self, req: "FitRequest", tp: int = 1) -> int:
        if not self.family.old_estimate:
            return super().overhead_bytes(req, tp) + self.gpu_overhead(req)
        return MINIMUM_MEMORY + self.gpu_overhead(req)

    def weight_split(self, m: ModelSpec, q: QuantFormat, exact_total: int | None) -> memory.WeightSplit:
        if not self.family.old_estimate:
            return super().weight_split(m, q, exact_total)
        return memory.weight_split(m, q, exact_total=exact_total)

    # ---- placement --------------------------------------------------------------------------------
    def gpu_layer_limit(self, req: "FitRequest") -> int | None:
        ngl = setting(req, "num_gpu")
        if ngl is not None:
            return ngl if ngl <= req.model.layers else None
        if not self.family.old_estimate or not req.devices:
            return None
        _, est = self.estimate(req)
        return None if est.layers >= req.model.layers + 1 else min(est.layers, req.model.layers)

    def startup(self, req: "FitRequest", plan: "Plan") -> EngineMemory | None:
        if not self.family.old_estimate or not req.devices:
            return None
        used, est = self.estimate(req)
        devs = list(req.devices)
        names = [devs[i].index for i in used]
        return EngineMemory(
            weights_bytes=sum(int(round(memory.weight_split(req.model, req.quant).per_layer)) * n for n in est.split),
            activation_peak_bytes=est.graph_full if est.layers >= req.model.layers + 1 else est.graph_partial,
            device=",".join(names),
            extra={"required": {"full_bytes": est.required_full, "partial_bytes": est.required_partial,
                                "kv_bytes": est.required_kv, "allocations_bytes": list(est.allocations)},
                   "layers": {"model": req.model.layers + 1, "offload": est.layers, "split": list(est.split)},
                   "graph": {"full_bytes": est.graph_full, "partial_bytes": est.graph_partial},
                   "num_ctx": req.context, "num_parallel": req.batch, "gpus": names},
            log="scheduler")

    def prefill_batching(self, req: "FitRequest") -> PrefillBatching:
        """api/types.go: num_batch 512 (one ubatch); flash attention where OLLAMA_FLASH_ATTENTION asks."""
        return {"n_batch": NUM_BATCH, "n_ubatch": NUM_BATCH, "flash_attn": bool(setting(req, "flash_attn", False))}

    def default_context(self, m: ModelSpec, devices: Sequence["Device"],
                        settings: Mapping[str, Any] | None = None) -> tuple[int, str] | None:
        return default_num_ctx(self.family, m, devices, int((settings or {}).get("gpu_overhead", 0)))

    def notes(self, req: "FitRequest") -> list[str]:
        out = super().notes(req)
        if self.family.name is not None:
            out.append(self.family.note)
        if self.family.parallel > 1 and req.batch == 1 and setting(req, "num_parallel_env") is None:
            out.append(f"Ollama {self.family.name} would run {self.family.parallel} slots (num_ctx x "
                       f"{self.family.parallel} cells) where they fit; --batch {self.family.parallel} plans that")
        return out

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
        used = [d.index for d in result.devices if d.needed_bytes]
        if used and not r.planning:
            env.insert(0, "CUDA_VISIBLE_DEVICES=" + ",".join(used))
        tag = (r.engine_settings or {}).get("ollama_tag")
        model = tag or r.model.key
        opts = ""
        if p.strategy == Strategy.CPU_OFFLOAD:
            opts = f"  # or, per model: /set parameter num_gpu {p.gpu_layers}"
        return " ".join(env) + f" ollama serve & ollama run {model}" + opts

    def parse_command(self, argv: Sequence[str], env: Mapping[str, str]) -> ServerCommand:
        return parse_command(argv, env)

    def environment_command(self, model: str, env: Mapping[str, str]) -> ServerCommand | None:
        """`here` / `check MODEL` on an Ollama box: the server's OLLAMA_* decide as Ollama reads them."""
        said = tuple(f"{k}={env[k]}" for k in sorted(env) if k.startswith("OLLAMA_"))
        if not said:
            return None
        return dataclasses.replace(parse_command(["run", model], env), environment=said)

    def settings_for(self, m: ModelSpec, q: QuantFormat, catalog: Any, settings: dict[str, Any]) -> dict[str, Any]:
        """The library tag that serves this model in this format, for `ollama run TAG` (none: a
        Modelfile of one's own)."""
        if settings.get("ollama_tag"):
            return settings
        tag = next((t.key for t in catalog.ollama_tags.values() if t.model == m.key and t.quant == q.key), None)
        return {**settings, "ollama_tag": tag} if tag else settings


_FAMILIES = {name: Ollama(fam) for name, fam in FAMILIES.items()}
_ALIASES = {"0.5": "0.6", "0.6": "0.6", "0.7": "0.9", "0.8": "0.9", "0.9": "0.9", "0.10": "0.12", "0.11": "0.12",
            "0.12": "0.12"}


def for_version(version: str | None) -> Ollama:
    if version is None:
        return _FAMILIES[None]
    key = _ALIASES.get(".".join(version.split(".")[:2]))
    if key is None:
        from ...errors import unknown

        raise unknown("Ollama version family", version, [k for k in FAMILIES if k])
    return _FAMILIES[key]


# ---- `ollama run TAG` / `ollama serve` and the server's environment (envconfig/config.go) -------------
_BOOL = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}  # strconv.ParseBool
_RUN_SWITCHES = {"--verbose", "--insecure", "--nowordwrap", "--hidethinking", "--think"}
_RUN_VALUES = {"--format", "--keepalive"}


def _env(env: Mapping[str, str], key: str) -> str:
    """envconfig.Var: the value trimmed of spaces and quotes."""
    return (env.get(key) or "").strip().strip("\"'")


def parse_command(argv: Sequence[str], env: Mapping[str, str]) -> ServerCommand:
    """`ollama run TAG [PROMPT]` under the server's environment (OLLAMA_NUM_PARALLEL,
    OLLAMA_CONTEXT_LENGTH, OLLAMA_KV_CACHE_TYPE, OLLAMA_FLASH_ATTENTION, OLLAMA_GPU_OVERHEAD,
    OLLAMA_SCHED_SPREAD, CUDA_VISIBLE_DEVICES). A bad value of a known variable is a UsageError
    naming it (Ollama itself would fall back to its default with a warning)."""
    from ...errors import UsageError

    args = list(argv)
    if not args or args[0] not in ("run", "serve"):
        raise UsageError("check -- ollama: give `ollama run TAG` (or `ollama serve`, with the model as MODEL)")
    if args[0] == "serve":
        raise UsageError("ollama serve loads models on request: give `gpufit check -- ollama run TAG` with the "
                         "serve environment (OLLAMA_* variables) set")
    model = None
    unknown_flags: list[str] = []
    ignored: list[str] = []
    i = 1
    while i < len(args):
        a = args[i]
        if a in _RUN_VALUES and i + 1 < len(args):
            ignored.append(a)
            i += 2
            continue
        if a in _RUN_SWITCHES:
            ignored.append(a)
        elif a.startswith("-"):
            unknown_flags.append(a)
        elif model is None:
            model = a
        i += 1
    if not model:
        raise UsageError("ollama run names no model: give `ollama run TAG`")
    if ":" not in model.rsplit("/", 1)[-1]:
        model += ":latest"  # Ollama's own rule for a name without a tag
    settings: dict[str, Any] = {"ollama_tag": model}
    notes: list[str] = []

    def uint(key: str) -> int | None:
        v = _env(env, key)
        if not v:
            return None
        if not v.isdigit():
            raise UsageError(f"{key}={v!r}: expected a whole number (Ollama would ignore it and use its default)")
        return int(v)

    par = uint("OLLAMA_NUM_PARALLEL")
    if par is not None:
        settings["num_parallel_env"] = par
    ctx = uint("OLLAMA_CONTEXT_LENGTH")
    overhead = uint("OLLAMA_GPU_OVERHEAD")
    if overhead:
        settings["gpu_overhead"] = overhead
    for key, name in (("OLLAMA_FLASH_ATTENTION", "flash_attn"), ("OLLAMA_SCHED_SPREAD", "sched_spread")):
        v = _env(env, key)
        if v:
            if v.lower() not in _BOOL:
                raise UsageError(f"{key}={v!r}: expected 1/true or 0/false")
            settings[name] = _BOOL[v.lower()]
    kv_dtype = None
    kv = _env(env, "OLLAMA_KV_CACHE_TYPE").lower()
    if kv:
        if kv not in ("f16", "q8_0", "q4_0"):
            from ...errors import unknown

            raise unknown("OLLAMA_KV_CACHE_TYPE", kv, ("f16", "q8_0", "q4_0"))
        if settings.get("flash_attn"):
            kv_dtype = {"f16": "fp16", "q8_0": "q8_0", "q4_0": "q4_0"}[kv]
        else:
            notes.append(f"OLLAMA_KV_CACHE_TYPE={kv} is ignored without OLLAMA_FLASH_ATTENTION=1: the cache stays f16")
    return ServerCommand(engine="ollama", model=model, context=ctx, batch=par if par and par > 1 else None,
                         kv_dtype=kv_dtype, gpus=env.get("CUDA_VISIBLE_DEVICES"), settings=settings,
                         ignored=tuple(ignored), unknown=tuple(unknown_flags), notes=tuple(notes))
