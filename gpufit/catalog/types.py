"""Catalog records: GPU specs, model architectures, quantization formats.

Plain frozen dataclasses. The TOML files in `data/` hold one table per entry whose keys are exactly
these field names; `loader.py` validates types, required fields and unknown keys against them.
Units are in the field names. Every entry carries `source`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model of the catalog: memory, bandwidth, tensor throughput and the NVML names / PCI ids that identify it."""
    key: str  # lowercase, hyphenated: "rtx-3090", "a100-sxm4-40gb"
    name: str  # marketing name: "NVIDIA GeForce RTX 3090"
    vendor_class: str  # "datacenter" | "workstation" | "geforce" | "embedded"
    architecture: str  # "Ampere", "Hopper", ...
    compute_capability: str  # "8.6"
    memory_bytes: int  # total as the driver reports it (NVML fb total) where known, else datasheet GiB * 2**30
    memory_type: str  # "GDDR6X", "HBM3", "LPDDR5", ...
    bandwidth_gbps: float  # GB/s, 10**9 bytes per second, datasheet
    source: str
    nvml_names: tuple[str, ...] = ()  # exact strings nvmlDeviceGetName returns
    pci_device_ids: tuple[str, ...] = ()  # "2204" (device id, hex, 4 digits, upper case)
    aliases: tuple[str, ...] = ()
    fp32_tflops: float | None = None  # non-tensor FP32
    fp16_tflops: float | None = None  # dense tensor FP16 (FP32 accumulate where the datasheet splits)
    bf16_tflops: float | None = None  # dense tensor BF16
    fp8_tflops: float | None = None  # dense tensor FP8
    int8_tops: float | None = None  # dense tensor INT8
    int4_tops: float | None = None  # dense tensor INT4
    fp4_tflops: float | None = None  # dense tensor FP4 (Blackwell)
    cuda_cores: int | None = None
    tensor_cores: int | None = None
    tdp_w: float | None = None
    memory_bus_bits: int | None = None
    interconnect: str | None = None  # "NVLink 4 900 GB/s", "PCIe 4.0 x16", ...
    nvlink_gbps: float | None = None  # total NVLink bandwidth per GPU, GB/s (both directions)
    pcie_gen: int | None = None
    unified_memory: bool = False  # GH200 / Jetson class: GPU memory is host (LPDDR) memory
    # the board's memory as the datasheet states it (GiB * 2**30 or GB * 10**9 as printed), kept apart from
    # memory_bytes, which is what the driver reports and what plans count as free
    datasheet_memory_bytes: int | None = None
    # NVML names / PCI device ids this card shares with a card of another memory size (RTX 5060 Ti 8 GB
    # and 16 GB): a probe matches the entry whose memory_bytes is nearest the reported total
    shared_ids: tuple[str, ...] = ()
    mig: bool = False  # supports MIG
    notes: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model architecture of the catalog: shape, attention layout (GQA, sliding window, MLA) and MoE fields."""
    key: str  # "llama3-8b"
    name: str  # "Llama 3 8B"
    family: str  # "llama3" — used for "a smaller model of the same family"
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int  # dense MLP width (for MoE models, the dense layers' width)
    vocab: int
    max_context: int
    source: str
    hf_repo: str | None = None
    aliases: tuple[str, ...] = ()
    native_dtype: str = "bf16"  # a quant key: bf16 | fp16 | fp8 | mxfp4
    params: int | None = None  # exact published parameter count where known, else None (computed)
    active_params: int | None = None  # MoE: parameters used per token (published), else None
    params_source: str | None = None
    tie_embeddings: bool = False
    mlp: str = "gated"  # "gated" (SwiGLU/GeGLU: 3 matrices) | "plain" (2 matrices)
    attn_bias: bool = False  # q/k/v projections have bias (Qwen2)
    # sliding-window attention: `sliding_layers` of `layers` cap their KV at `sliding_window` tokens
    sliding_window: int | None = None
    sliding_layers: int = 0
    # chunked local attention (Llama 4 iRoPE): `chunked_layers` of `layers` attend only within
    # chunks of `attention_chunk` tokens, so they cache at most one chunk per sequence
    attention_chunk: int | None = None
    chunked_layers: int = 0
    # linear attention / state-space layers (Qwen3-Next gated DeltaNet, Mamba2 in Nemotron-H /
    # Granite 4-H): `linear_layers` of `layers` keep a fixed state per sequence instead of a KV
    # cache: `linear_state_elems` elements per layer per sequence (conv state + recurrent/SSM
    # state, element counts from the model's config.json), stored in the model dtype
    linear_layers: int = 0
    linear_state_elems: int | None = None
    # the linear-attention layers' shape (Qwen3-Next / Qwen3.5 gated DeltaNet: linear_num_key_heads,
    # linear_num_value_heads, linear_key_head_dim, linear_value_head_dim, linear_conv_kernel_dim of
    # config.json), for their parameter count; None where the model has no such layers
    linear_key_heads: int | None = None
    linear_value_heads: int | None = None
    linear_key_head_dim: int | None = None
    linear_value_head_dim: int | None = None
    linear_conv_kernel: int | None = None
    attn_output_gate: bool = False  # q_proj also emits a per-head output gate (Qwen3-Next): 2x q width
    # Mamba2 mixer layers (Granite 4.0-H, Nemotron-H; config.json mamba_n_heads, mamba_d_head,
    # mamba_d_state, mamba_n_groups, mamba_d_conv -> linear_conv_kernel) for their parameter count
    mamba_heads: int | None = None
    mamba_head_dim: int | None = None
    mamba_state: int | None = None
    mamba_groups: int | None = None
    mamba_conv_bias: bool = True
    # config.json mamba_ssm_cache_dtype float32 (Nemotron-H): vLLM keeps the SSM (temporal) part of the
    # Mamba2 state in fp32, the conv part in the model dtype
    mamba_ssm_fp32: bool = False
    # Nemotron-H: every layer is ONE sublayer (hybrid_override_pattern 'M' Mamba2, '*' attention, '-' MLP)
    # instead of a mixer plus an MLP; `mlp_only_layers` of `layers` hold just an MLP (no KV cache, no state),
    # the `linear_layers` just a Mamba2 mixer, the rest just attention
    single_sublayer: bool = False
    mlp_only_layers: int = 0
    # per-layer-type attention shapes (Gemma 4): the full-attention layers use `global_head_dim` and
    # `global_kv_heads` (config.json global_head_dim / num_global_key_value_heads) where they differ from
    # the sliding layers' head_dim / kv_heads; `global_k_eq_v` (attention_k_eq_v): their K projection
    # also serves as V (no v_proj; the cache still holds K and V, normed apart)
    global_head_dim: int | None = None
    global_kv_heads: int | None = None
    global_k_eq_v: bool = False
    # KV sharing (Gemma 3n / Gemma 4 num_kv_shared_layers): the last `kv_shared_layers` layers reuse the
    # KV of the last earlier layer of their type, so they hold no cache and load no k/v projections;
    # `kv_shared_sliding` of them are sliding-window layers, the rest full-attention layers
    kv_shared_layers: int = 0
    kv_shared_sliding: int = 0
    # the KV-sharing layers' MLP is twice `intermediate` wide (Gemma 4 use_double_wide_mlp)
    kv_shared_double_mlp: bool = False
    # per-layer embeddings (Gemma 3n / Gemma 4 E-models, hidden_size_per_layer_input): a second token
    # table of per_layer_embed_vocab x (layers x per_layer_embed_dim) read by row lookup (llama.cpp keeps
    # it in host memory like token_embd), a projection of the hidden state to the same width, and per
    # layer a gate (hidden -> dim), a projection back (dim -> hidden) and a norm
    per_layer_embed_dim: int = 0
    per_layer_embed_vocab: int | None = None
    # Gemma 3n (transformers Gemma3nTextAltUp / Gemma3nTextLaurelBlock): AltUp keeps `altup_inputs`
    # predictions of the hidden state (per layer a router hidden -> n, n x n and n x n^2 coefficients, two
    # hidden-wide vectors; for the model n - 1 projections in and n - 1 out, hidden x hidden each);
    # LAuReL adds a low-rank (laurel_rank) residual per layer
    altup_inputs: int = 0
    laurel_rank: int = 0
    # mixture of experts
    experts: int = 0  # routed experts per MoE layer
    experts_active: int = 0  # routed experts chosen per token
    shared_experts: int = 0
    moe_intermediate: int | None = None  # per-expert MLP width
    dense_layers: int = 0  # leading layers with a dense MLP instead of MoE (DeepSeek first_k_dense)
    # multi-head latent attention (DeepSeek V2/V3): the KV cache holds kv_lora_rank + qk_rope_head_dim
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    qk_nope_head_dim: int | None = None
    v_head_dim: int | None = None
    # DeepSeek sparse attention (V3.2): a lightning indexer scores past tokens and each query attends to
    # the indexer_topk best; it caches one indexer_head_dim key per token per layer (fp8 + a scale per
    # 128 elements in vLLM) beside the MLA latent
    indexer_heads: int | None = None
    indexer_head_dim: int | None = None
    indexer_topk: int | None = None
    release: str | None = None  # "2024-07"
    notes: str | None = None

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None


@dataclass(frozen=True)
class QuantFormat:
    """A weight format or KV-cache dtype: effective bits per weight and how embeddings / head are stored."""
    key: str  # "int8", "q4_k_m", "bf16"
    name: str
    kind: str  # "float" | "int" | "gguf"
    bits_per_weight: float  # effective bits per quantized weight, scales and zero points included
    source: str
    # ggml block layout where one exists: bits_per_weight == type_size_bytes * 8 / block_size
    block_size: int | None = None
    type_size_bytes: int | None = None
    # token embeddings / output head: bits they are stored at (None = same as bits_per_weight)
    embed_bits: float | None = None
    output_bits: float | None = None
    quality: int = 0  # ordinal, higher = less loss vs the native dtype; ranks alternatives
    engines: tuple[str, ...] = ("vllm", "llama.cpp", "ollama", "transformers")
    kv_cache: bool = False  # also valid as a --kv-dtype
    kv_bits: float | None = None  # bits per KV element when used as a KV dtype (default bits_per_weight)
    kv_engines: tuple[str, ...] = ()  # engines that take it as a KV-cache dtype (empty = `engines`)
    aliases: tuple[str, ...] = ()
    min_compute_capability: str | None = None  # e.g. fp8 needs 8.9 for native kernels
    # a ggml tensor type that is no llama.cpp file type of its own (Q4_K lives inside Q4_K_S/M):
    # accepted for --quant, never offered by recommend or alternatives
    tensor_only: bool = False
    notes: str | None = None

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8.0


@dataclass(frozen=True)
class OllamaTag:
    """What an Ollama library tag serves: `ollama pull qwen3:4b` gets Qwen3 4B in Q4_K_M.

    `key` is NAME:TAG as the library writes it (lowercase); `aliases` are other names of the same
    blob (`qwen3`, `qwen3:latest` for `qwen3:8b`). `model` is the catalog architecture the blob has
    (a distill names its base's shape), `quant` the catalog format of the blob's weights, `name` how
    the model is called where it is not the architecture's name."""
    key: str
    model: str  # a catalog model key
    quant: str  # a catalog quant key
    source: str
    aliases: tuple[str, ...] = ()
    name: str | None = None
    notes: str | None = None

    @property
    def engine(self) -> str:
        """A library tag is what the Ollama server pulls and serves."""
        return "ollama"
