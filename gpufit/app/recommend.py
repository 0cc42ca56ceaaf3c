"""`gpufit recommend`: the catalog models that fit on these devices now, each at its best quantization.

Rule (stated in the output): keep the models whose best-quality fitting quantization decodes at least
`min_tokens_per_s`; rank by parameter count (largest first), then by quality of the quantization, then
by decode speed. "Best quantization" = the highest-`quality` format the engine runs that fits without
offload, never above the model's native precision.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .request import build_request, ModelChoice
from ..catalog import Catalog
from ..catalog.types import QuantFormat
from ..estimator.types import Verdict
from ..estimator.engines import default_engine
from ..estimator.fit import estimate
from ..estimator.params import count_params
from ..estimator.types import Device, FitRequest

RULE = ("largest model (parameters) whose best quantization of at least {bits:g} bits per weight fits "
        "with the minimum headroom and keeps >= {min:g} tokens/s decode; ties: better quantization, then faster")
# below ~4 bits per weight quality falls off fast (llama.cpp perplexity tables in quants.toml):
# not recommended unless asked for with --min-bits
DEFAULT_MIN_BITS = 4.0


def _quants_for(catalog: Catalog, engine: str, native_bits: float, min_bits: float) -> list[QuantFormat]:
    qs = [q for q in catalog.quants.values()
          if (engine == "auto" or engine in q.engines) and min_bits <= q.bits_per_weight <= native_bits + 1e-9
          and q.key not in ("fp32",) and not q.tensor_only]
    return sorted(qs, key=lambda q: (-q.quality, q.bits_per_weight))


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One model that fits now at its best quantization (a row of `gpufit recommend`)."""
    model: str
    name: str
    params: int
    quant: str
    engine: str
    context: int
    verdict: str
    total_bytes: int
    headroom_bytes: int | None
    decode_tokens_per_s: float | None
    placement: str
    rule: str
    quality: int = 0  # the quant's quality rank (ties: better quantization first)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["quality"]
        return d


def recommend(catalog: Catalog, devices: tuple[Device, ...], *, context: int = 8192, engine: str = "auto",
              min_tokens_per_s: float = 10.0, min_bits: float = DEFAULT_MIN_BITS, host_ram: int | None = None,
              planning: bool = False) -> list[Recommendation]:
    rows: list[Recommendation] = []
    for m in catalog.models.values():
        native = catalog.quant(m.native_dtype)
        ctx = min(context, m.max_context)
        for q in _quants_for(catalog, engine, native.bits_per_weight, min_bits):
            eng = engine if engine != "auto" else default_engine(q.kind)
            req, _ = build_request(ModelChoice(m), devices, catalog, quant=q.key, context=ctx, engine=eng,
                                   host_ram_available_bytes=host_ram, planning=planning)
            res = estimate(req, alternatives=False) if _cheap_fit(req) else None
            if res is None or res.verdict != Verdict.FITS:  # tight is not a recommendation
                continue
            tps = res.performance.decode_tokens_per_s
            if tps is not None and tps < min_tokens_per_s:
                continue
            rows.append(Recommendation(
                model=m.key, name=m.name, params=count_params(m).total, quant=q.key, engine=eng, context=ctx,
                verdict=str(res.verdict), total_bytes=res.memory.total_bytes,
                headroom_bytes=min((d.headroom_bytes for d in res.devices if d.needed_bytes), default=None),
                decode_tokens_per_s=tps, placement=str(res.placement.strategy),
                rule=RULE.format(min=min_tokens_per_s, bits=min_bits), quality=q.quality))
            break
    rows.sort(key=lambda r: (-r.params, -r.quality, -(r.decode_tokens_per_s or 0)))
    return rows


def _cheap_fit(req: FitRequest) -> bool:
    """Skip the full estimate when the weights alone exceed all the selected memory."""
    from ..estimator.memory import weight_bytes

    free = sum(d.free_bytes - req.reserve_bytes for d in req.devices)
    return weight_bytes(req.model, req.quant) < free
