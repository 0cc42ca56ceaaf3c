"""Placement: which devices hold which layers, and how many bytes each must hold.

Strategies, each tried only where valid:
- single: the whole model on the device with the most usable memory;
- tensor_parallel (vLLM): k identical cards, k a power of two dividing the attention heads, KV heads
  per rank max(1, kv_heads // k);
- layer_split (llama.cpp / Ollama / transformers) or pipeline_parallel (vLLM): contiguous layer ranges
  over several (possibly different) cards, in proportion to what each can hold after its own fixed
  costs (runtime overhead, compute buffer, output head on the last card);
- cpu_offload: as many layers as fit on the GPUs, the rest in host RAM.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import engines
from .types import Device, FitRequest, Message, Strategy

if TYPE_CHECKING:  # pragma: no cover
    from .engines.base import Refusal


@dataclass
class DevicePlan:
    """Bytes one device holds in a plan, by part."""
    device: Device
    layers: int = 0
    weights: int = 0
    kv: int = 0
    activation: int = 0
    overhead: int = 0
    is_last: bool = False

    @property
    def needed(self) -> int:
        return self.weights + self.kv + self.activation + self.overhead if self.layers or self.weights else 0


@dataclass
class Plan:
    """A placement under consideration: strategy, per-device parts, offloaded layers, and why it fails."""
    strategy: Strategy
    fits: bool  # every used device holds what it must (and host RAM holds the offloaded part)
    devices: list[DevicePlan] = field(default_factory=list)
    tp: int = 1
    pp: int = 1
    gpu_layers: int = 0
    cpu_layers: int = 0
    cpu_bytes: int = 0
    host_bytes: int = 0  # engine keeps in host RAM anyway (llama.cpp token embeddings)
    # every transformer layer on the GPUs but the output layer in host RAM (llama.cpp -ngl N_LAYER,
    # Ollama's layers.offload N of N+1): the CPU computes the head, so it is an offload
    head_on_host: bool = False
    reasons: list[Message] = field(default_factory=list)  # why it does not fit: Message objects (render words them)
    refusal: Refusal | None = None  # the engine's own refusal of this layout

    @property
    def used(self) -> list[DevicePlan]:
        return [d for d in self.devices if d.needed]


def least_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """The least k in (lo, hi] with pred(k), by bisection, for a pred that is false at lo, true at hi and
    stays true once true (more room, a smaller context, more layers' experts in host RAM)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def usable(dev: Device, req: FitRequest) -> int:
    return dev.free_bytes - req.reserve_bytes


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Sizer:
    """Bytes of each part for one request, as its engine holds them, computed once."""

    def __init__(self, req: FitRequest):
        self.req = req
        self.m = req.model
        self.engine = engines.get(req.engine, req.engine_version)
        self.profile = self.engine.profile
        self.ws = self.engine.weight_split(self.m, req.quant, req.weights_bytes_exact)
        self.overhead = self.engine.overhead_bytes(req)
        # each part depends only on its arguments within one request: placements try many layouts of
        # the same few (layers, tp) shapes, so each is computed once
        self._memo: dict[tuple[Hashable, ...], int] = {}

    def _once(self, key: tuple[Hashable, ...], make: Callable[[], int]) -> int:
        v = self._memo.get(key)
        if v is None:
            v = self._memo[key] = make()
        return v

    def kv(self, layers: int, tp: int = 1) -> int:
        return self._once(("kv", layers, tp), lambda: self.engine.kv_bytes(self.req, layers=layers, tp=tp))

    def activation(self, tp: int = 1, multi_gpu: bool = False) -> int:
        return self._once(("act", tp, multi_gpu),
                          lambda: self.engine.activation_bytes(self.req, tp=tp, multi_gpu=multi_gpu))

    def weights(self, layers: int, tp: int = 1, first: bool = True, last: bool = True) -> int:
        """Weight bytes on one rank holding `layers` layers (the embeddings with the first stage,
        the output head with the last), as the engine loads them."""
        def make() -> int:
            e, r = self.engine, self.req
            on_gpu = (e.rank_vocab_bytes(r, self.embed_on_gpu, tp) * first
                      + e.rank_vocab_bytes(r, self.ws.output, tp) * last + e.rank_layer_bytes(r, self.ws, layers, tp))
            return int(round(max(0.0, on_gpu - e.weights_off_gpu(r))))

        return self._once(("w", layers, tp, first, last), make)

    @property
    def embed_on_gpu(self) -> int:
        """Token embeddings (and a per-layer embedding table, Gemma 3n / 4) where the engine loads them
        to the first GPU."""
        return 0 if self.profile.embeddings_on_host else self.ws.embed + self.ws.per_layer_embed

    @property
    def host_embed(self) -> int:
        """What the engine keeps in host RAM whatever the layer placement: embeddings where it keeps
        them there, and what its own settings put there (engine.host_resident_bytes)."""
        host = self.ws.embed + self.ws.per_layer_embed if self.profile.embeddings_on_host else 0
        return host + self.engine.host_resident_bytes(self.req)

    def layer_cost(self) -> float:
        """Bytes one more layer costs on a device: its weights and its KV."""
        return self.engine.rank_layer_bytes(self.req, self.ws, 1, 1) + self.kv(1)


def plan_single(s: Sizer, dev: Device) -> Plan:
    m = s.m
    dp = DevicePlan(dev, layers=m.layers, is_last=True)
    dp.weights = s.weights(m.layers)
    dp.kv = s.kv(m.layers)
    dp.activation = s.activation()
    dp.overhead = s.overhead
    ok = dp.needed <= usable(dev, s.req)
    return Plan(Strategy.SINGLE, ok, [dp], gpu_layers=m.layers, host_bytes=s.host_embed,
                reasons=[] if ok else [Message("gpu_short", {"gpu": dev.index, "name": dev.name, "needed_bytes": dp.needed,
                                                            "usable_bytes": usable(dev, s.req)})])


def plan_tensor_parallel(s: Sizer, devs: list[Device], pp: int = 1) -> Plan:
    """Tensor parallel over len(devs) // pp identical cards per stage, `pp` pipeline stages with an
    even layer split (vLLM's default partition). TP inside a node x PP across nodes uses the same
    arithmetic."""
    k = len(devs) // pp
    m = s.m
    stage_layers = [m.layers // pp + (1 if i < m.layers % pp else 0) for i in range(pp)]
    plans = []
    for st in range(pp):
        n = stage_layers[st]
        first, last = st == 0, st == pp - 1
        for d in devs[st * k:(st + 1) * k]:
            dp = DevicePlan(d, layers=n, is_last=last)
            # vocab-parallel embeddings / head and column/row-parallel layers: weights split k ways
            dp.weights = s.weights(n, k, first, last)
            dp.kv = s.kv(n, tp=k)
            dp.activation = s.activation(tp=k)
            dp.overhead = s.engine.overhead_bytes(s.req, tp=k)
            plans.append(dp)
    ok = all(p.needed <= usable(p.device, s.req) for p in plans)
    strategy = Strategy.TENSOR_PARALLEL if pp == 1 else Strategy.PIPELINE_PARALLEL
    return Plan(strategy, ok, plans, tp=k, pp=pp, gpu_layers=m.layers, host_bytes=s.host_embed,
                reasons=[] if ok else [Message("rank_short", {"tensor_parallel": k, "pipeline_parallel": pp})])


def split_layers(s: Sizer, devs: list[Device], allow_cpu: bool, force: bool = False,
                 by_free: bool = False, max_layers: int | None = None, margin: int = 0) -> Plan:
    """Contiguous layer ranges in proportion to what each device can hold after its fixed costs (and
    `margin`, memory the engine keeps free on each device). The last device also holds the output head.
    With `allow_cpu`, layers that fit nowhere go to host RAM. With `force`, every layer is placed in
    proportion to usable memory even where it does not fit, so a no-fit report shows each device's
    shortfall."""
    m = s.m
    multi = len(devs) > 1
    act = s.activation(multi_gpu=multi)
    cost = s.layer_cost()
    caps = []
    for i, d in enumerate(devs):
        fixed = s.overhead + act + (s.ws.output if i == len(devs) - 1 else 0) + (s.embed_on_gpu if i == 0 else 0)
        caps.append(max(0, int((usable(d, s.req) - margin - fixed) // cost)))
    out_dev = None
    if by_free or (force and s.engine.splits_like_llama_cpp):
        # llama.cpp's own split: in proportion to free memory, over n_layer + 1 parts (the output
        # layer is the last part), so the last device holds one layer fewer plus the head
        shares = s.engine.split_weights(s.req, len(devs)) or [max(1, usable(d, s.req)) for d in devs]
        layers, out_dev = llama_cpp_split(m.layers, shares)
        force = True
    elif force:
        layers = _apportion(m.layers, [max(1, usable(d, s.req)) for d in devs])
    elif max_layers is not None:
        # the engine pins how many layers go to the GPUs (-ngl, Ollama's own estimate): place exactly
        # that many, in proportion to room, and let the per-device check below say if they fit
        layers = _apportion(min(m.layers, max_layers), [max(1, c) for c in caps])
    else:
        layers = _apportion(min(m.layers, sum(caps)), caps, caps)
    n_gpu = sum(layers)
    # the engine's count includes the output layer (llama.cpp: the head is on a GPU only when -ngl > n_layer)
    head_on_host = max_layers is not None and max_layers <= m.layers and n_gpu == m.layers
    plans = []
    last = out_dev if out_dev is not None else max((i for i, n in enumerate(layers) if n), default=len(devs) - 1)
    for i, d in enumerate(devs):
        dp = DevicePlan(d, layers=layers[i], is_last=(i == last and n_gpu == m.layers and not head_on_host))
        if layers[i] or dp.is_last:
            dp.weights = s.weights(layers[i], 1, i == 0, dp.is_last)
            dp.kv = s.kv(layers[i])
            dp.activation = act
            dp.overhead = s.overhead
        plans.append(dp)
    cpu_layers = m.layers - n_gpu
    cpu_bytes = 0
    if cpu_layers:
        # offloaded layers keep their weights and KV in host RAM; the head goes with them
        cpu_bytes = int(round(s.ws.per_layer * cpu_layers + s.ws.output)) + s.kv(cpu_layers)
    elif head_on_host:
        cpu_bytes = int(round(s.ws.output))
    used = [p for p in plans if p.layers]
    offload = bool(cpu_layers) or head_on_host
    strategy = Strategy.CPU_OFFLOAD if offload else (Strategy.LAYER_SPLIT if len(used) > 1 else Strategy.SINGLE)
    if len(used) > 1 and not offload:
        strategy = s.engine.split_strategy
    reasons: list[Message] = []

    def shortfall(short: list[DevicePlan]) -> Message:
        return Message("gpus_short", {"short": [{"gpu": p.device.index, "short_bytes": p.needed - usable(p.device, s.req)}
                                                for p in short]})

    if force:
        short = [p for p in plans if p.needed > usable(p.device, s.req)]
        ok = not short
        if short:
            reasons = [shortfall(short)]
    elif offload and allow_cpu:
        host = s.req.host_ram_available_bytes
        ok = n_gpu > 0 and host is not None and cpu_bytes + s.host_embed <= host
        short = [p for p in plans if p.needed > usable(p.device, s.req)] if max_layers is not None else []
        if short:
            ok = False
            reasons = [shortfall(short)]
        elif not n_gpu:
            reasons = [Message("no_layer_fits")]
        elif host is None:
            reasons = [Message("offload_ram_unknown", {"cpu_layers": cpu_layers, "layers": m.layers,
                                                       "host_bytes": cpu_bytes + s.host_embed})]
        elif not ok:
            reasons = [Message("offload_ram_short", {"host_bytes": cpu_bytes + s.host_embed, "available_bytes": host})]
    else:
        ok = cpu_layers == 0
        if not ok:
            reasons = [Message("layers_do_not_fit", {"cpu_layers": cpu_layers, "layers": m.layers})]
    return Plan(strategy, ok, plans, pp=len(used) if strategy == Strategy.PIPELINE_PARALLEL else 1,
                gpu_layers=n_gpu, cpu_layers=cpu_layers, cpu_bytes=cpu_bytes, host_bytes=s.host_embed,
                reasons=reasons, head_on_host=head_on_host)


def llama_cpp_split(n_layer: int, weights: Sequence[float]) -> tuple[list[int], int]:
    """Layers per device as llama.cpp assigns them: cumulative split fractions of `weights`; layer il
    goes to the first device whose cumulative fraction exceeds il / (n_layer + 1), the output layer
    (il = n_layer) likewise (src/llama-model.cpp load_tensors, get_layer_buft_list). Returns the counts
    and the index of the device holding the output layer. Two equal cards, 32 layers: 17 / 15 + head,
    as the load logs in memory.csv show."""
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    cum[-1] = 1.0 + 1e-9

    def dev_of(il: int) -> int:
        f = il / (n_layer + 1)
        return next(i for i, c in enumerate(cum) if c > f)

    counts = [0] * len(weights)
    for il in range(n_layer):
        counts[dev_of(il)] += 1
    return counts, dev_of(n_layer)


def _apportion(n: int, shares: Sequence[float], caps: Sequence[int] | None = None) -> list[int]:
    """Split n items in proportion to `shares` (cumulative rounding), never above `caps`; what the
    caps leave over goes where most room remains."""
    total = sum(shares)
    out = [0] * len(shares)
    if not total or n <= 0:
        return out
    acc, prev = 0.0, 0
    for i, c in enumerate(shares):
        acc += n * c / total
        out[i] = int(round(acc)) - prev
        if caps is not None:
            out[i] = min(caps[i], out[i])
        prev += out[i]
    short = n - sum(out)
    while short > 0 and caps is not None:
        i = max(range(len(out)), key=lambda j: caps[j] - out[j])
        if caps[i] - out[i] <= 0:
            break
        out[i] += 1
        short -= 1
    return out


def _index_order(devs: list[Device]) -> list[Device]:
    """CUDA device order: engines take per-device flags (-ts, layer partitions) in this order."""
    def key(d: Device) -> tuple[int, int, str]:
        head, _, tail = d.index.partition("/")
        return (int(head) if head.isdigit() else 1 << 30, int(tail) if tail.isdigit() else -1, d.index)
    return sorted(devs, key=key)


# the GPUs of one node: tensor parallelism stays inside it (NVLink / one PCIe root), pipeline
# parallelism crosses nodes (vLLM docs, "Distributed inference and serving")
NODE_GPUS = 8


def starts(s: Sizer, p: Plan) -> bool:
    """The plan holds its parts and the engine's own start-up checks pass (vLLM: free memory covers
    the utilisation budget, the KV pool serves `batch` requests of `context`)."""
    if not p.fits:
        return False
    em = s.engine.startup(s.req, p) if p.used else None
    return em is None or em.refusal is None


def _tp_pp_plan(s: Sizer, group: list[Device]) -> Plan | None:
    """Tensor parallelism on identical cards: the smallest power of two that holds the model and
    starts (every rank reads its share at once, the fastest layout); only when no TP size up to a
    node does, TP x PP on the fewest cards, the larger TP first at equal count."""
    m = s.req.model
    k = 2
    while k <= min(len(group), NODE_GPUS):
        if s.engine.tp_valid(m, k):
            p = plan_tensor_parallel(s, group[:k])
            if starts(s, p):
                return p
        k *= 2
    for n in range(2, len(group) + 1):
        for k in (8, 4, 2, 1):
            if n % k or not s.engine.tp_valid(m, k) or n // k > m.layers or n // k == 1:
                continue
            p = plan_tensor_parallel(s, group[:n], pp=n // k)
            if starts(s, p):
                return p
    return None


def _identical_groups(devs: list[Device]) -> list[list[Device]]:
    groups: dict[tuple[str, int, str | None], list[Device]] = {}
    for d in devs:
        groups.setdefault((d.catalog_key or d.name, d.total_bytes, d.mig_profile), []).append(d)
    return list(groups.values())


def _fixed(s: Sizer, devs: list[Device], tp: int, pp: int) -> Plan:
    """The placement the server's own flags pin (--tensor-parallel-size / --pipeline-parallel-size)."""
    m = s.req.model
    n = tp * pp
    from .engines.base import Refusal

    if n > len(devs):
        why = f"the flags ask for {tp} x {pp} = {n} GPUs, {len(devs)} selected"
        return Plan(Strategy.TENSOR_PARALLEL if pp == 1 else Strategy.PIPELINE_PARALLEL, False, [], tp=tp, pp=pp,
                    reasons=[Message("flags_invalid", text=why)],
                    refusal=Refusal("not_enough_gpus", why, {"needed": n, "selected": len(devs)}))
    if not s.engine.tp_valid(m, tp):
        # vllm/config/model.py verify_with_parallel_config
        why = (f"Total number of attention heads ({m.heads}) must be divisible by tensor parallel size ({tp})"
               if m.heads % tp else f"{m.kv_heads} KV heads and tensor parallel size {tp}: neither divides the other")
        return Plan(Strategy.TENSOR_PARALLEL, False, [], tp=tp, pp=pp, reasons=[Message("flags_invalid", text=why)],
                    refusal=Refusal("tensor_parallel_invalid", why, {"tensor_parallel": tp, "heads": m.heads,
                                                                    "kv_heads": m.kv_heads}))
    group = _index_order(devs)[:n]
    plan = plan_single(s, group[0]) if n == 1 else plan_tensor_parallel(s, group, pp=pp)
    # flags the engine refuses to start with (llama.cpp --split-mode tensor with flash attention off, ...)
    refusal = s.engine.capability_refusal(s.req, plan.used)
    if refusal is not None and plan.refusal is None:
        plan.refusal = refusal
        plan.reasons = [*plan.reasons, Message("flags_invalid", text=refusal.message)]
    return plan


def _fewest_cards(s: Sizer, devs: list[Device]) -> Plan | None:
    """The layer split over the fewest of `devs` (largest first) that holds the model and starts."""
    def split(k: int) -> Plan:
        return split_layers(s, _index_order(devs[:k]), allow_cpu=False)

    hi = len(devs)
    best = split(hi)
    if not starts(s, best):
        return None
    lo = 2
    while lo < hi:
        mid = (lo + hi) // 2
        p = split(mid)
        if starts(s, p):
            hi, best = mid, p
        else:
            lo = mid + 1
    return best


def _refit(s: Sizer, devs: list[Device], margin: int) -> Plan:
    """An engine that fits its own layout to the GPUs it finds (llama.cpp --fit, common/fit.cpp): the
    layout it would load, where every GPU it uses keeps `margin` free (step 1); else the GPUs refilled
    so that each keeps it, the layers left over in host RAM (step 3)."""
    p = split_layers(s, devs, allow_cpu=False, by_free=True)
    if p.fits and all(usable(dp.device, s.req) - dp.needed >= margin for dp in p.used):
        if len(p.used) > 1:
            p.strategy = Strategy.LAYER_SPLIT
        return p
    return split_layers(s, devs, allow_cpu=True, margin=margin)


def visible_units(devs: Sequence[Device]) -> int:
    """How many of `devs` one process can use together: a CUDA process sees one MIG device, and NCCL
    does not run across MIG devices, so each MIG device is a unit of its own (NVIDIA MIG user guide,
    "CUDA device enumeration"); whole GPUs all."""
    if any(d.parent is not None or d.mig_profile for d in devs):
        return min(1, len(devs))
    return len(devs)


def choose(req: FitRequest) -> Plan:
    """The placement the engine would use on these devices: single if it fits, else the smallest
    multi-GPU arrangement that fits, else CPU offload, else the best failing plan (for the report)."""
    s = Sizer(req)
    devs = sorted(req.devices, key=lambda d: usable(d, req), reverse=True)
    if not devs:
        return Plan(Strategy.SINGLE, False, [], reasons=[Message("no_gpu")])
    devs = devs[:visible_units(devs)]
    fixed = s.engine.fixed_placement(req)
    if fixed is not None:
        return _fixed(s, devs, *fixed)
    limit = s.engine.gpu_layer_limit(req)
    if limit is not None and limit <= req.model.layers:
        # the server's own flags keep layers on the CPU: plan exactly that offload
        return split_layers(s, _index_order(devs), allow_cpu=True, max_layers=max(0, limit))
    margin = s.engine.fit_margin(req)
    if margin is not None:
        return _refit(s, _index_order(devs), margin)
    if len(devs) > 1 and s.engine.uses_all_gpus:
        # llama.cpp uses every visible GPU by default, split in proportion to free memory
        p = split_layers(s, _index_order(devs), allow_cpu=False, by_free=True)
        if p.fits:
            p.strategy = Strategy.LAYER_SPLIT
            return p
    single = plan_single(s, devs[0])
    if starts(s, single):
        return single
    candidates: list[Plan] = []
    if len(devs) > 1:
        if s.profile.supports_tensor_parallel:
            for group in _identical_groups(devs):
                best = _tp_pp_plan(s, _index_order(group))
                if best:
                    candidates.append(best)
        if not candidates:
            # Ollama packs onto the fewest GPUs; llama.cpp / vLLM PP use what is needed, largest first.
            # More of the largest cards only add room, so the fewest that hold it are found by bisection
            # (a plan over 1,000 cards asks for ~10 splits, not 1,000)
            fewest = _fewest_cards(s, devs)
            if fewest is not None:
                candidates.append(fewest)
    if candidates:
        return min(candidates, key=lambda p: (len(p.used), p.strategy != Strategy.TENSOR_PARALLEL))
    if single.fits:
        # it holds, but the engine refuses it: report that plan (the refusal says why)
        return single
    offload_reasons: list[Message] = []
    if s.profile.supports_offload:
        off = split_layers(s, _index_order(devs), allow_cpu=True)
        if off.fits:
            return off
        offload_reasons = off.reasons
    # nothing fits: report the split over all devices, so per-device shortfalls are visible
    best = split_layers(s, _index_order(devs), allow_cpu=False, force=True) if len(devs) > 1 else single
    best.fits = False
    best.reasons = (best.reasons or single.reasons) + [r for r in offload_reasons if r not in (best.reasons or single.reasons)]
    return best
