"""From Prometheus series to one Snapshot per node: the same frozen dataclasses the probe builds, so each
node is estimated exactly as `gpufit here --snapshot` would estimate that box.

Three sources, each recognised by its metric names and freely mixed:
- gpufit: the `gpufit report --format prometheus` textfile (gpufit/prometheus.py), bytes;
- dcgm: NVIDIA dcgm-exporter, DCGM_FI_DEV_FB_FREE / _USED / _RESERVED in MiB (etc/default-counters.csv of
  github.com/NVIDIA/dcgm-exporter), labels gpu, UUID (uuid with --use-old-namespace), modelName, pci_bus_id,
  GPU_I_PROFILE / GPU_I_ID on MIG instances, Hostname (hostname since dcgm-exporter commit d5e5f51, 2026);
- nvidia_smi: utkuozdemir/nvidia_gpu_exporter, nvidia_smi_memory_{free,total,used,reserved}_bytes{uuid},
  nvidia_smi_gpu_info{uuid,name,pci_bus_id,index,...}, nvidia_smi_mig_info / nvidia_smi_mig_memory_*_bytes
  {uuid,gpu_instance_id} (internal/exporter/exporter.go, internal/nvidiasmi/resolve.go); its uuid label is
  lower case without the "GPU-" prefix (NormalizeUUID in internal/nvidiasmi/computeapps.go).

Three queries per source (see `queries`): the series themselves, each node's sample age (it decides
staleness) and the free-memory series that went away within a window (so a node whose exporter stopped is
listed, marked stale, rather than silently missing). `used` is not asked for where `total` is there: nothing
the estimate reads depends on it, and it is a sixth of the answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...errors import UsageError
from ...probe.snapshot import Snapshot
from ...units import GIB, MIB
from .readers import DEFAULT_BY, READERS, Nodes, node_of, snapshot_of

if TYPE_CHECKING:
    from .query import Sample

__all__ = ["DEFAULT_BY", "DISCOVERY_WINDOW_S", "SOURCES", "NodeView", "build_views", "check_label",
           "merge_sources", "node_of", "norm_uuid", "parse_match", "queries"]

SOURCES = ("gpufit", "dcgm", "nvidia_smi")
# a GPU several sources report is taken from the first: gpufit's series carry the catalog key, the PCI
# device id, MIG parents and host RAM; DCGM's next (it reads NVML directly); nvidia-smi's last
PRIORITY = {s: i for i, s in enumerate(SOURCES)}
# the free-memory series of each source: its age is the node's age
FREE_METRIC = {"gpufit": "gpufit_gpu_memory_free_bytes", "dcgm": "DCGM_FI_DEV_FB_FREE",
               "nvidia_smi": "nvidia_smi_memory_free_bytes"}
SERIES = {
    "gpufit": ("gpufit_gpu_info|gpufit_gpu_available|gpufit_gpu_memory_(total|free|reserved)_bytes"
               "|gpufit_gpu_mig_enabled|gpufit_gpu_nvlink_links_up|gpufit_gpu_unified_memory|gpufit_gpu_ecc_enabled"
               "|gpufit_mig_info"
               "|gpufit_mig_memory_(total|free)_bytes|gpufit_host_memory_(total|available)_bytes"
               "|gpufit_report_timestamp_seconds"),
    "dcgm": "DCGM_FI_DEV_FB_(FREE|USED|RESERVED)",
    "nvidia_smi": ("nvidia_smi_gpu_info|nvidia_smi_memory_(total|free|reserved)_bytes|nvidia_smi_mig_info"
                   "|nvidia_smi_mig_memory_(total|free)_bytes"),
}
# a node seen in this window but with no fresh sample is listed as stale (floor; 5 x --max-age if longer)
DISCOVERY_WINDOW_S = 300

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)\s*')


def check_label(label: str | None) -> str | None:
    if label is None:
        return None
    if not _LABEL.match(label):
        raise UsageError(f"--by {label!r}: not a Prometheus label name (letters, digits, _; not starting "
                         "with a digit), e.g. --by instance or --by Hostname")
    return label


def parse_match(text: str | None) -> str:
    """--match: a series selector's label matchers, with or without braces: '{job="gpu",zone=~"a|b"}'.
    Returns the matchers without braces ('' for none). Checked here so a typo is named before any query."""
    s = (text or "").strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    if not s:
        return ""
    pos, parts = 0, []
    while pos < len(s):
        m = _MATCHER.match(s, pos)
        if not m:
            raise UsageError(f"--match {text!r}: cannot read a label matcher at {s[pos:pos + 20]!r}; write "
                             "label=\"value\" (also !=, =~, !~), comma separated, e.g. --match 'job=\"gpu\"'")
        if m.group(1) == "__name__":
            raise UsageError("--match: the metric name is gpufit's to choose; match on other labels")
        parts.append(m.group(0).strip())
        pos = m.end()
        if pos < len(s):
            if s[pos] != ",":
                raise UsageError(f"--match {text!r}: expected ',' between matchers at {s[pos:pos + 20]!r}")
            pos += 1
    return ",".join(parts)


def _sel(matchers: str, extra: str = "") -> str:
    inner = ",".join(x for x in (extra, matchers) if x)
    return "{" + inner + "}" if inner else ""


def queries(source: str, matchers: str, window_s: float, by: str | None = None) -> dict[str, str]:
    """The PromQL `fleet` runs for one source (docs/fleet.md lists them):
    - series: the source's series now (Prometheus' 5-minute lookback; a stopped target's are gone at once,
      Prometheus marks them stale);
    - age: per node, how old its newest-but-oldest free-memory sample is (seconds);
    - gone: free-memory series seen in the window that are not there now: nodes whose exporter stopped,
      listed as stale instead of silently missing (empty while every node answers)."""
    free = FREE_METRIC[source] + _sel(matchers)
    group = ", ".join((by,) if by else DEFAULT_BY[source])
    return {
        "series": _sel(matchers, f'__name__=~"{SERIES[source]}"'),
        "age": f"max by ({group}) (time() - timestamp({free}))",
        "gone": f"last_over_time({free}[{int(math.ceil(window_s))}s]) unless {free}",
    }


@dataclass
class NodeView:
    """One node as Prometheus shows it: its snapshot (None when stale or empty) and what was left out."""
    node: str
    source: str
    snapshot: Snapshot | None
    stale: bool = False
    age_s: float | None = None
    reason: str | None = None  # why there is no snapshot, or what was left out
    uuids: set[str] = field(default_factory=set)  # normalised GPU UUIDs, to match a GPU across sources
    notes: list[str] = field(default_factory=list)  # said on stderr: series left out, sources disagreeing


def norm_uuid(u: str | None) -> str | None:
    """A GPU UUID as all three sources can agree on it: lower case, no "GPU-" prefix; None for the
    anonymised all-zero UUID (many boxes share it) and for gpufit's stand-ins for a missing one."""
    if not u:
        return None
    s = u.strip().lower()
    if s.startswith("unknown-"):
        return None
    s = s.split("/")[0]
    if s.startswith("gpu-"):
        s = s[4:]
    return None if not s.strip("0-") else s


def build_views(source: str, series: Sequence[Sample], ages: Sequence[Sample], gone: Sequence[Sample],
                by: str | None, max_age_s: float) -> list[NodeView]:
    """The nodes of one source from the answers to its `series`, `age` and `gone` queries (Samples of
    gpufit.app.fleet.query)."""
    nodes: Nodes = {}
    READERS[source](series, by, nodes)
    at = max((s.at for s in (*series, *ages, *gone)), default=0.0)
    node_age: dict[str, float] = {}
    for s in ages:
        node = node_of(s.labels, source, by)
        if node is not None and math.isfinite(s.value):
            node_age[node] = max(node_age.get(node, 0.0), s.value)
    went: dict[str, set[str]] = {}
    for s in gone:
        node = node_of(s.labels, source, by)
        if node is not None:
            u = norm_uuid(s.labels.get("UUID") or s.labels.get("uuid"))
            went.setdefault(node, set()).update({u} if u else set())
    views: list[NodeView] = []
    for node in sorted(set(nodes) | set(went)):
        n = nodes.get(node)
        uuids = set(went.get(node, set()))
        if n is not None:
            uuids |= {x for x in (norm_uuid(g.uuid) for g in n.gpus.values()) if x}
        age = node_age.get(node)
        report_at = n.host.get("report_at") if n else None
        # a node with series now is not gone because one GPU's series went (a lost GPU has none)
        if report_at is not None and at - report_at > max_age_s:
            why = f"its gpufit report is {at - report_at:.0f}s old, older than --max-age {max_age_s:g}s"
        elif n is None or (age is not None and age > max_age_s):
            why = (f"no sample of {FREE_METRIC[source]} newer than --max-age {max_age_s:g}s"
                   + (" (the target stopped answering)" if n is None else f" (its samples are {age:.0f}s old)"))
        else:
            snap = snapshot_of(node, source, n, at)
            views.append(NodeView(node, source, snap, age_s=age, uuids=uuids, notes=list(n.notes)))
            continue
        views.append(NodeView(node, source, None, stale=True, age_s=age, reason=why, uuids=uuids))
    return views


def merge_sources(views: list[NodeView]) -> tuple[list[NodeView], list[str]]:
    """A GPU several sources report is used once: from a source whose reading is fresh, the first in
    PRIORITY among those; the others lose it (a node left with no GPU is dropped: it is the same box).
    Returns the views and what was said."""
    said: list[str] = []
    owner: dict[str, NodeView] = {}
    for v in sorted(views, key=lambda v: (v.stale, PRIORITY[v.source], v.node)):
        for u in v.uuids:
            owner.setdefault(u, v)
    out: list[NodeView] = []
    for v in views:
        # within one source a repeated UUID is not the same GPU (anonymised captures share one)
        taken = {u for u in v.uuids if owner[u].source != v.source}
        if not taken:
            out.append(v)
            continue
        for u in sorted(taken):
            o = owner[u]
            free_o, free_v = _free_of(o, u), _free_of(v, u)
            words = ""
            if free_o is not None and free_v is not None and abs(free_o - free_v) > 2 * MIB:  # DCGM: whole MiB
                words = (f": they disagree, {o.source} {free_o / GIB:.2f} GiB free, {v.source} "
                         f"{free_v / GIB:.2f} GiB")
            why = f"{v.source}'s is stale" if v.stale and not o.stale else f"order: {' > '.join(SOURCES)}"
            said.append(f"GPU {u} is reported by {o.source} (node {o.node}) and {v.source} (node {v.node}){words}; "
                        f"using {o.source} ({why})")
        if taken == v.uuids or v.snapshot is None:
            continue
        keep = tuple(g for g in v.snapshot.gpus if norm_uuid(g.uuid) not in taken)
        v.snapshot = Snapshot(host=v.snapshot.host, gpus=keep, source=v.snapshot.source)
        v.uuids = v.uuids - taken
        out.append(v)
    return out, said


def _free_of(v: NodeView, u: str) -> int | None:
    if v.snapshot is None:
        return None
    for g in v.snapshot.gpus:
        if norm_uuid(g.uuid) == u:
            return g.memory.free
    return None
