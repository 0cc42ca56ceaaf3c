"""Text for `gpufit fleet` (the JSON is FleetAnswer.to_dict). GiB = 2^30 bytes."""

from __future__ import annotations

from .text import gib, sig, table
from .words import word
from ..app.fleet.rank import CANNOT, FITS_IF_EMPTY, FITS_NOW, NO_DATA

GROUP_TITLE = {FITS_NOW: "fits now", FITS_IF_EMPTY: "fits if empty", CANNOT: "cannot", NO_DATA: "no data"}


def _free(values: list[int]) -> str:
    if not values:
        return "-"
    if len(set(values)) == 1:
        return f"{len(values)} x {gib(values[0])}"
    if len(values) <= 3:
        return " ".join(gib(v) for v in values)
    return f"{len(values)}: {gib(min(values))}-{gib(max(values))}"


def _short(reason: str | None, width: int = 100) -> str:
    """The table keeps a reason to one readable line; --json has it whole."""
    if not reason:
        return ""
    return reason if len(reason) <= width else reason[: width - 1].rstrip() + "…"


def _row(nf) -> list[str]:
    r, view = nf.result, nf.view
    tps = r.performance.decode_tokens_per_s if r is not None and nf.verdict is not None and nf.verdict.fits else None
    if r is None or nf.group != FITS_NOW:
        place = "-"
    else:
        place = f"{r.placement.strategy} x{nf.cards}" if nf.cards > 1 else str(r.placement.strategy)
    gpus = len(view.snapshot.gpus) if view.snapshot is not None else 0
    return [view.node, view.source, str(gpus), GROUP_TITLE[nf.group] + (" (stale)" if view.stale else ""),
            str(nf.verdict or "-"), _free([] if r is None else [d.free_bytes for d in r.request.devices]),
            "-" if tps is None else sig(tps), place, _short(None if nf.reason is None else word(nf.reason))]


def fleet_text(answer) -> str:
    """An app.fleet.FleetAnswer for a person: the request, one row per node in rank order, the best node's
    engine line."""
    r, m = answer.request, answer.model
    head = (f"{m.name} ({m.key}) · {r['quant']} · context {r['context']} · batch {r['batch']} · "
            f"kv {r['kv_dtype']} · engine {r['engine']}")
    by_group: dict = {}
    for n in answer.nodes:
        by_group[n.group] = by_group.get(n.group, 0) + 1
    counts = ", ".join(f"{by_group[g]} {GROUP_TITLE[g]}" for g in GROUP_TITLE if g in by_group)
    lines = [head, f"{len(answer.nodes)} node(s) from {r['prometheus']}: {counts}", ""]
    lines.append(table([_row(nf) for nf in answer.nodes],
                       ["node", "source", "gpus", "group", "verdict", "free GiB", "tok/s", "placement", "reason"]))
    lines.append("")
    if answer.fits:
        lines.append("Fits now, best first: " + ", ".join(answer.fits))
        best = answer.nodes[0]  # ranked: the first node that fits now leads the list
        flag = best.result.engine_args.get(r["engine"]) if best.result is not None else None
        if flag:
            lines.append(f"On {best.view.node}: {flag}")
    else:
        lines.append("Fits now on no node.")
    if answer.notes:
        lines.append("")
        lines.append("Assumed:")
        lines.extend(f"  {word(n)}" for n in answer.notes)
    return "\n".join(lines)
