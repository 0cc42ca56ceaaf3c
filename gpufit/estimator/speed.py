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

from ..catalog.types import QuantFormat
from ..estimator import engines, memory
from .placement import Plan, Sizer
from .types import Device

# decode speed is quoted at the start of a generation: llama-bench "tg 128" style, short context
DECODE_CONTEXT_TOKENS = 64


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
                   decode_context: int | None = None) -> tuple[float | None, float | None, dict]:
    """(decode tokens/s for the whole batch, prefill tokens/s, basis). `decode_context` = tokens already
    in the KV cache when the decode speed is quoted (default DECODE_CONTEXT_TOKENS; bench/accuracy.py
    passes a run's average)."""
    req = s.req
    m = s.m
    used = plan.used
    first = used[0].device.spec if used else None
    eff, eff_from = engines.decode_efficiency(req.engine, first)
    pre_eff, pre_from = engines.prefill_efficiency(req.engine, first)
    lat = s.profile.decode_layer_latency_s
    basis: dict = {
        "method": "decode: bytes read per token / (bandwidth x efficiency) + layers x per-layer latency; "
                  "prefill: 2 x active params FLOPs per token / (dense tensor FLOP/s x efficiency)",
        "efficiency": eff,
        "efficiency_from": eff_from,
        "layer_latency_s": lat,
        "prefill_efficiency": pre_eff,
        "prefill_efficiency_from": pre_from,
        "decode_context_tokens": DECODE_CONTEXT_TOKENS if decode_context is None else decode_context,
        "batch": batch,
    }
    if not used:
        return None, None, basis
    kv_tok = memory.kv_bytes_per_token_layer(m, req.kv_dtype, plan.tp)
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
            weights_read = s.ws.per_layer_active * dp.layers / tp
            if dp.is_last:
                weights_read += s.ws.output / tp
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
    if plan.cpu_layers:
        host_bw = host_bandwidth_gbps or engines.HOST_DECODE_BANDWIDTH_GBPS
        cpu_read = s.ws.per_layer_active * plan.cpu_layers + kv_tok * plan.cpu_layers * ctx * batch
        if not any(d.is_last for d in used):
            cpu_read += s.ws.output
        seconds += cpu_read / (host_bw * 1e9)
        bytes_per_token += cpu_read
        basis["host_bandwidth_gbps"] = host_bw
        basis["cpu_bytes_per_token"] = int(cpu_read)
    basis["bandwidth_gbps"] = bws[0] if len(set(bws)) == 1 else bws
    basis["bytes_per_token"] = int(bytes_per_token)
    # compute bound at large batches: 2 x active params FLOPs per token
    flops_per_token = 2 * _active_params(s)
    tf, tf_kind = tflops_for(used[0].device, req.quant)
    decode = batch / seconds if seconds > 0 else None
    prefill = None
    if tf:
        n_dev = plan.tp
        compute_rate = tf * 1e12 * pre_eff * n_dev / flops_per_token
        prefill = compute_rate
        if decode and decode > compute_rate:
            decode = compute_rate
            basis["decode_bound"] = "compute"
        basis["tflops"] = tf
        basis["tflops_dtype"] = tf_kind
        basis["flops_per_token"] = int(flops_per_token)
        if plan.cpu_layers:
            # prompt layers on the CPU run at host speed; llama.cpp pushes large batches to the GPU,
            # so prefill stays GPU-bound but pays a copy of the offloaded weights per ubatch
            prefill = compute_rate * plan.gpu_layers / m.layers
    return decode, prefill, basis


def _active_params(s: Sizer) -> int:
    from .params import count_params

    return count_params(s.m).active
