"""Speed: decode is memory-bound, prefill is compute-bound.

decode s/token = sum over the devices a token passes through of bytes read there / (bandwidth x
efficiency) + interconnect latency; bytes read = the layers' active weights + their KV for the tokens
already in context (+ the output head on the last device). Offloaded layers read host memory.
prefill tokens/s = efficiency x dense tensor FLOP/s / (2 x active parameters per token).
The efficiencies are per engine and, where measurements fitted one, per memory class (decode) or kind of
datasheet figure (prefill); llama.cpp also pays a fixed latency per layer and token. All in engines.py,
fitted by bench/calibrate.py; `basis` says which factor was used.
"""

from __future__ import annotations

from typing import Any

from ..catalog.types import QuantFormat
from . import engines, memory
from .placement import Plan, Sizer
from .engines.base import Engine
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


def _bandwidth(dev: Device) -> float | None:
    if dev.bandwidth_gbps:
        return dev.bandwidth_gbps
    return dev.spec.bandwidth_gbps if dev.spec else None


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
    lat = s.profile.decode_layer_latency_s
    basis: dict[str, Any] = {
        "method": "decode: bytes read per token / (bandwidth x efficiency) + layers x per-layer latency; "
                  "prefill: per ubatch, GEMM FLOPs / sustained tensor rate + weight bytes / bandwidth + "
                  "attention over the cached cells, pipelined over the stages of a layer split",
        "efficiency": eff,
        "efficiency_from": eff_from,
        "layer_latency_s": lat,
        "decode_context_tokens": DECODE_CONTEXT_TOKENS if decode_context is None else decode_context,
        "batch": batch,
    }
    if not used:
        return None, None, basis
    kv_tok = memory.kv_bytes_per_token_layer(m, req.kv_dtype, plan.tp)
    # weights the engine's own settings keep in host RAM (expert tensors) are read there, on the CPU
    host_read = s.engine.host_read_bytes_per_token(req)
    # the output head is read for every token; a tied head is the embedding matrix itself
    head = s.ws.output if s.ws.output or not m.tie_embeddings else s.ws.embed
    ctx = min(DECODE_CONTEXT_TOKENS if decode_context is None else decode_context, req.context)
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
            b = weights_read + kv_tok * dp.layers * ctx * batch
            bytes_per_token += b
            stage_s = max(stage_s, b / (bw * 1e9 * dev_eff) + dp.layers * lat)
        seconds += stage_s
    if tp > 1:
        link = "nvlink" if all(d.device.nvlink for d in used) else "pcie"
        seconds += 2 * m.layers * engines.ALLREDUCE_LATENCY_S[link]
        basis["interconnect"] = link
        basis["allreduce_latency_s"] = engines.ALLREDUCE_LATENCY_S[link]
    if len(stages) > 1:
        seconds += (len(stages) - 1) * engines.STAGE_HOP_LATENCY_S
        basis["stage_hop_latency_s"] = engines.STAGE_HOP_LATENCY_S
    if host_read:
        host_bw = host_bandwidth_gbps or engines.HOST_DECODE_BANDWIDTH_GBPS
        seconds += host_read / (host_bw * 1e9)
        bytes_per_token += host_read
        basis["host_bandwidth_gbps"] = host_bw
        basis["host_expert_bytes_per_token"] = int(host_read)
    if plan.cpu_layers:
        host_bw = host_bandwidth_gbps or engines.HOST_DECODE_BANDWIDTH_GBPS
        cpu_read = s.ws.per_layer_active * plan.cpu_layers + kv_tok * plan.cpu_layers * ctx * batch
        if not any(d.is_last for d in used):
            cpu_read += head
        seconds += cpu_read / (host_bw * 1e9)
        bytes_per_token += cpu_read
        basis["host_bandwidth_gbps"] = host_bw
        basis["cpu_bytes_per_token"] = int(cpu_read)
    elif plan.head_on_host:  # every block on the GPUs, the output layer computed from host RAM
        host_bw = host_bandwidth_gbps or engines.HOST_DECODE_BANDWIDTH_GBPS
        seconds += head / (host_bw * 1e9)
        bytes_per_token += head
        basis["host_bandwidth_gbps"] = host_bw
        basis["cpu_bytes_per_token"] = int(head)
    basis["bandwidth_gbps"] = bws[0] if len(set(bws)) == 1 else bws
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


def gemm_rate(dev: Device, quant: QuantFormat, engine: Engine) -> tuple[float | None, str]:
    """Sustained FLOP/s of this device's prompt-processing GEMMs under `engine`: the datasheet tensor
    rate of the kind the engine's GEMMs run at (llama.cpp's cuBLAS calls accumulate in FP16, which a
    GeForce datasheet's FP32-accumulate figure understates by half), times the fitted efficiency, and
    at most the rate the board's power limit sustains (the engine's prefill_fit)."""
    tf, kind = tflops_for(dev, quant)
    if not tf:
        return None, kind
    fit = engine.prefill_fit()
    spec = dev.spec
    peak = tf * 1e12
    if fit["fp16_accumulate"] and kind == "fp16" and spec is not None and spec.vendor_class == "geforce":
        peak *= 2
        kind = "fp16 (FP16 accumulate: 2 x the GeForce datasheet figure)"
    rate = peak * fit["gemm_efficiency"]
    if fit["tflops_per_watt"] and spec is not None and spec.tdp_w:
        rate = min(rate, fit["tflops_per_watt"] * 1e12 * spec.tdp_w * dev.share)
    return rate, kind


def prefill_rate(s: Sizer, plan: Plan, prompt_tokens: int | None = None, flash_attn: bool | None = None,
                 n_batch: int | None = None, n_ubatch: int | None = None) -> tuple[float | None, dict[str, Any]]:
    """Prompt tokens/s for a prompt of `prompt_tokens` (default PREFILL_PROMPT_TOKENS, at most the
    context), and its basis.

    The prompt runs in batches of n_batch tokens, each split into ubatches of n_ubatch. One ubatch on
    one stage (the layers one device or tensor-parallel group holds) takes
        its share of 2 x active body parameters x ubatch tokens / GEMM rate
        + its weight bytes / bandwidth (quantized weights: plus the FP16 copy the GEMM reads, where
          the engine dequantizes)
        + attention over the cells already cached: without flash attention the f32 scores cost
          heads x bytes per cell / bandwidth, with it only 4 x heads x head_dim FLOPs per cell.
    Stages of a layer split pipeline the ubatches of one batch: a batch of k ubatches takes the sum
    of the stage times plus (k - 1) times the slowest (llama.cpp's pipeline parallelism)."""
    req, m = s.req, s.m
    d = s.engine.prefill_batching(req)
    fa = d["flash_attn"] if flash_attn is None else flash_attn
    n = max(1, min(req.context, prompt_tokens or PREFILL_PROMPT_TOKENS))
    ub = n_ubatch or d["n_ubatch"]
    nb = max(n_batch or d["n_batch"], ub)
    fit = s.engine.prefill_fit()
    from .params import count_params

    pc = count_params(m)
    # the head runs for the last prompt token only; the input embedding is a lookup
    flops_tok = 2 * pc.body_active
    basis: dict[str, Any] = {"prefill_prompt_tokens": n, "flash_attn": fa, "n_batch": nb, "n_ubatch": ub,
                   "flops_per_token": int(flops_tok), "prefill_efficiency": fit["gemm_efficiency"],
                   "prefill_efficiency_from": fit["source"]}
    used = plan.used
    if not used:
        return None, basis
    tp = plan.tp
    stages = [used[i:i + tp] for i in range(0, len(used), tp)]
    body_bytes = s.ws.per_layer * m.layers
    if fit["dequant_bytes_per_weight"] and req.quant.kind == "gguf" and req.quant.bits_per_weight < 16:
        body_bytes += fit["dequant_bytes_per_weight"] * pc.body
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
        share = sum(dp.layers for dp in st[:1]) / m.layers
        bw_b = bw * 1e9 * tp
        cell = attn_flops_cell / (rate * tp)
        if not fa:
            cell += m.heads * fit["attn_bytes_per_head_cell"] / bw_b
        per_stage.append((share * flops_tok / (rate * tp), share * body_bytes / bw_b, share * m.layers * cell))
    seconds, done = 0.0, 0
    while done < n:
        b = min(nb, n - done)
        k = -(-b // ub)
        u = b / k
        cells = done + b / 2 + u / 2  # cells an average ubatch of this batch attends to
        times = [u * a + w + u * cells * c for a, w, c in per_stage]
        times = [t + (engines.STAGE_HOP_LATENCY_S if i else 0.0) for i, t in enumerate(times)]
        seconds += sum(times) + (k - 1) * max(times)
        done += b
    basis["gemm_tokens_per_s"] = min(rates) * tp / flops_tok
    rate = n / seconds
    if plan.cpu_layers:
        # llama.cpp runs large batches of offloaded layers on the GPU too, copying their weights
        # over per ubatch: the GPUs' layers keep their pace, the offloaded share is paid on top
        rate *= plan.gpu_layers / m.layers
    return rate, basis
