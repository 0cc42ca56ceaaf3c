"""Text for `gpufit fleet` (the JSON is FleetAnswer.to_dict). GiB = 2^30 bytes."""

from __future__ import annotations

from .text import gib, table
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


def fleet_text(answer) -> str:
    d = answer.to_dict()
    r = d["request"]
    m = d["model"]
    head = (f"{m['name']} ({m['key']}) · {r['quant']} · context {r['context']} · batch {r['batch']} · "
            f"kv {r['kv_dtype']} · engine {r['engine']}")
    by_group: dict = {}
    for n in answer.nodes:
        by_group[n.group] = by_group.get(n.group, 0) + 1
    counts = ", ".join(f"{by_group[g]} {GROUP_TITLE[g]}" for g in GROUP_TITLE if g in by_group)
    lines = [head, f"{len(answer.nodes)} node(s) from {answer.request['prometheus']}: {counts}", ""]
    rows = []
    for nf, nd in zip(answer.nodes, d["nodes"]):
        tps = nd["decode_tokens_per_s"]
        place = nd["placement"]
        rows.append([nd["node"], nd["source"], str(nd["gpus"]), GROUP_TITLE[nf.group] + (" (stale)" if nd["stale"] else ""),
                     nd["verdict"] or "-", _free(nd["free_bytes"]), "-" if tps is None else f"{tps:.1f}",
                     "-" if place is None or nf.group not in (FITS_NOW,) else
                     f"{place['strategy']} x{nf.cards}" if nf.cards > 1 else place["strategy"],
                     _short(nd["reason"])])
    lines.append(table(rows, ["node", "source", "gpus", "group", "verdict", "free GiB", "tok/s", "placement",
                              "reason"]))
    lines.append("")
    if d["fits"]:
        lines.append("Fits now, best first: " + ", ".join(d["fits"]))
        best = next(nd for nd in d["nodes"] if nd["node"] == d["fits"][0])
        flag = best["engine_args"].get(r["engine"])
        if flag:
            lines.append(f"On {best['node']}: {flag}")
    else:
        lines.append("Fits now on no node.")
    if answer.notes:
        lines.append("")
        lines.append("Assumed:")
        lines.extend(f"  {word(n)}" for n in answer.notes)
    return "\n".join(lines)
