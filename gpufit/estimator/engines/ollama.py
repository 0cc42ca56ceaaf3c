"""Ollama: llama.cpp underneath, plus its scheduler (server/sched.go), its own memory estimate
(llm/memory.go, fs/ggml/ggml.go GraphSize) and per-GPU minimum (discover/gpu.go). It loads a model onto
the fewest GPUs that hold it.

Version families (`--engine ollama@0.6`, or one release: `ollama@0.11.3`), from Ollama's source
(ollama/ollama, tags v0.1.45 - v0.12.10 read one by one):
  0.3 / 0.4 / 0.5 / 0.6 (<= 0.6.6)  num_ctx 2048, 4 parallel slots when they fit
  0.9 (0.6.7 - 0.9.x)               num_ctx 4096, 2 slots
  0.11 / 0.12 (0.10 - 0.12.10)      num_ctx 4096, 1 slot
  current (>= 0.15.5)               num_ctx by total VRAM (server/routes.go: >= 47 GiB 262144, >= 23 GiB
                                    32768, else 4096), 1 slot; GGML models load through llama-server
                                    (v0.30+), so the placement is llama.cpp's, with Ollama's per-GPU
                                    minimum kept free
Within the memory.go families a release's own behaviour applies (Family: blocks from blk.0 up before
0.7.0, one KV total before 0.6.3, the projector up front before 0.7.1, gpt-oss's graph by 0.11.x
release, ...), with each block's bytes as the GGUF holds them (gguf_types). They place layers as
Ollama's estimate does and report its `memory.required.*` figures in `engine_memory`;
`bench/ollama_offload.py` compares them with the public server logs, each at its own release.
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
from ..types import Message, Strategy
from .base import EngineMemory, PrefillBatching, ServerCommand
from .llama_cpp import LLAMA_KV, MMQ_FROM_CC, LlamaCpp, setting
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
# server/routes.go: gpt-oss gets num_ctx >= 8192 (outside "low VRAM mode", total < 20 GiB, from 0.11.4)
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


Release = tuple[int, int, int]
# catalog families the Ollama engine runs in v0.12.x (fs/ggml/ggml.go OllamaEngineRequired at v0.12.3)
OLLAMA_ENGINE_FAMILIES = ("gemma3", "gpt-oss", "qwen3", "qwen3-2507", "llama4", "qwen3-vl")
# models whose Ollama library GGUF is another architecture than the catalog family suggests: the
# library's mistral-small3.1 / 3.2 carry the Pixtral tower as "mistral3" (no GraphSize case: the
# fallback); Mistral Small 2501 and Mistral Nemo convert as "llama" (llama.cpp convert_hf_to_gguf.py)
LLAMA_ARCH_FAMILIES = ("llama2", "llama3", "mistral", "mixtral", "yi", "mistral-nemo", "mistral-small")
NOT_LLAMA_ARCH = ("mistral-small-3.2-24b",)


@dataclass(frozen=True)
class Family:
    name: str | None  # None = the current release
    num_ctx: int | None  # None = by total VRAM
    parallel: int  # default slots (tried first when OLLAMA_NUM_PARALLEL is unset; else 1)
    old_estimate: bool  # llm/memory.go EstimateGPULayers places the layers
    note: str
    # the release whose llm/memory.go and fs/ggml/ggml.go this family follows (the last of its line)
    release: Release = (0, 12, 10)

    # ---- what changed between releases (ollama/ollama, the tags named) ---------------------------
    @property
    def ascending(self) -> bool:
        """Before v0.7.0 (commit 0478d440f) memory.go placed layers from blk.0 upward and counted
        every layer left over at the size of the last block."""
        return self.release < (0, 7, 0)

    @property
    def uniform_kv(self) -> bool:
        """Before v0.6.3 (f66216e39, heterogeneous KV layer sizes) GraphSize returned one KV total,
        charged as total / block_count a layer (no sliding-window cells)."""
        return self.release < (0, 6, 3)

    @property
    def projector_first(self) -> bool:
        """Before v0.7.1 (d75557747) an Ollama-engine vision projector (weights + graph) was charged to
        the first GPU up front (gpuZeroOverhead); since then with the output layer (memoryLastLayer)."""
        return self.release < (0, 7, 1)

    @property
    def llama_full_vocab(self) -> bool:
        """Since v0.3.10 (2003d6015, "llama3.1 memory") llama's graphFullOffload is at least the vocab
        graph, 4 x batch x (emb + vocab)."""
        return self.release >= (0, 3, 10)

    @property
    def gpt_oss_graph(self) -> str:
        """fs/ggml/ggml.go case "gptoss", over kvTotal at the full context on every layer:
        v0.11.0-0.11.2 full = 4 x heads / KV heads x kvTotal / 6 and partial = 2 x full; v0.11.3-0.11.4
        (fcec04bf4) partial = full; since v0.11.5 partial = 2 x heads / KV heads x kvTotal / 6 (full
        falls back to partial) and, with flash attention (v0.11.8), (4 x slots + ctx / 1024 + 110) MiB."""
        if self.release < (0, 11, 3):
            return "double"
        return "full" if self.release < (0, 11, 5) else "partial"

    def own_engine_layout(self, m: ModelSpec) -> bool:
        """From v0.11.11 a model the Ollama engine runs (fs/ggml/ggml.go OllamaEngineRequired, v0.12.3:
        gemma3, gemma3n, mistral3, qwen3, qwen3moe, llama4, mllama, qwen25vl, gptoss) is placed by the
        runner's measured layout (llm/server.go createLayout), not by llm/memory.go."""
        return self.release >= (0, 11, 11) and m.family in OLLAMA_ENGINE_FAMILIES

    def flash_attn_default(self, m: ModelSpec) -> bool:
        """v0.11.8 (85ccf7354) turns flash attention on for gpt-oss (llm/memory.go: OLLAMA_FLASH_ATTENTION
        || the model's wish); before, OLLAMA_FLASH_ATTENTION (default off) decides for every model."""
        return m.family == "gpt-oss" and self.release >= (0, 11, 8)

    def flash_attn_overridable(self) -> bool:
        """From v0.12.4 (fdb109469) OLLAMA_FLASH_ATTENTION=0 turns a model's default off; before, the
        model's wish wins over the variable."""
        return self.release >= (0, 12, 4)


def family_for(release: Release, name: str | None = None) -> Family:
    """The family a release belongs to, from server/sched.go defaultParallel (4 to v0.6.6, 2 from v0.6.7,
    1 from v0.10.0) and envconfig OLLAMA_CONTEXT_LENGTH (2048 to v0.6.6, then 4096)."""
    ctx = 2048 if release < (0, 6, 7) else 4096
    par = 4 if release < (0, 6, 7) else 2 if release < (0, 10, 0) else 1
    label = name or ".".join(map(str, release))
    return Family(label, ctx, par, True, f"Ollama {label}: num_ctx {ctx}, {par} parallel slot{'s' if par > 1 else ''}"
                  f"{' where they fit' if par > 1 else ''}, the llm/memory.go estimate", release=release)


FAMILIES = {
    "0.3": family_for((0, 3, 14), "0.3"),
    "0.4": family_for((0, 4, 7), "0.4"),
    "0.5": family_for((0, 5, 13), "0.5"),
    "0.6": family_for((0, 6, 6), "0.6"),
    "0.9": family_for((0, 9, 6), "0.9"),
    "0.11": family_for((0, 11, 11), "0.11"),
    "0.12": family_for((0, 12, 10), "0.12"),
    None: Family(None, None, 1, False, "Ollama: current release (>= 0.15.5: num_ctx by total VRAM, 1 slot, "
                 "llama-server placement); --engine ollama@0.12, @0.9, @0.6 ... (or a release, ollama@0.11.3) "
                 "for older ones", release=(99, 0, 0)),
}
# the oldest release whose llm/memory.go this module follows (EstimateGPULayers as of v0.1.45)
OLDEST = (0, 1, 45)
LAST_OLD_ESTIMATE = (0, 12, 10)  # v0.12.11 (f560bd077) moved every model to the new layout
# the last release of each line (`git tag` of ollama/ollama): a patch past it was never released
LAST_PATCH = {(0, 1): 48, (0, 2): 8, (0, 3): 14, (0, 4): 7, (0, 5): 13, (0, 6): 8, (0, 7): 1, (0, 8): 0,
              (0, 9): 6, (0, 10): 1, (0, 11): 11, (0, 12): 10}


def default_num_ctx(fam: Family, m: ModelSpec, devices: Sequence["Device"], gpu_overhead: int = 0) -> tuple[int, str]:
    """Ollama's num_ctx when none is asked for, capped at the model's context (Ollama reduces a
    num_ctx above the model's training context)."""
    total = sum(max(0, d.total_bytes - gpu_overhead) for d in devices)
    if fam.num_ctx is not None:
        n, why = fam.num_ctx, f"Ollama {fam.name}'s default num_ctx"
    else:
        n = next(ctx for floor, ctx in VRAM_CTX_TIERS if total >= floor)
        why = f"Ollama's default num_ctx for {total / GIB:.0f} GiB of total VRAM"
    # server/routes.go: unconditional before v0.11.4 ("server: Reduce gpt-oss context length for small VRAM GPUs")
    if m.family == "gpt-oss" and (fam.release < (0, 11, 4) or total >= LOW_VRAM) and n < GPT_OSS_MIN_CTX:
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
    gpu_weights: int = 0  # weights of the blocks (and output layer, projector weights) the GPUs hold


def kv_per_layer(req: "FitRequest", kv_type: str, num_ctx: int, parallel: int,
                 fam: Family | None = None) -> list[int]:
    """fs/ggml/ggml.go GraphSize: KV bytes of each layer for num_ctx x parallel cells (before v0.6.3
    one total, charged evenly: total / block_count a layer)."""
    fam = fam or FAMILIES["0.12"]
    m = req.model
    ctx = num_ctx * parallel
    per_cell = 2 * m.kv_heads * m.head_dim * KV_BYTES.get(kv_type, 2.0)
    if m.is_mla:  # deepseek2 GGUF: K = kv_lora_rank + rope, V = v_head_dim, per head as GGUF lists them
        per_cell = m.kv_heads * ((m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0) + (m.v_head_dim or 0)) \
            * KV_BYTES.get(kv_type, 2.0)
    full = int(ctx * per_cell)
    if fam.uniform_kv:
        total = int(ctx * m.layers * per_cell)
        return [total // m.layers] * m.layers
    out = [full] * m.layers
    batch = min(ctx, NUM_BATCH)
    if m.family == "gemma3" and m.sliding_window:
        cells = parallel * m.sliding_window + batch
        out = [full if (i + 1) % GEMMA3_GLOBAL_EVERY == 0 else int(cells * per_cell) for i in range(m.layers)]
    elif m.family == "gpt-oss":
        out = [int((parallel * GPT_OSS_SWA_CELLS + batch) * per_cell) if i % 2 == 0 else full
               for i in range(m.layers)]
    if m.kv_shared_layers or m.global_head_dim or m.global_kv_heads:
        out = _gemma_n_kv(m, out, ctx, KV_BYTES.get(kv_type, 2.0))
    return out


def kv_full_context(req: "FitRequest", kv_type: str, num_ctx: int, parallel: int) -> int:
    """GraphSize's kvTotal: the full context on every layer, summed before an architecture's own cache
    sizes replace the per-layer figures (what gpt-oss's graph estimate is taken from)."""
    m = req.model
    per_cell = 2 * m.kv_heads * m.head_dim * KV_BYTES.get(kv_type, 2.0)
    return int(num_ctx * parallel * per_cell) * m.layers


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


def graph_sizes(req: "FitRequest", num_ctx: int, parallel: int, kv_total: int, flash_attn: bool,
                fam: Family | None = None, kv_type: str = "f16") -> tuple[int, int]:
    """(graphPartialOffload, graphFullOffload) of GraphSize for the architectures gpufit's catalog
    has (llama / mistral / mixtral, gemma*, qwen2, deepseek2, gpt-oss); others take Ollama's fallback,
    partial = GQA x kv / 6, full = partial."""
    fam = fam or FAMILIES["0.12"]
    m = req.model
    ctx = num_ctx * parallel
    batch = min(ctx, NUM_BATCH)
    emb, heads, kvh, vocab = m.hidden, m.heads, m.kv_heads, m.vocab
    hd = m.head_dim
    full = partial = 0
    family = m.family
    if family in LLAMA_ARCH_FAMILIES and m.key not in NOT_LLAMA_ARCH:
        full = 4 * batch * (1 + 4 * emb + ctx * (1 + heads))
        if fam.llama_full_vocab:
            full = max(full, 4 * batch * (emb + vocab))
        partial = 4 * batch * emb + max(
            4 * batch * (1 + emb + max(ctx, emb)) + emb * emb * 9 // 16 + 4 * ctx * (batch * heads + hd * kvh),
            4 * batch * (emb + vocab) + emb * vocab * 105 // 128)
        if m.is_moe:  # mixtral 8x7b (ffn_gate.0.weight): ff = expert width
            ff = required(m, "moe_intermediate", m.moe_intermediate)
            full = 4 * batch * (2 + 3 * emb + ctx * (1 + heads) + 2 * kvh + ff)
            partial = max(4 * batch * (3 + hd * kvh + emb + ctx * (1 + heads) + ff)
                          + (emb * emb + 3 * emb * kvh * ff) * 9 // 16,
                          4 * batch * (1 + 2 * emb + ctx * (1 + heads)) + emb * (6 * ctx * kvh // heads + emb * 9 // 16))
    elif family in ("gemma2", "gemma3"):
        full = max(4 * batch * (emb + vocab), 4 * batch * (2 + ctx + ctx * heads + 2 * emb + 2 * hd * heads))
        partial = max(4 * emb * batch + emb * vocab * 105 // 128 + 4 * vocab * batch,
                      4 * batch * (2 * emb + 1 + 2 * hd * heads + ctx + ctx * heads) + 4 * hd * ctx * 8
                      + emb * hd * heads * 9 // 16)
    elif family in ("qwen2", "qwen2.5", "qwen2.5-coder", "deepseek-r1-distill-qwen"):
        full = max(4 * batch * (emb + vocab), 4 * batch * (1 + 2 * emb + ctx + ctx * heads))
        partial = max(4 * batch * (emb + vocab) + emb * vocab * 105 // 128,
                      4 * (batch * (1 + 2 * emb + ctx * (1 + heads)) + emb * (1 + ctx)))
    elif family in ("deepseek-v2", "deepseek-v3", "deepseek-r1") and m.is_mla:
        hk = (m.qk_nope_head_dim or 0) + (m.qk_rope_head_dim or 0)
        full = max(4 * batch * (3 * emb + vocab), 4 * batch * (3 * emb + 2 + ctx * (1 + kvh) + 2 * hk * kvh))
        partial = max(4 * batch * (3 * emb + vocab) + emb * vocab * 105 // 128,
                      4 * batch * (2 * emb + 1 + 2 * hk * kvh + ctx + ctx * kvh) + 4 * hk * ctx * kvh
                      + emb * hk * kvh * 9 // 16)
    elif family == "gpt-oss":
        kv_full = kv_full_context(req, kv_type, num_ctx, parallel)
        gqa = heads // max(kvh, 1)
        if fam.gpt_oss_graph == "partial":
            partial = 2 * gqa * kv_full // 6
            if flash_attn:
                partial = (4 * parallel + (ctx >> 10) + 110) * MIB
        else:
            full = 4 * gqa * kv_full // 6
            partial = 2 * full if fam.gpt_oss_graph == "double" else full
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
    """Bytes of each block as the GGUF holds it (memory.go reads every blk.i's own size): a K-quant
    mix per layer where llama.cpp's quantizer varies the types (gguf_types); else DeepSeek's leading
    dense layers as a fraction of its MoE layers, the body total being the catalog's."""
    from ..gguf_types import block_bytes
    from ..params import attention_params, mlp_params

    mixed = block_bytes(m, q)
    if mixed is not None:
        return mixed
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


def output_layer_bytes(m: ModelSpec, q: QuantFormat) -> int:
    """memoryLayerOutput: output_norm (F32) + output.weight, or token_embd where the output is tied --
    quantized then as the output tensor (llama-quant.cpp: Q6_K for K-quants and Q4_x, Q8_0 for Q8_0)."""
    ws = memory.weight_split(m, q)
    head = ws.output
    if not head:
        bits = q.output_bits if (q.kind == "gguf" and q.output_bits) else (q.embed_bits or q.bits_per_weight)
        head = int(m.vocab * m.hidden * bits / 8)
    return m.hidden * 4 + head


def estimate_gpu_layers(req: "FitRequest", free: Sequence[int], num_ctx: int, parallel: int, kv_type: str,
                        flash_attn: bool, gpu_overhead: int = 0, num_gpu: int | None = None,
                        fam: Family | None = None) -> OllamaEstimate:
    """llm/memory.go EstimateGPULayers for one library's GPUs (free memory of each, in the order the
    scheduler passes them): per-GPU admission, layers round-robin over the GPUs with room (from the
    last block down since v0.7.0, from blk.0 up before), the output layer last, then the full or
    partial graph on every GPU used."""
    fam = fam or FAMILIES["0.12"]
    m = req.model
    kv = kv_per_layer(req, kv_type, num_ctx, parallel, fam)
    kv_total = sum(kv)
    partial, full = graph_sizes(req, num_ctx, parallel, kv_total, flash_attn, fam, kv_type)
    if len(free) > 1:
        full = partial  # multigpu always uses the partial graph size
    graph = max(partial, full)
    blks = layer_weights(m, req.quant)
    layer0 = blks[0] + kv[0]
    proj_w, proj_g = projector_bytes(m)
    output = output_layer_bytes(m, req.quant)
    # the vision projector: on the first GPU up front before v0.7.1, with the output layer since
    zero = proj_w + proj_g if fam.projector_first else 0
    if not fam.projector_first:
        output += proj_w + proj_g
    n = len(free)
    split = [0] * n
    alloc = [0] * n
    with_space: list[int] = []
    for i, f in enumerate(free):
        gzo = zero if not with_space else 0
        if f < gpu_overhead + gzo + graph + MINIMUM_MEMORY + 2 * layer0:
            continue
        with_space.append(i)
        alloc[i] += MINIMUM_MEMORY + layer0
    overflow = 0
    if with_space:  # (a projector no GPU takes is not counted in required.full before v0.7.1)
        alloc[with_space[0]] += zero
    count = 0
    on_gpu = proj_w if (zero and with_space) else 0
    order = range(m.layers) if fam.ascending else range(m.layers - 1, -1, -1)
    size = layer0
    for i in order:
        size = blks[i] + kv[i]
        if num_gpu is not None and count >= num_gpu:
            if not fam.ascending:
                overflow += size
            continue
        j = len(with_space)
        placed = False
        while j > 0:
            g = with_space[i % j]
            if free[g] > gpu_overhead + alloc[g] + graph + size:
                alloc[g] += size
                split[g] += 1
                count += 1
                placed = True
                on_gpu += blks[i]
                break
            with_space.pop(i % j)
            j -= 1
        if not placed and not fam.ascending:
            overflow += size
    if fam.ascending and count < m.layers:
        overflow += (m.layers - count) * size  # every layer left over at the last block's size
    fully = count >= m.layers
    if num_gpu is None or count < num_gpu:
        j = len(with_space)
        while j > 0:
            g = with_space[count % j]
            if free[g] > gpu_overhead + alloc[g] + graph + output:
                alloc[g] += output
                split[g] += 1
                count += 1
                on_gpu += output - (0 if fam.projector_first else proj_g)
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
                          layer_bytes=layer0, output_bytes=output, gpu_weights=on_gpu if count else 0)


def schedule(req: "FitRequest", frees: Sequence[int], num_ctx: int, parallel: int, kv_type: str, flash_attn: bool,
             gpu_overhead: int = 0, spread: bool = False, fam: Family | None = None
             ) -> tuple[list[int], OllamaEstimate]:
    """server/sched.go with llm/memory.go pickBestFullFitByLibrary: GPUs by free memory, largest first;
    the fewest that hold every layer (all of them with OLLAMA_SCHED_SPREAD), else all with partial
    offload. Returns the indexes (into `frees`) of the GPUs used and the estimate over them."""
    order = sorted(range(len(frees)), key=lambda i: -frees[i])
    sizes = [len(order)] if spread else range(1, len(order) + 1)
    for k in sizes:
        sub = order[:k]
        est = estimate_gpu_layers(req, [frees[i] for i in sub], num_ctx, parallel, kv_type, flash_attn, gpu_overhead,
                                  fam=fam)
        if est.layers >= req.model.layers + 1:
            return sub, est
    est = estimate_gpu_layers(req, [frees[i] for i in order], num_ctx, parallel, kv_type, flash_attn, gpu_overhead,
                              fam=fam)
    return order, est


def schedule_default_parallel(req: "FitRequest", frees: Sequence[int], fam: Family, num_ctx: int, kv_type: str,
                              flash_attn: bool, gpu_overhead: int = 0, spread: bool = False
                              ) -> tuple[int, list[int], OllamaEstimate]:
    """server/sched.go with OLLAMA_NUM_PARALLEL unset: try the family's default slots, then 1; the
    first that loads every layer on the GPUs wins (else the last tried). Returns (slots, GPUs, estimate)."""
    tries = [fam.parallel, 1] if fam.parallel > 1 else [1]
    for par in tries:
        used, est = schedule(req, frees, num_ctx, par, kv_type, flash_attn, gpu_overhead, spread, fam)
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
    def flash_attn(self, req: "FitRequest") -> bool:
        """OLLAMA_FLASH_ATTENTION where set, else the release's default for the model (which the variable
        cannot turn off before v0.12.4)."""
        wish = self.family.flash_attn_default(req.model)
        if wish and not self.family.flash_attn_overridable():
            return True
        return bool(setting(req, "flash_attn", wish))

    def kv_type(self, req: "FitRequest") -> str:
        """OLLAMA_KV_CACHE_TYPE applies only with flash attention (llm/memory.go)."""
        kv = LLAMA_KV.get(req.kv_dtype.key, "f16")
        return kv if self.flash_attn(req) else "f16"

    def gpu_overhead(self, req: "FitRequest") -> int:
        return int(setting(req, "gpu_overhead", 0))

    def estimate(self, req: "FitRequest",
                 devices: Sequence["Device"] | None = None) -> tuple[list[int], OllamaEstimate]:
        devs = list(devices if devices is not None else req.devices)
        frees = [max(0, d.free_bytes - req.reserve_bytes) for d in devs]
        return schedule(req, frees, req.context, req.batch, self.kv_type(req), self.flash_attn(req),
                        self.gpu_overhead(req), bool(setting(req, "sched_spread", False)), self.family)

    # ---- what the engine holds (memory.go families) -----------------------------------------------
    def kv_bytes(self, req: "FitRequest", layers: int | None = None, tp: int = 1) -> int:
        if not self.family.old_estimate:
            return super().kv_bytes(req, layers, tp)
        total = sum(kv_per_layer(req, self.kv_type(req), req.context, req.batch, self.family))
        return int(math.ceil(total * (layers if layers is not None else req.model.layers) / req.model.layers))

    def activation_bytes(self, req: "FitRequest", tp: int = 1, multi_gpu: bool = False) -> int:
        if not self.family.old_estimate:
            return super().activation_bytes(req, tp, multi_gpu)
        kv_total = sum(kv_per_layer(req, self.kv_type(req), req.context, req.batch, self.family))
        partial, full = graph_sizes(req, req.context, req.batch, kv_total, self.flash_attn(req), self.family,
                                    self.kv_type(req))
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
            weights_bytes=est.gpu_weights,
            activation_peak_bytes=est.graph_full if est.layers >= req.model.layers + 1 else est.graph_partial,
            device=",".join(names),
            extra={"required": {"full_bytes": est.required_full, "partial_bytes": est.required_partial,
                                "kv_bytes": est.required_kv, "allocations_bytes": list(est.allocations)},
                   "layers": {"model": req.model.layers + 1, "offload": est.layers, "split": list(est.split)},
                   "graph": {"full_bytes": est.graph_full, "partial_bytes": est.graph_partial},
                   "num_ctx": req.context, "num_parallel": req.batch, "gpus": names},
            log="scheduler")

    def prefill_batching(self, req: "FitRequest") -> PrefillBatching:
        """api/types.go: num_batch 512 (one ubatch); flash attention where OLLAMA_FLASH_ATTENTION asks;
        quantized weights through the vendored ggml's MMQ kernels, as llama.cpp's (llama_cpp.MMQ_FROM_CC).
        The pipeline depth is llama.cpp's (LlamaCpp.pipeline_depth): runner/llamarunner/runner.go
        processBatch synchronizes only after a batch with outputs, so a prompt's batches follow one
        another through the GPUs."""
        return {"n_batch": NUM_BATCH, "n_ubatch": NUM_BATCH, "flash_attn": bool(setting(req, "flash_attn", False)),
                "mmq_from_cc": MMQ_FROM_CC}

    def default_context(self, m: ModelSpec, devices: Sequence["Device"],
                        settings: Mapping[str, Any] | None = None) -> tuple[int, str] | None:
        return default_num_ctx(self.family, m, devices, int((settings or {}).get("gpu_overhead", 0)))

    def notes(self, req: "FitRequest") -> list[str | Message]:
        out = super().notes(req)
        if self.family.name is not None:
            out.append(self.family.note)
        if self.family.old_estimate and self.family.own_engine_layout(req.model):
            out.append(f"Ollama {self.family.name} runs {req.model.name} on its own engine, which places layers by the "
                       "runner's measured sizes (llm/server.go createLayout); this plan is the llm/memory.go estimate "
                       "its llama runner uses, the figures its server log prints up to 0.11.10")
        if self.family.old_estimate and req.devices:
            _, est = self.estimate(req)
            if est.layers == req.model.layers:  # every block, not the output layer (layers.offload N of N+1)
                out.append(Message("ollama_output_on_host", {"release": self.family.name, "output_bytes": est.output_bytes,
                                                             "offload": est.layers, "layers": req.model.layers + 1}))
        if self.family.parallel > 1 and req.batch == 1 and setting(req, "num_parallel_env") is None:
            out.append(f"Ollama {self.family.name} would run {self.family.parallel} slots (num_ctx x "
                       f"{self.family.parallel} cells) where they fit; --batch {self.family.parallel} plans that")
        return out

    def flags(self, result: "FitResult") -> str | None:
        r = result.request
        if "ollama" not in r.quant.engines:
            return None
        tag = (r.engine_settings or {}).get("ollama_tag")
        if r.engine != self.key and (tag is None or (r.engine_settings or {}).get("cpu_moe_layers")):
            # another engine's plan: Ollama's line only where a library tag serves the model and the plan
            # is one Ollama makes (it keeps no expert tensors in host RAM on its own)
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
# a minor version without a patch: the family of its line (0.7 and 0.8 behave as 0.9's last release)
_ALIASES = {"0.3": "0.3", "0.4": "0.4", "0.5": "0.5", "0.6": "0.6", "0.7": "0.9",
            "0.8": "0.9", "0.9": "0.9", "0.10": "0.11", "0.11": "0.11", "0.12": "0.12"}
_RELEASES: dict[Release, Ollama] = {}


def parse_release(version: str) -> Release | None:
    """'0.11.3' (also '0.11.3-rc1', 'v0.5.4-0-g2ddc32d') -> (0, 11, 3); None when it is not X.Y.Z."""
    import re

    hit = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", version.strip())
    return (int(hit.group(1)), int(hit.group(2)), int(hit.group(3))) if hit else None


def for_version(version: str | None) -> Ollama:
    """`ollama@0.6` (a line's family) or `ollama@0.11.3` (that release: what changed in its
    llm/memory.go and fs/ggml/ggml.go, v0.1.45 - v0.12.10)."""
    if version is None:
        return _FAMILIES[None]
    key = _ALIASES.get(version.strip())
    if key is not None:
        return _FAMILIES[key]
    rel = parse_release(version)
    if rel is not None and OLDEST <= rel <= LAST_OLD_ESTIMATE and rel[2] <= LAST_PATCH.get(rel[:2], -1):
        if rel not in _RELEASES:
            _RELEASES[rel] = Ollama(family_for(rel))
        return _RELEASES[rel]
    from ...errors import unknown

    raise unknown("Ollama version family", version, [k for k in FAMILIES if k])


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
