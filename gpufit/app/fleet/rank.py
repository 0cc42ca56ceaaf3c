"""Estimate MODEL on every node and rank them: where it fits now (best first: fewest cards, most headroom,
fastest), where it would fit if the node's GPUs were empty (and what is using them), where it cannot.

Each node goes through the steps `gpufit here --snapshot` takes (devices.select_devices -> app.build_request
-> app.run_estimate), so a node's verdict is the one `here` gives on the same capture. Two things keep 1,000
nodes fast: no alternatives search and no largest-context / largest-batch search per node (fleet shows
neither), and one estimate per distinct node shape (same cards, same free memory, same host RAM: a fleet of
idle identical boxes is estimated once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypedDict

from ...errors import GpufitError
from ...estimator.types import Message, TextEnum, Verdict
from ...units import GIB
from .sources import NodeView

if TYPE_CHECKING:
    from ...catalog import Catalog
    from ...estimator.types import FitRequest, FitResult
    from ...probe.snapshot import Snapshot
    from ..request import ModelChoice



class Group(TextEnum):
    """The four groups of nodes, in the order they are listed."""
    FITS_NOW = "fits"
    FITS_IF_EMPTY = "fits_if_empty"
    CANNOT = "cannot"
    NO_DATA = "no_data"


FITS_NOW, FITS_IF_EMPTY, CANNOT, NO_DATA = Group.FITS_NOW, Group.FITS_IF_EMPTY, Group.CANNOT, Group.NO_DATA


@dataclass(frozen=True)
class NodeFit:
    """One node's answer: what `nodes[]` of gpufit.fleet/1 holds, plus the group and sort key."""
    view: NodeView
    group: Group
    verdict: Verdict | None = None
    result: FitResult | None = None  # on the node as it is now
    reason: Message | None = None  # why it does not simply fit now (render/words.py words it)
    cards: int = 0
    headroom: int | None = None

    def to_dict(self) -> dict[str, Any]:
        from ...render.json import node_object

        return node_object(self)


class RequestOptions(TypedDict):
    """The options of `gpufit fleet` that go to app.build_request as they are, for every node."""
    quant: str | None
    context: int | None
    batch: int
    batch_given: bool
    kv_dtype: str | None
    engine: str
    reserve_bytes: int
    gpu_memory_utilization: float | None
    min_headroom_bytes: int | None


def _shape(req: FitRequest) -> Hashable:
    """Everything of a request an estimate reads, but the UUIDs (which no figure depends on)."""
    return (tuple((d.index, d.name, d.total_bytes, d.free_bytes, d.spec.key if d.spec else None,
                   d.bandwidth_gbps, d.bf16_tflops, d.nvlink, d.mig_profile) for d in req.devices),
            req.host_ram_available_bytes)


class Estimator:
    """One model and one set of options over many nodes; results cached per node shape."""

    def __init__(self, choice: ModelChoice, catalog: Catalog, options: RequestOptions,
                 ram_bytes: int | None = None):
        self.choice, self.catalog, self.options, self.ram_bytes = choice, catalog, options, ram_bytes
        self._cache: dict[Hashable, FitResult] = {}
        self.estimates = 0  # estimates actually run (the rest came from the cache)

    def request(self, snapshot: Snapshot) -> tuple[FitRequest, list[str]]:
        from ... import app
        from ..devices import select_devices

        # the whole box: this process's CUDA_VISIBLE_DEVICES is not the node's
        devices = select_devices(snapshot, self.catalog, None, {})
        ram = self.ram_bytes if self.ram_bytes is not None else snapshot.host.ram_available_bytes
        return app.build_request(self.choice, devices, self.catalog, host_ram_available_bytes=ram, **self.options)

    def fit(self, snapshot: Snapshot) -> FitResult:
        from ... import app

        req, notes = self.request(snapshot)
        key = _shape(req)
        hit = self._cache.get(key)
        if hit is None:
            self.estimates += 1
            hit = app.run_estimate(req, notes, self.catalog, alternatives=False, limits=False)
            self._cache[key] = hit
        return dataclasses.replace(hit, request=req) if hit.request is not req else hit


def _emptied(snapshot: Snapshot) -> Snapshot:
    """The same box with nothing running: each GPU's free memory = total - reserved (what the driver and
    firmware keep), each MIG device's = its total."""
    from ...probe.snapshot import GpuState, Memory

    gpus: list[GpuState] = []
    for g in snapshot.gpus:
        m = g.memory
        free = None if m.total is None else max(0, m.total - (m.reserved or 0))
        migs = tuple(dataclasses.replace(d, memory=dataclasses.replace(d.memory, free=d.memory.total))
                     for d in g.mig.devices)
        gpus.append(dataclasses.replace(g, memory=Memory(total=m.total, free=free, used=0, reserved=m.reserved),
                                        mig=dataclasses.replace(g.mig, devices=migs)))
    return dataclasses.replace(snapshot, gpus=tuple(gpus))


def _in_use(res: FitResult) -> list[dict[str, Any]]:
    """What is using the node's GPUs: each GPU holding half a GiB or more, with the bytes it holds."""
    used = [(d.index, d.total_bytes - d.free_bytes) for d in res.request.devices]
    return [{"gpu": i, "bytes": u} for i, u in used if u >= GIB // 2]


def _reason_now(res: FitResult) -> Message | None:
    """Why the model does not simply fit on the node as it is (None: it does)."""
    if res.verdict == Verdict.NO_FIT:
        return Message("node_no_fit", {"warning": res.warnings[0] if res.warnings else None})
    if res.verdict == Verdict.OFFLOAD:
        p = res.placement
        return Message("node_offload", {"gpu_layers": p.gpu_layers, "layers": res.request.model.layers,
                                        "cpu_bytes": p.cpu_bytes})
    if res.verdict == Verdict.TIGHT:
        return Message("node_tight")
    return None


def fit_node(est: Estimator, view: NodeView) -> NodeFit:
    if view.snapshot is None:
        return NodeFit(view, NO_DATA, reason=Message("node_no_data", text=view.reason or ""))
    try:
        res = est.fit(view.snapshot)
    except GpufitError as e:  # no usable GPU left on this node: say so, the others still rank
        reason = str(e)
        if view.notes:
            reason += " (" + "; ".join(view.notes) + ")"
        return NodeFit(view, NO_DATA, reason=Message("node_no_data", text=reason))
    used = [d for d in res.devices if d.needed_bytes]
    nf = NodeFit(view, CANNOT, verdict=res.verdict, result=res, reason=_reason_now(res), cards=len(used),
                 headroom=min((d.headroom_bytes for d in used), default=None))
    if res.verdict.fits:
        return replace(nf, group=FITS_NOW)
    try:
        empty = est.fit(_emptied(view.snapshot))
    except GpufitError:
        return nf
    if empty.verdict.fits:
        return replace(nf, group=FITS_IF_EMPTY, reason=Message(
            "node_fits_if_empty", {"in_use": _in_use(res), "now": nf.reason, "verdict": str(res.verdict)}))
    # why it cannot is what stops it on empty GPUs, not what is running now
    return replace(nf, reason=Message("node_cannot", {"empty": _reason_now(empty), "verdict": str(empty.verdict)}))


def rank(fits: list[NodeFit]) -> list[NodeFit]:
    """Fits now (fewest cards, most headroom, fastest, then name), fits if empty (fewest cards), cannot,
    no data (stale or empty), each group in that order."""
    order = {g: i for i, g in enumerate(Group)}

    def key(f: NodeFit) -> tuple[int, int, int, float, str]:
        perf = f.result.performance.decode_tokens_per_s if f.result is not None else None
        if f.group == FITS_NOW:
            return (0, f.cards, -(f.headroom or 0), -(perf or 0.0), f.view.node)
        return (order[f.group], f.cards, 0, 0.0, f.view.node)

    return sorted(fits, key=key)
