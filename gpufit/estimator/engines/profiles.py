"""Engine profiles: what each inference engine really reserves, as named constants with their source.

All figures are bytes unless named otherwise. They are estimates of behaviour documented in each
engine's source; `bench/accuracy.py` checks them against measured load logs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...catalog.types import GpuSpec
from ...units import MIB


@dataclass(frozen=True)
class EngineProfile:
    """What one inference engine reserves and how fast it runs, as named constants."""
    key: str
    # per-GPU runtime overhead outside tensors: CUDA context, cuBLAS/cuDNN workspaces, graphs
    cuda_context_bytes: int
    cuda_graph_bytes: int
    # tokens one forward step processes at most (activation peak scales with it)
    step_tokens: int
    # the engine keeps token embeddings in host memory (llama.cpp: token_embd stays on the CPU)
    embeddings_on_host: bool
    # fraction of each card the engine claims up front (vLLM gpu_memory_utilization); None = on demand
    default_utilization: float | None
    # decode efficiency: achieved / peak memory bandwidth at batch 1 (calibrated in bench/accuracy.py)
    decode_efficiency: float
    # prefill efficiency: achieved / peak dense tensor FLOP/s (calibrated in bench/accuracy.py)
    prefill_efficiency: float
    supports_offload: bool
    supports_tensor_parallel: bool
    source: str
    # fixed time per transformer layer per decoded token that does not shrink with the bytes read
    # (kernel launches, small ops, synchronisation), in GPU clock cycles (the small kernels run at the
    # core clock): the time on a card is cycles / its boost clock (speed.layer_latency_s); 0 where no
    # measurement calibrates it
    decode_layer_cycles: float = 0.0


# PyTorch's CUDA context + cuBLAS workspace on Ampere/Hopper is ~0.5 GiB once kernels are loaded
# (vLLM logs "non_torch_memory" ~0.3-0.6 GiB per rank); CUDA graph capture for the default
# capture sizes took ~0.5 GiB in vLLM's own logs ("Graph capturing finished ... took 0.5x GiB").
VLLM = EngineProfile(
    key="vllm",
    cuda_context_bytes=512 * MIB,
    cuda_graph_bytes=512 * MIB,
    # vllm/engine/arg_utils.py (V1): default max_num_batched_tokens 8192 for the OpenAI server on GPUs
    step_tokens=8192,
    embeddings_on_host=False,
    # vllm/config: gpu_memory_utilization default 0.9; at start free memory must cover it
    default_utilization=0.90,
    decode_efficiency=0.75,
    prefill_efficiency=0.45,
    supports_offload=True,  # --cpu-offload-gb
    supports_tensor_parallel=True,
    source="vLLM V1: vllm/config (gpu_memory_utilization=0.9), vllm/engine/arg_utils.py "
    "(max_num_batched_tokens), vllm/v1/worker/gpu_worker.py (profile run, free-memory check)",
)

# llama.cpp at batch 1 spends a fixed time per layer and token besides reading weights (a dozen small
# kernels per layer: norms, rope, softmax, adds, copies, the activation quantization; their run and
# launch gaps dominate on small models). They run at the core clock, so the fixed part is a number of
# cycles: fitted with the decode efficiencies below (bench/calibrate.py, 371 decode rows, 2023 and May
# 2024 builds, 1-8 GPUs), divided by each card's boost clock (speed.boost_clock_ghz: RTX 3090 1.70
# GHz -> 115 us, RTX 4090 2.52 GHz -> 77 us, A100 1.41 GHz -> 138 us per layer).
LLAMA_CPP_DECODE_LAYER_CYCLES = 195e3

# llama.cpp: CUDA context ~250-300 MiB (not in its log); compute buffer sized by ggml-alloc for one
# ubatch (default n_ubatch = 512, common/common.h); token_embd kept in host memory
# (llama.cpp/src/llama-model.cpp: the input layer is assigned to the CPU buffer type).
LLAMA_CPP = EngineProfile(
    key="llama.cpp",
    cuda_context_bytes=300 * MIB,
    cuda_graph_bytes=0,
    step_tokens=512,
    embeddings_on_host=True,
    default_utilization=None,
    # fitted by bench/calibrate.py (see "calibrated speed factors" below): the defaults serve cards
    # whose memory class / datasheet kind has no measured rows
    decode_efficiency=0.89,
    prefill_efficiency=0.26,
    supports_offload=True,
    supports_tensor_parallel=False,
    source="llama.cpp: common/common.h (n_ubatch 512), src/llama-model.cpp (input layer on CPU), "
    "load logs in bench/data/memory.csv; speed factors fitted on bench/data/tokens_per_s.csv",
    decode_layer_cycles=LLAMA_CPP_DECODE_LAYER_CYCLES,
)

# Ollama runs llama.cpp; it also keeps a per-GPU minimum free (discover/gpu.go: CudaMinimumMemory /
# GpuInfo.MinimumMemory = 457 MiB) plus OLLAMA_GPU_OVERHEAD (default 0), and loads a model onto the
# fewest GPUs that hold it (server/sched.go pickBestFullFitByLibrary).
OLLAMA_MIN_MEMORY = 457 * MIB
# Ollama runs llama.cpp's kernels and buffers: llama.cpp's profile and fitted speed factors (the data
# has no Ollama rows), plus its per-GPU minimum.
OLLAMA = dataclasses.replace(
    LLAMA_CPP,
    key="ollama",
    cuda_context_bytes=LLAMA_CPP.cuda_context_bytes + OLLAMA_MIN_MEMORY,
    source="ollama: discover/gpu.go (457 MiB CUDA minimum), envconfig (OLLAMA_GPU_OVERHEAD), "
    "server/sched.go (fewest-GPU packing); runs llama.cpp underneath",
)

# transformers + accelerate device_map="auto": weights placed layer by layer, KV cache grows
# dynamically (DynamicCache), eager step over the whole prompt.
TRANSFORMERS = EngineProfile(
    key="transformers",
    cuda_context_bytes=512 * MIB,
    cuda_graph_bytes=0,
    step_tokens=2048,
    embeddings_on_host=False,
    default_utilization=None,
    decode_efficiency=0.40,
    prefill_efficiency=0.30,
    supports_offload=True,  # device_map="auto" spills to CPU
    supports_tensor_parallel=False,
    source="transformers/accelerate: device_map='auto' (infer_auto_device_map), DynamicCache",
)

PROFILES = {p.key: p for p in (VLLM, LLAMA_CPP, OLLAMA, TRANSFORMERS)}

# llama.cpp compute buffer, no flash attention: ggml-alloc sizes it for the worst-case graph of one
# ubatch (n_ub = min(n_ctx, n_ubatch) tokens, logits for all of them), reusing memory as tensors die,
# so it is the largest of three peaks, all f32 per ubatch token:
#   attention: KQ scores n_ctx x n_head + the KQ mask n_ctx + ~4 hidden-wide tensors
#   MLP:       the mask + gate and up n_ff each + 2 hidden-wide tensors
#   output:    logits n_vocab + the final hidden state (the mask is dead by then)
# Checks against bench/data/memory.csv: Llama 3 8B ctx 8192 -> attention 512 + 16 + 32 = 560.00 MiB
# (the CUDA0 compute buffer of every 1-GPU May 2024 log); Llama 2 7B ctx 512 -> output 62.5 + 8 =
# 70.50 MiB and Llama 2 70B ctx 512 -> MLP 1 + 112 + 32 = 145.00 MiB (the 2023 logs' VRAM scratch);
# Llama 2 13B ctx 512 -> attention 81 MiB where the 2023 log shows 75 (that build kept fewer
# hidden-wide tensors live in attention). `python bench/accuracy.py` prints every row.
LLAMA_CPP_ATTN_HIDDEN_F32_TENSORS = 4
LLAMA_CPP_MLP_HIDDEN_F32_TENSORS = 2
LLAMA_CPP_MLP_FF_F32_TENSORS = 2
# with more than one GPU llama.cpp's scheduler keeps extra copies for pipeline parallelism; the logs
# show 640 MiB per device where one GPU shows 560 MiB for Llama 3 8B at 8192 (+80 MiB, ~ +14 %)
LLAMA_CPP_MULTI_GPU_COMPUTE_FACTOR = 640 / 560

# vLLM activation peak per step token: residual/norm/attention-out tensors (~4 x hidden) and the
# gate_up + act MLP intermediates (3 x intermediate) in the model dtype, plus fp32 logits for the
# sampled rows (max_num_seqs, default 256 in vllm/config).
VLLM_HIDDEN_TENSORS = 4
VLLM_MLP_TENSORS = 3
VLLM_MAX_NUM_SEQS = 256
# transformers >= 4.45 generate() asks the model for the last position's logits only
# (GenerationMixin: model_inputs["logits_to_keep"] = 1), so the prompt's logits never materialise
TRANSFORMERS_LOGITS_LAST_TOKEN_ONLY = True

# interconnect all-reduce latency per tensor-parallel all-reduce (2 per layer), seconds
ALLREDUCE_LATENCY_S = {"nvlink": 8e-6, "pcie": 25e-6}
# per-hop latency between pipeline stages / layer-split devices at batch 1, seconds
STAGE_HOP_LATENCY_S = 30e-6
# host memory bandwidth assumed for layers offloaded to the CPU, GB/s (dual-channel DDR5-4800 ~ 77
# GB/s peak; llama.cpp CPU decode reaches about half). Shown in the basis; override is a later option.
HOST_DECODE_BANDWIDTH_GBPS = 40.0

# ---- calibrated speed factors -------------------------------------------------------------------
# Fitted by `.venv/bin/python bench/calibrate.py` on bench/data/tokens_per_s.csv: public llama.cpp
# runs (XiongjieDai/GPU-Benchmarks-on-LLM-Inference, llama-bench May 2024 and `main` 2023) on RTX 3090 /
# 4090 / 4000 Ada / 6000 Ada / A6000, A100 PCIe / SXM4 80GB and H100 PCIe, Llama 2 7/13/70B and Llama 3
# 8/70B at Q4_0 / Q4_K_M / F16 on 1-8 GPUs -- the rows bench/accuracy.py maps (LLaMA v1, Apple silicon
# and the 2023 multi-GPU row-split runs excluded). vLLM and transformers have no rows: their factors
# above are uncalibrated estimates.


def memory_class(memory_type: str | None) -> str | None:
    """'HBM2e' -> 'HBM', 'GDDR6X' -> 'GDDR', 'LPDDR5' -> 'LPDDR'; None when unknown."""
    if not memory_type:
        return None
    for cls in ("HBM", "LPDDR", "GDDR"):
        if memory_type.upper().startswith(cls):
            return cls
    return None


# Decode over a layer split: what a token pays beyond its layers' reads, a fixed cost once the model
# spans devices plus a cost per hop, fitted with the factors below by bench/calibrate.py over the
# 183 multi-GPU decode rows. Measured against the one-GPU runs of the same card and model: 0.37 /
# 0.64 / 0.83 ms per token on 2 / 4 / 8 RTX 4090s, 0.6-0.9 ms on 4 RTX 4000 Ada / 6000 Ada / A6000,
# 0.9-1.5 ms on 4 H100 PCIe / A100 PCIe (one host thread queues every device's work per token, and
# the hidden state crosses PCIe at each hop).
LLAMA_CPP_DECODE_SPLIT_S = {"fixed": 0.75e-3, "per_hop": 0.05e-3}

# Decode: achieved / datasheet bandwidth by memory class, fitted together with the per-layer cycles
# by grid search minimising the mean |log(gpufit / measured)| over 371 decode rows (GDDR 251: 3090,
# 4090, 4000 Ada, 6000 Ada, A6000; HBM 120: A100 PCIe / SXM4, H100 PCIe). HBM cards reach a smaller
# share of their bandwidth at batch 1 (too few bytes in flight per matrix-vector kernel).
_LLAMA_CPP_DECODE = {"GDDR": 0.91, "HBM": 0.65}
DECODE_EFFICIENCY_BY_MEMORY: dict[str, dict[str, float]] = {
    "llama.cpp": _LLAMA_CPP_DECODE,
    "ollama": _LLAMA_CPP_DECODE,
}
def decode_efficiency(engine: str, spec: GpuSpec | None) -> tuple[float, str]:
    """(achieved / peak bandwidth at batch 1, what chose it) for `engine` on a card (GpuSpec or None):
    the engine's per-memory-class factor where one was fitted, else the engine default."""
    cls = memory_class(spec.memory_type) if spec is not None else None
    table = DECODE_EFFICIENCY_BY_MEMORY.get(engine, {})
    if cls in table:
        return table[cls], f"{engine} on {cls} memory (calibrated)"
    if table:
        return PROFILES[engine].decode_efficiency, f"{engine} default (no measured rows for this memory class)"
    return PROFILES[engine].decode_efficiency, f"{engine} default (not calibrated: bench/data has no {engine} rows)"
