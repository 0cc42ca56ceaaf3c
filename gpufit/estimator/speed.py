"""Speed: decode is memory-bound, prefill is compute-bound.

decode s/token = sum over the devices a token passes through of bytes read there / (bandwidth x
efficiency) + layers x the engine's fixed per-layer time (llama.cpp: cycles / the card's boost clock)
+ interconnect latency (all-reduces; the engine's split latency over a layer split); bytes read = the
layers' active weights + their KV for the tokens already in context (+ the output head on the last device). Offloaded layers read host memory.
prefill (prefill_rate): per ubatch, GEMM FLOPs / (datasheet tensor rate x efficiency x the share of
SMs the GEMMs' tile waves keep busy, at most the board's power-limited rate) + weight, dequantization
and score bytes / (bandwidth x the decode efficiency), pipelined over the stages of a layer split.
The efficiencies are per engine and, where measurements fitted one, per memory class; constants in
engines/ (profiles.py, llama_cpp.py PREFILL_FIT), fitted by bench/calibrate.py; `basis` says which
factor was used.
"""

from __future__ import annotations

from typing import Any

from ..catalog.types import GpuSpec, ModelSpec, QuantFormat
from . import engines, memory
from .placement import Plan, Sizer
from .engines.base import Engine
from .engines.profiles import EngineProfile
from .types import Device

# decode speed is quoted at the start of a generation: llama-bench "tg 128" style, short context
DECODE_CONTEXT_TOKENS = 64
# prefill speed is quoted for a prompt of this many tokens (llama-bench's default test, `pp 512`)
PREFILL_PROMPT_TOKENS = 512


def tflops_for(dev: Device, quant: QuantFormat) -> tuple[float | None, str]:
    """Dense tensor FLOP/s the quant's matmuls run at on this device (a MIG slice gets its share of the
    card's), and which figure was used."""
    tf, kind = _card_tflops(dev, quant)
    return (tf * dev.share if tf else tf), kind


def _card_tflops(dev: Device, quant: QuantFormat) -> tuple[float | None, str]:
    spec = dev.spec
    if spec is None:
        return None, "unknown"
    cc = float(spec.compute_capability)
    if quant.key == "fp8" and spec.fp8_tflops and cc >= 8.9:
        return spec.fp8_tflops, "fp8"
    if quant.key == "int8" and spec.int8_tops:
        return spec.int8_tops, "int8"
    if quant.key == "bf16" and spec.bf16_tflops:
        return spec.bf16_tflops, "bf16"
    if spec.fp16_tflops:
        return spec.fp16_tflops, "fp16"
    if spec.bf16_tflops:
        return spec.bf16_tflops, "bf16"
    return spec.fp32_tflops, "fp32"


def boost_clock_ghz(spec: GpuSpec | None) -> float | None:
    """The boost clock a datasheet's FP32 figure assumes: FP32 FLOP/s / (2 FLOPs per FMA x CUDA cores)
    (RTX 3090: 35.6 TFLOP/s / (2 x 10,496) = 1.70 GHz); None when either is unknown."""
    if spec is None or not spec.fp32_tflops or not spec.cuda_cores:
        return None
    return spec.fp32_tflops * 1e3 / (2 * spec.cuda_cores)


# where a card's boost clock is unknown: a middling one (RTX 3090 1.70, H100 PCIe 1.75 GHz)
FALLBACK_BOOST_CLOCK_GHZ = 1.7


def layer_latency_s(profile: EngineProfile, spec: GpuSpec | None) -> float:
    """The engine's fixed time per layer and decoded token on this card: its small per-layer kernels
    (norms, rope, softmax, adds, copies) take a number of GPU clock cycles, so the time is the
    profile's cycles / the card's boost clock (FALLBACK_BOOST_CLOCK_GHZ where the catalog cannot say)."""
    ghz = boost_clock_ghz(spec) or FALLBACK_BOOST_CLOCK_GHZ
    return profile.decode_layer_cycles / (ghz * 1e9)


# In-band ECC: GDDR memory keeps the check bits beside the data in the same DRAM, 1/16 of it (NVML
# reports 46068 of the A40's and L40S's 49152 MiB with ECC on; NVIDIA's V100 whitepaper contrasts this
# inline ECC, 6.25 % of a Tesla K40's GDDR5, with HBM2's side-band ECC, "without a bandwidth or
# capacity penalty"), so a read moves 16 bytes for 15 of data. Datacenter cards ship with ECC on,
# GeForce and workstation cards with it off (Chaos support, "ECC State for Nvidia GPUs").
GDDR_ECC_BANDWIDTH_SHARE = 15 / 16


def ecc_enabled(dev: Device) -> bool:
    """ECC on for this unit: as the driver reports it, else the default of the card's class."""
    if dev.ecc is not None:
        return dev.ecc
    return bool(dev.spec and dev.spec.vendor_class == "datacenter")


def ecc_bandwidth_share(dev: Device) -> float:
    """The share of the bandwidth left for data: GDDR_ECC_BANDWIDTH_SHARE with ECC on GDDR memory,
    1 otherwise (HBM's ECC is side-band)."""
    spec = dev.spec
    if spec is not None and engines.memory_class(spec.memory_type) == "GDDR" and ecc_enabled(dev):
        return GDDR_ECC_BANDWIDTH_SHARE
    return 1.0


def _bandwidth(dev: Device) -> float | None:
    """GB/s this unit's reads reach at 100 % efficiency: its (share of the) datasheet bandwidth, less
    what in-band ECC takes."""
    bw = dev.bandwidth_gbps or (dev.spec.bandwidth_gbps if dev.spec else None)
    return bw * ecc_bandwidth_share(dev) if bw else None


def estimate_speed(s: Sizer, plan: Plan, batch: int, host_bandwidth_gbps: float | None = None,
                   decode_context: int | None = None, prefill_tokens: int | None = None,
                   flash_attn: bool | None = None, n_batch: int | None = None,
                   n_ubatch: int | None = None) -> tuple[float | None, float | None, dict[str, Any]]:
    """(decode tokens/s for the whole batch, prefill tokens/s, basis). `decode_context` = tokens already
    in the KV cache when the decode speed is quoted (default DECODE_CONTEXT_TOKENS; bench/accuracy.py
    passes a run's average); `prefill_tokens` = the prompt length prefill is quoted for (default
    PREFILL_PROMPT_TOKENS); `flash_attn` None = the engine's default."""
    req = s.req
    m = s.m
    used = plan.used
    first = used[0].device.spec if used else None
    eff, eff_from = engines.decode_efficiency(req.engine, first)
    lat = layer_latency_s(s.profile, first)
    basis: dict[str, Any] = {
        "method": "decode: bytes read per token / (bandwidth x efficiency) + layers x per-layer latency "
                  "(cycles / boost clock); "
                  "prefill: per ubatch, GEMM FLOPs / sustained tensor rate + weight bytes / achieved bandwidth + "
                  "attention over the cached cells, pipelined over the stages of a layer split",
        "efficiency": eff,
        "efficiency_from": eff_from,
        "layer_latency_s": lat,
        "decode_context_tokens": DECODE_CONTEXT_TOKENS if decode_context is None else decode_context,
        "batch": batch,
    }
    if not used:
        return None, None, basis
    ctx = min(DECODE_CONTEXT_TOKENS if decode_context is None else decode_context, req.context)
    # the cache a decoded token attends to, each caching layer at its own shape and window (shared-KV and
    # linear layers cache nothing; a linear layer's fixed state is read and written instead), all
    # sequences, one rank, the whole model: a device reads its share of the layers
    kv_read = (memory.kv_bytes_per_token(m, req.kv_dtype, ctx, plan.tp) + memory.state_bytes(m, plan.tp)) * batch
    kv_host = s.engine.kv_on_host(req)  # llama.cpp --no-kv-offload: the CPU reads it, from host RAM
    # weights the engine's own settings keep in host RAM (expert tensors) are read there, on the CPU
    host_read = s.engine.host_read_bytes_per_token(req)
    # the output head is read for every token; a tied head is the embedding matrix itself
    head = s.ws.output if s.ws.output or not m.tie_embeddings else s.ws.embed
    bytes_per_token = 0.0
    bws = []
    # ranks of one tensor-parallel stage read at the same time; stages (pipeline parallel / layer
    # split) run one after the other for a single token
    tp = plan.tp
    stages = [used[i:i + tp] for i in range(0, len(used), tp)]
    seconds = 0.0
    for stage in stages:
        stage_s = 0.0
        for dp in stage:
            bw = _bandwidth(dp.device)
            if bw is None:
                basis["unknown"] = f"no bandwidth for {dp.device.name} (not in the catalog)"
                return None, None, basis
            bws.append(bw)
            dev_eff, _ = engines.decode_efficiency(req.engine, dp.device.spec)
            weights_read = (s.ws.per_layer_active * m.layers - host_read) * dp.layers / m.layers / tp
            if dp.is_last:
                weights_read += head / tp
            b = weights_read + (0.0 if kv_host else kv_read * dp.layers / m.layers)
            bytes_per_token += b
            stage_s = max(stage_s, b / (bw * 1e9 * dev_eff) + dp.layers * layer_latency_s(s.profile, dp.device.spec))
        seconds += stage_s
    if tp > 1:
        link = "nvlink" if all(d.device.nvlink for d in used) else "pcie"
        seconds += 2 * m.layers * engines.ALLREDUCE_LATENCY_S[link]
        basis["interconnect"] = link
        basis["allreduce_latency_s"] = engines.ALLREDUCE_LATENCY_S[link]
    if len(stages) > 1:
        split_s = s.engine.split_latency_s(len(stages))
        seconds += split_s
        basis["split_latency_s"] = split_s
    # what the CPU reads from host RAM for each token, one part after the other: expert tensors the
    # engine keeps there, a cache kept there (--no-kv-offload), offloaded layers (with the head when no
    # GPU holds it) or the output layer alone
    cpu_read = 0.0
    if plan.cpu_layers:
        cpu_read = s.ws.per_layer_active * plan.cpu_layers + (0.0 if kv_host else kv_read * plan.cpu_layers / m.layers)
        if not any(d.is_last for d in used):
            cpu_read += head
    elif plan.head_on_host:
        cpu_read = head
    host_parts = {"host_expert_bytes_per_token": host_read, "host_kv_bytes_per_token": kv_read if kv_host else 0.0,
                  "cpu_bytes_per_token": cpu_read}
    if any(host_parts.values()):
        host_bw = host_bandwidth_gbps or engines.HOST_DECODE_BANDWIDTH_GBPS
        basis["host_bandwidth_gbps"] = host_bw
        for key, n in host_parts.items():
            if n:
                seconds += n / (host_bw * 1e9)
                bytes_per_token += n
                basis[key] = int(n)
    basis["bandwidth_gbps"] = bws[0] if len(set(bws)) == 1 else bws
    if any(ecc_bandwidth_share(d.device) < 1 for d in used):
        basis["ecc_bandwidth_share"] = GDDR_ECC_BANDWIDTH_SHARE
    basis["bytes_per_token"] = int(bytes_per_token)
    decode = batch / seconds if seconds > 0 else None
    prefill, pre_basis = prefill_rate(s, plan, prefill_tokens, flash_attn, n_batch, n_ubatch)
    basis.update(pre_basis)
    if prefill and decode:
        # compute bound at large batches: a decode step cannot beat the prompt-processing GEMM rate
        compute_rate = pre_basis["gemm_tokens_per_s"]
        if decode > compute_rate:
            decode = compute_rate
            basis["decode_bound"] = "compute"
    return decode, prefill, basis


def gemm_rate(dev: Device, quant: QuantFormat, engine: Engine, wave: float = 1.0) -> tuple[float | None, str]:
    """Sustained FLOP/s of this device's prompt-processing GEMMs under `engine`: the datasheet tensor
    rate of the kind the engine's GEMMs run at (llama.cpp's cuBLAS calls accumulate in FP16, which a
    GeForce datasheet's FP32-accumulate figure understates by half), times the fitted efficiency and
    the share of SMs the GEMMs' tile waves keep busy (`wave`, wave_efficiency), and at most the rate
    the board's power limit sustains (the engine's prefill_fit)."""
    tf, kind = tflops_for(dev, quant)
    if not tf:
        return None, kind
    fit = engine.prefill_fit()
    spec = dev.spec
    peak = tf * 1e12
    if fit["fp16_accumulate"] and kind == "fp16" and spec is not None and spec.vendor_class == "geforce":
        peak *= 2
        kind = "fp16 (FP16 accumulate: 2 x the GeForce datasheet figure)"
    rate = peak * fit["gemm_efficiency"] * wave
    if fit["tflops_per_watt"] and spec is not None and spec.tdp_w:
        rate = min(rate, fit["tflops_per_watt"] * 1e12 * spec.tdp_w * dev.share)
    return rate, kind


# Tensor cores per streaming multiprocessor, by compute capability major: Volta and Turing 8, Ampere,
# Ada, Hopper and Blackwell 4 (NVIDIA's Volta, Turing, Ampere GA100/GA102, Ada AD102, Hopper GH100 and
# Blackwell architecture whitepapers); FP32 cores per SM where the catalog gives no tensor cores (CUDA
# C++ Programming Guide, throughput of 32-bit floating-point add/multiply per SM and clock)
TENSOR_CORES_PER_SM = {7: 8, 8: 4, 9: 4, 10: 4, 11: 4, 12: 4}
FP32_CORES_PER_SM = {"6.0": 64, "6.1": 128, "6.2": 128, "7.0": 64, "7.2": 64, "7.5": 64, "8.0": 64, "8.6": 128,
                     "8.7": 128, "8.9": 128, "9.0": 128, "10.0": 128, "10.3": 128, "11.0": 128, "12.0": 128,
                     "12.1": 128}
# the output tile one SM computes per step of a tensor-core GEMM: 128 x 128, the default threadblock
# tile of CUTLASS's and cuBLAS's FP16 tensor-op kernels
GEMM_TILE = 128


def sm_count(spec: GpuSpec | None) -> int | None:
    """Streaming multiprocessors of a card, from its FP32 (CUDA) core count, else its tensor core
    count; None when neither is known."""
    if spec is None:
        return None
    per = FP32_CORES_PER_SM.get(spec.compute_capability)
    if spec.cuda_cores and per:
        return spec.cuda_cores // per
    major = int(float(spec.compute_capability))
    if spec.tensor_cores and major in TENSOR_CORES_PER_SM:
        return spec.tensor_cores // TENSOR_CORES_PER_SM[major]
    return None


def wave_efficiency(m: ModelSpec, sms: int | None, tokens: int, tp: int = 1) -> float:
    """Share of the SMs a ubatch's GEMMs keep busy: each weight matrix (N outputs) times `tokens`
    rows is cut into ceil(tokens / tile) x ceil(N / tile) output tiles, run in waves of one tile per
    SM, so the last wave leaves SMs idle (a 4096-wide projection of 512 tokens is 128 tiles: one full
    wave on 128 SMs, 56 % of two waves on 114). FLOP-weighted over the attention and MLP matrices of
    one layer (column-parallel ones split by tensor parallelism). 1.0 for MoE models (their expert
    GEMMs are many small ones) and where the SM count is unknown."""
    if not sms or m.is_moe:
        return 1.0
    kv = m.kv_heads * m.head_dim
    q = m.heads * m.head_dim
    # (outputs N, inputs K) per rank
    mats = [(q // tp, m.hidden), (kv // tp or 1, m.hidden), (kv // tp or 1, m.hidden), (m.hidden, q // tp)]
    mats += [(m.intermediate // tp, m.hidden)] * (2 if m.mlp == "gated" else 1) + [(m.hidden, m.intermediate // tp)]
    rows = -(-max(1, tokens) // GEMM_TILE)
    total = busy = 0.0
    for n, k in mats:
        tiles = rows * -(-n // GEMM_TILE)
        total += n * k
        busy += n * k * tiles / (-(-tiles // sms) * sms)
    return busy / total


def ubatch_times(per_stage: list[tuple[float, float, float]], n: int, n_batch: int, n_ubatch: int,
                 depth: int = 0) -> list[list[float]]:
    """Each ubatch's seconds on each stage for an n-token prompt after `depth` cached tokens, in
    batches of n_batch cut into ubatches of n_ubatch. `per_stage`: (seconds per ubatch token, seconds
    per weight pass, seconds per token-cell) of each stage. A ubatch pays its GEMMs, one pass over the
    stage's weights, and its scores over every cell cached up to its last token (the KQ product spans
    all of them); every stage after the first the hop to it."""
    out = []
    done = 0
    while done < n:
        b = min(n_batch, n - done)
        for start in range(0, b, n_ubatch):
            u = min(n_ubatch, b - start)
            cells = depth + done + start + u
            out.append([u * a + w + u * cells * c + (engines.STAGE_HOP_LATENCY_S if i else 0.0)
                        for i, (a, w, c) in enumerate(per_stage)])
        done += b
    return out


def pipeline_seconds(times: list[list[float]], in_flight: int) -> float:
    """Seconds for ubatches to pass a chain of stages, `times[j][i]` being ubatch j's time on stage
    i. A stage runs one ubatch at a time, in order; ubatch j enters stage i once it has left stage
    i - 1 and ubatch j - 1 has left stage i. One host thread queues the work in that order and,
    before queueing ubatch j on stage i, waits until stage i has finished ubatch j - in_flight:
    llama.cpp's scheduler (ggml/src/ggml-backend.cpp compute_splits) reuses its `in_flight` copies of
    the split inputs in turn, waiting on the event of the copy it is about to overwrite, or, with one
    copy and no events, synchronizing the device. While the host waits nothing further is queued, so
    with one copy a stage can take ubatch j + 1 only once the last stage has been handed ubatch j."""
    if not times:
        return 0.0
    n_stages = len(times[0])
    end = [[0.0] * n_stages for _ in times]
    host = 0.0
    for j, row in enumerate(times):
        for i, t in enumerate(row):
            if j >= in_flight:
                host = max(host, end[j - in_flight][i])
            ready = max(host, end[j][i - 1] if i else 0.0, end[j - 1][i] if j else 0.0)
            end[j][i] = ready + t
    return end[-1][-1]


def prefill_rate(s: Sizer, plan: Plan, prompt_tokens: int | None = None, flash_attn: bool | None = None,
                 n_batch: int | None = None, n_ubatch: int | None = None,
                 depth: int = 0) -> tuple[float | None, dict[str, Any]]:
    """Prompt tokens/s for a prompt of `prompt_tokens` (default PREFILL_PROMPT_TOKENS, at most the
    context left after `depth`) that follows `depth` tokens already in the cache (llama-bench's
    `pp N @ dD`), and its basis.

    The prompt runs in batches of n_batch tokens, each split into ubatches of n_ubatch. One ubatch on
    one stage (the layers one device or tensor-parallel group holds) takes
        its share of 2 x active body parameters x ubatch tokens / GEMM rate
        + its weight bytes / achieved bandwidth (quantized weights: plus the FP16 copy the GEMM
          reads, where the engine dequantizes)
        + attention over the cells already cached: without flash attention the f32 scores cost
          heads x bytes per cell / achieved bandwidth, with it only 4 x heads x head_dim FLOPs per cell.
    Achieved bandwidth = datasheet x the engine's decode efficiency for the card's memory class
    (engines.decode_efficiency): these passes are memory-bound streaming kernels like decode's.
    Over a layer split the ubatches go through the stages as pipeline_seconds schedules them, as
    many in flight as the engine's pipeline_depth (llama.cpp: 4 with every layer on the GPUs, across
    batches too; 1 otherwise)."""
    req, m = s.req, s.m
    d = s.engine.prefill_batching(req)
    fa = d["flash_attn"] if flash_attn is None else flash_attn
    depth = max(0, min(depth, req.context - 1))
    n = max(1, min(req.context - depth, prompt_tokens or PREFILL_PROMPT_TOKENS))
    ub = n_ubatch or d["n_ubatch"]
    nb = max(n_batch or d["n_batch"], ub)
    fit = s.engine.prefill_fit()
    from .params import count_params

    pc = count_params(m)
    # the head runs for the last prompt token only; the input embedding is a lookup
    flops_tok = 2 * pc.body_active
    basis: dict[str, Any] = {"prefill_prompt_tokens": n, "prefill_depth_tokens": depth, "flash_attn": fa,
                   "n_batch": nb, "n_ubatch": ub, "flops_per_token": int(flops_tok), "prefill_efficiency": fit["gemm_efficiency"],
                   "prefill_efficiency_from": fit["source"]}
    used = plan.used
    if not used:
        return None, basis
    tp = plan.tp
    stages = [used[i:i + tp] for i in range(0, len(used), tp)]
    body_bytes = s.ws.per_layer * m.layers
    # quantized weights are dequantized to an FP16 copy per ubatch where the engine's GEMMs need one
    # (cuBLAS); from `mmq_from_cc` on the engine multiplies them as stored
    quantized = req.quant.kind == "gguf" and req.quant.bits_per_weight < 16
    dequant = fit["dequant_bytes_per_weight"] * pc.body if quantized else 0.0
    attn_flops_cell = 4 * m.heads * m.head_dim
    per_stage = []  # (seconds per ubatch token, seconds per weight pass, seconds per token-cell)
    rates = []
    for st in stages:
        dev = st[0].device
        rate, kind = gemm_rate(dev, req.quant, s.engine)
        bw = _bandwidth(dev)
        if not rate or not bw:
            basis["prefill_unknown"] = f"no tensor FLOP/s or bandwidth for {dev.name}"
            return None, basis
        rates.append(rate)
        basis.setdefault("tflops", round(rate / fit["gemm_efficiency"] / 1e12, 1))
        basis.setdefault("tflops_dtype", kind)
        # a ubatch's GEMMs fill the SMs in whole waves of tiles (idle SMs draw no power: the cap stays)
        wave = wave_efficiency(m, sm_count(dev.spec), min(ub, n), tp)
        basis.setdefault("gemm_wave_efficiency", round(wave, 3))
        rate = gemm_rate(dev, req.quant, s.engine, wave)[0] or rate
        # the weight, dequantization and score passes are memory-bound streaming kernels: they reach
        # the share of the datasheet bandwidth the engine's decode reaches on this card's memory
        mem_eff, _ = engines.decode_efficiency(req.engine, dev.spec)
        basis.setdefault("prefill_memory_efficiency", mem_eff)
        share = sum(dp.layers for dp in st[:1]) / m.layers
        bw_b = bw * 1e9 * tp * mem_eff
        mmq = d["mmq_from_cc"] is not None and dev.spec is not None and float(dev.spec.compute_capability) >= d["mmq_from_cc"]
        if quantized:
            basis.setdefault("quantized_gemm", "mmq (weights as stored)" if mmq else "dequantized to fp16 per ubatch")
        stage_bytes = body_bytes + (0.0 if mmq else dequant)
        cell = attn_flops_cell / (rate * tp)
        if not fa:
            cell += m.heads * fit["attn_bytes_per_head_cell"] / bw_b
        per_stage.append((share * flops_tok / (rate * tp), share * stage_bytes / bw_b, share * m.layers * cell))
    in_flight = s.engine.pipeline_depth(req, not plan.cpu_layers and not plan.head_on_host) if len(stages) > 1 else 1
    basis["pipeline_depth"] = in_flight
    seconds = pipeline_seconds(ubatch_times(per_stage, n, nb, ub, depth), in_flight)
    basis["gemm_tokens_per_s"] = min(rates) * tp / flops_tok
    rate = n / seconds
    if plan.cpu_layers:
        # llama.cpp runs large batches of offloaded layers on the GPU too, copying their weights
        # over per ubatch: the GPUs' layers keep their pace, the offloaded share is paid on top
        rate *= plan.gpu_layers / m.layers
    return rate, basis
