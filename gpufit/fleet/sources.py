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
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import UsageError
from ..probe.snapshot import GpuState, HostInfo, Memory, Mig, MigDevice, NvLink, Snapshot

MIB = 1 << 20
SOURCES = ("gpufit", "dcgm", "nvidia_smi")
# a GPU several sources report is taken from the first: gpufit's series carry the catalog key, the PCI
# device id, MIG parents and host RAM; DCGM's next (it reads NVML directly); nvidia-smi's last
PRIORITY = {s: i for i, s in enumerate(SOURCES)}
# the free-memory series of each source: its age is the node's age
FREE_METRIC = {"gpufit": "gpufit_gpu_memory_free_bytes", "dcgm": "DCGM_FI_DEV_FB_FREE",
               "nvidia_smi": "nvidia_smi_memory_free_bytes"}
SERIES = {
    "gpufit": ("gpufit_gpu_info|gpufit_gpu_available|gpufit_gpu_memory_(total|free|reserved)_bytes"
               "|gpufit_gpu_mig_enabled|gpufit_gpu_nvlink_links_up|gpufit_gpu_unified_memory|gpufit_mig_info"
               "|gpufit_mig_memory_(total|free)_bytes|gpufit_host_memory_(total|available)_bytes"
               "|gpufit_report_timestamp_seconds"),
    "dcgm": "DCGM_FI_DEV_FB_(FREE|USED|RESERVED)",
    "nvidia_smi": ("nvidia_smi_gpu_info|nvidia_smi_memory_(total|free|reserved)_bytes|nvidia_smi_mig_info"
                   "|nvidia_smi_mig_memory_(total|free)_bytes"),
}
# the label that names a node when --by is not given, tried in order on each series
DEFAULT_BY = {"gpufit": ("instance",), "dcgm": ("Hostname", "hostname", "instance"), "nvidia_smi": ("instance",)}
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
    uuids: set = field(default_factory=set)  # normalised GPU UUIDs, to match a GPU across sources
    notes: list = field(default_factory=list)  # said on stderr: series left out, sources disagreeing


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


def _node_of(labels: dict, source: str, by: str | None) -> str | None:
    for name in ((by,) if by else DEFAULT_BY[source]):
        v = labels.get(name)
        if v:
            return v
    return None


def _bytes(value: float, scale: int, what: str, notes: list) -> int | None:
    """A memory reading in bytes; NaN, infinite or negative values are left out with a note."""
    if math.isnan(value) or math.isinf(value) or value < 0:
        notes.append(f"{what} is {value:g}: left out")
        return None
    return int(round(value * scale))


def _int(v, default=None):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


@dataclass
class _Gpu:
    key: str
    index: int | None = None
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    pci_device_id: str | None = None
    mem: dict = field(default_factory=dict)  # total/free/used/reserved -> bytes
    available: bool = True
    mig_enabled: bool | None = None
    nvlink_up: int = 0
    unified: bool = False
    migs: dict = field(default_factory=dict)  # key -> {index, uuid, profile, gi, ci, mem}


@dataclass
class _Node:
    gpus: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    ages: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def gpu(self, key) -> _Gpu:
        if key not in self.gpus:
            self.gpus[key] = _Gpu(key)
        return self.gpus[key]


def _read_gpufit(samples, by, nodes) -> None:
    migs: dict = {}
    for s in samples:
        lab, name = s.labels, s.labels.get("__name__", "")
        node = _node_of(lab, "gpufit", by)
        if node is None:
            continue
        n = nodes.setdefault(node, _Node())
        if name.startswith("gpufit_host_memory_"):
            kind = "ram_total" if "total" in name else "ram_available"
            n.host[kind] = _bytes(s.value, 1, f"host memory {kind[4:]}", n.notes)
            continue
        if name == "gpufit_report_timestamp_seconds":
            if math.isfinite(s.value):
                n.host["report_at"] = s.value
            continue
        if name.startswith("gpufit_mig_"):
            migs.setdefault((node, lab.get("uuid", "")), []).append(s)
            continue
        u = lab.get("uuid")
        if not u:
            continue
        g = n.gpu(u)
        g.uuid = None if u.startswith("unknown-") else u.split("/")[0]
        if name == "gpufit_gpu_info":
            g.index = _int(lab.get("index"))
            g.name = lab.get("name") or None
            g.pci_device_id = lab.get("pci_device_id") or None
            n.host["driver"] = lab.get("driver") or None
        elif name == "gpufit_gpu_available":
            g.available = s.value == 1
        elif name == "gpufit_gpu_mig_enabled":
            g.mig_enabled = s.value == 1
        elif name == "gpufit_gpu_unified_memory":
            g.unified = s.value == 1
        elif name == "gpufit_gpu_nvlink_links_up":
            g.nvlink_up = int(s.value) if math.isfinite(s.value) and s.value > 0 else 0
        elif name.startswith("gpufit_gpu_memory_"):
            kind = name[len("gpufit_gpu_memory_"):-len("_bytes")]
            g.mem[kind] = _bytes(s.value, 1, f"GPU {u} memory {kind}", n.notes)
    for (node, mig_uuid), ss in migs.items():
        n = nodes[node]
        info = next((s for s in ss if s.labels.get("__name__") == "gpufit_mig_info"), None)
        if info is None:
            continue
        parent = n.gpus.get(info.labels.get("parent_uuid"))
        if parent is None:
            continue
        lab = info.labels
        m = {"index": _int(lab.get("index", "").split("/")[-1], len(parent.migs)),
             "uuid": None if "/mig/" in mig_uuid else mig_uuid, "profile": lab.get("profile") or None,
             "gi": _int(lab.get("gpu_instance_id")), "ci": _int(lab.get("compute_instance_id")), "mem": {}}
        for s in ss:
            nm = s.labels.get("__name__", "")
            if nm.startswith("gpufit_mig_memory_"):
                kind = nm[len("gpufit_mig_memory_"):-len("_bytes")]
                m["mem"][kind] = _bytes(s.value, 1, f"MIG device {mig_uuid} memory {kind}", n.notes)
        parent.migs[mig_uuid] = m


def _read_dcgm(samples, by, nodes) -> None:
    kinds = {"DCGM_FI_DEV_FB_FREE": "free", "DCGM_FI_DEV_FB_USED": "used", "DCGM_FI_DEV_FB_RESERVED": "reserved"}
    slices: dict = {}
    for s in samples:
        lab = s.labels
        kind = kinds.get(lab.get("__name__", ""))
        node = _node_of(lab, "dcgm", by)
        if kind is None or node is None:
            continue
        n = nodes.setdefault(node, _Node())
        uuid = lab.get("UUID") or lab.get("uuid")
        key = uuid or f"gpu{lab.get('gpu')}"
        g = n.gpu(key)
        g.uuid, g.index = uuid, _int(lab.get("gpu"), g.index)
        g.name = lab.get("modelName") or g.name
        g.pci_bus_id = lab.get("pci_bus_id") or g.pci_bus_id
        value = _bytes(s.value, MIB, f"GPU {key} {lab.get('__name__')}", n.notes)
        if lab.get("GPU_I_PROFILE") or lab.get("GPU_I_ID"):
            gi = lab.get("GPU_I_ID", "")
            m = slices.setdefault((node, key, gi), {"profile": lab.get("GPU_I_PROFILE") or None,
                                                    "gi": _int(gi), "mem": {}})
            m["mem"][kind] = value
        else:
            g.mem[kind] = value
    for (node, key, gi), m in sorted(slices.items(), key=lambda kv: (kv[0][0], kv[0][1], _int(kv[0][2], 0))):
        g = nodes[node].gpus[key]
        g.mig_enabled = True
        mem = m["mem"]
        total = None if mem.get("free") is None or mem.get("used") is None else (
            mem["free"] + mem["used"] + (mem.get("reserved") or 0))
        g.migs[gi] = {"index": len(g.migs), "uuid": None, "profile": m["profile"], "gi": m["gi"], "ci": None,
                      "mem": {"free": mem.get("free"), "total": total}}
    for node, n in nodes.items():
        for g in n.gpus.values():
            mem = g.mem
            if "total" not in mem and mem.get("free") is not None and mem.get("used") is not None:
                # DCGM has no total in its default counters: NVML's total = free + used + reserved
                mem["total"] = mem["free"] + mem["used"] + (mem.get("reserved") or 0)
            if g.migs and mem.get("total") is None:
                tot = [m["mem"]["total"] for m in g.migs.values()]
                if all(t is not None for t in tot):
                    mem["total"] = sum(tot)  # the card's memory, as far as its MIG instances show it
                    n.notes.append(f"GPU {g.key}: no whole-GPU series; its total is the sum of its MIG instances")


def _read_nvidia_smi(samples, by, nodes) -> None:
    migs: dict = {}
    for s in samples:
        lab, name = s.labels, s.labels.get("__name__", "")
        node = _node_of(lab, "nvidia_smi", by)
        u = lab.get("uuid")
        if node is None or not u:
            continue
        n = nodes.setdefault(node, _Node())
        if name.startswith("nvidia_smi_mig_"):
            migs.setdefault((node, u), []).append(s)
            continue
        g = n.gpu(u)
        g.uuid = u if u.lower().startswith("gpu-") else f"GPU-{u}"
        if name == "nvidia_smi_gpu_info":
            g.index = _int(lab.get("index"))
            g.name = lab.get("name") or None
            g.pci_bus_id = lab.get("pci_bus_id") or None
            n.host["driver"] = lab.get("driver_version") or None
        elif name.startswith("nvidia_smi_memory_"):
            kind = name[len("nvidia_smi_memory_"):-len("_bytes")]
            g.mem[kind] = _bytes(s.value, 1, f"GPU {u} memory {kind}", n.notes)
    for (node, u), ss in migs.items():
        g = nodes[node].gpus.get(u)
        if g is None:
            continue
        mem_by_gi: dict = {}
        for s in ss:
            nm = s.labels.get("__name__", "")
            if nm.startswith("nvidia_smi_mig_memory_"):
                kind = nm[len("nvidia_smi_mig_memory_"):-len("_bytes")]
                mem_by_gi.setdefault(s.labels.get("gpu_instance_id"), {})[kind] = _bytes(
                    s.value, 1, f"GPU {u} MIG instance {s.labels.get('gpu_instance_id')} memory {kind}",
                    nodes[node].notes)
        infos = sorted((s for s in ss if s.labels.get("__name__") == "nvidia_smi_mig_info"),
                       key=lambda s: (_int(s.labels.get("gpu_instance_id"), 0),
                                      _int(s.labels.get("compute_instance_id"), 0)))
        for s in infos:
            lab = s.labels
            g.mig_enabled = True
            # the framebuffer belongs to the GPU instance, shared by its compute instances (the exporter's
            # own help text); devices.py splits it between the compute instances selected
            g.migs[lab.get("mig_uuid") or f"{lab.get('gpu_instance_id')}/{lab.get('compute_instance_id')}"] = {
                "index": len(g.migs), "uuid": lab.get("mig_uuid") or None, "profile": lab.get("profile") or None,
                "gi": _int(lab.get("gpu_instance_id")), "ci": _int(lab.get("compute_instance_id")),
                "mem": dict(mem_by_gi.get(lab.get("gpu_instance_id"), {}))}


READERS = {"gpufit": _read_gpufit, "dcgm": _read_dcgm, "nvidia_smi": _read_nvidia_smi}


def _snapshot(node: str, source: str, n: _Node, at: float) -> Snapshot:
    gpus = []
    used_index: set = set()
    ordered = sorted(n.gpus.values(), key=lambda g: (g.index is None, g.index or 0, g.key))
    for g in ordered:
        index = g.index
        if index is None or index in used_index:
            index = max(used_index, default=-1) + 1
            n.notes.append(f"GPU {g.key}: no index of its own in the series; numbered {index}")
        used_index.add(index)
        mem = Memory(total=g.mem.get("total"), free=g.mem.get("free"), used=g.mem.get("used"),
                     reserved=g.mem.get("reserved"))
        if g.available and (mem.total is None or mem.free is None) and not g.migs:
            n.notes.append(f"GPU {g.key}: no usable free/total memory series; left out")
        migs = tuple(MigDevice(index=m["index"], uuid=m["uuid"], profile=m["profile"], gpu_instance_id=m["gi"],
                               compute_instance_id=m["ci"],
                               memory=Memory(total=m["mem"].get("total"), free=m["mem"].get("free")))
                     for m in sorted(g.migs.values(), key=lambda m: m["index"]))
        gpus.append(GpuState(
            index=index, name=g.name, uuid=g.uuid, pci_bus_id=g.pci_bus_id, pci_device_id=g.pci_device_id,
            memory=mem, mig=Mig(enabled=g.mig_enabled, devices=migs),
            nvlink=tuple(NvLink(link=i, up=True) for i in range(g.nvlink_up)),
            unified_memory=g.unified, available=g.available,
            errors={} if g.available else {"gpu": f"GPU {index} is reported lost or erroring (gpufit_gpu_available 0)"},
        ))
    taken = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    host = HostInfo(hostname=node, ram_total_bytes=n.host.get("ram_total"),
                    ram_available_bytes=n.host.get("ram_available"), driver_version=n.host.get("driver"),
                    taken_at=taken)
    return Snapshot(host=host, gpus=tuple(gpus), source=f"prometheus:{source}")


def build_views(source: str, series, ages, gone, by: str | None, max_age_s: float) -> list[NodeView]:
    """The nodes of one source from the answers to its `series`, `age` and `gone` queries (Samples of
    gpufit.fleet.query)."""
    nodes: dict[str, _Node] = {}
    READERS[source](series, by, nodes)
    at = max((s.at for s in (*series, *ages, *gone)), default=0.0)
    node_age: dict[str, float] = {}
    for s in ages:
        node = _node_of(s.labels, source, by)
        if node is not None and math.isfinite(s.value):
            node_age[node] = max(node_age.get(node, 0.0), s.value)
    went: dict[str, set] = {}
    for s in gone:
        node = _node_of(s.labels, source, by)
        if node is not None:
            u = norm_uuid(s.labels.get("UUID") or s.labels.get("uuid"))
            went.setdefault(node, set()).update({u} if u else set())
    views = []
    for node in sorted(set(nodes) | set(went)):
        n = nodes.get(node)
        uuids = set(went.get(node, set()))
        if n is not None:
            uuids |= {x for x in (norm_uuid(g.uuid) for g in n.gpus.values()) if x}
        age = node_age.get(node)
        report_at = n.host.get("report_at") if n else None
        report_old = report_at is not None and at - report_at > max_age_s
        if n is None or node in went or report_old or (age is not None and age > max_age_s):
            if report_old:
                why = f"its gpufit report is {at - report_at:.0f}s old, older than --max-age {max_age_s:g}s"
            else:
                why = (f"no sample of {FREE_METRIC[source]} newer than --max-age {max_age_s:g}s"
                       + (f" (its samples are {age:.0f}s old)" if age is not None and node not in went
                          else " (the target stopped answering)"))
            views.append(NodeView(node, source, None, stale=True, age_s=age, reason=why, uuids=uuids))
            continue
        snap = _snapshot(node, source, n, at)
        views.append(NodeView(node, source, snap, age_s=age, uuids=uuids, notes=list(n.notes)))
    return views


def merge_sources(views: list[NodeView]) -> tuple[list[NodeView], list[str]]:
    """A GPU several sources report is used once, from the source first in PRIORITY; the others lose it
    (a node left with no GPU is dropped: it is the same box). Returns the views and what was said."""
    said: list[str] = []
    owner: dict[str, NodeView] = {}
    for v in sorted(views, key=lambda v: (PRIORITY[v.source], v.node)):
        for u in v.uuids:
            owner.setdefault(u, v)
    out = []
    for v in views:
        # within one source a repeated UUID is not the same GPU (anonymised captures share one)
        taken = {u for u in v.uuids if owner[u].source != v.source}
        if not taken:
            out.append(v)
            continue
        for u in sorted(taken):
            o = owner[u]
            diff = _free_of(o, u), _free_of(v, u)
            words = ""
            if None not in diff and abs(diff[0] - diff[1]) > 2 * MIB:  # DCGM reports whole MiB
                words = (f": they disagree, {o.source} {diff[0] / 2**30:.2f} GiB free, {v.source} "
                         f"{diff[1] / 2**30:.2f} GiB")
            said.append(f"GPU {u} is reported by {o.source} (node {o.node}) and {v.source} (node {v.node}){words}; "
                        f"using {o.source} (order: {' > '.join(SOURCES)})")
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
