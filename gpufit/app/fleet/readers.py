"""Each source's series -> per-node GPU records -> a Snapshot per node (the probe's frozen dataclasses).

The metric and label names of each source, and where they are documented, are in sources.py's docstring.
A memory value that is NaN, infinite or negative is left out with a note; what is missing stays None, as
the probe leaves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypedDict, overload

from ...probe.snapshot import Ecc, GpuState, HostInfo, Memory, Mig, MigDevice, NvLink, Snapshot
from ...units import MIB

if TYPE_CHECKING:
    from .query import Sample

# the label that names a node when --by is not given, tried in order on each series
DEFAULT_BY = {"gpufit": ("instance",), "dcgm": ("Hostname", "hostname", "instance"), "nvidia_smi": ("instance",)}


def node_of(labels: Mapping[str, str], source: str, by: str | None) -> str | None:
    for name in ((by,) if by else DEFAULT_BY[source]):
        v = labels.get(name)
        if v:
            return v
    return None


def _bytes(value: float, scale: int, what: str, notes: list[str]) -> int | None:
    """A memory reading in bytes; NaN, infinite or negative values are left out with a note."""
    if math.isnan(value) or math.isinf(value) or value < 0:
        notes.append(f"{what} is {value:g}: left out")
        return None
    return int(round(value * scale))


@overload
def _int(v: str | None) -> int | None: ...
@overload
def _int(v: str | None, default: int) -> int: ...
@overload
def _int(v: str | None, default: int | None) -> int | None: ...
def _int(v: str | None, default: int | None = None) -> int | None:
    """A label value as an integer; `default` when it is missing or not one."""
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        return default


Mem = dict[str, int | None]  # total/free/used/reserved -> bytes (None: the reading was left out)


class _MigRec(TypedDict):
    """One MIG device as the series show it, until snapshot_of makes it a MigDevice."""
    index: int
    uuid: str | None
    profile: str | None
    gi: int | None
    ci: int | None
    mem: Mem


class _Slice(TypedDict):
    """A DCGM MIG instance: its series carry no index, UUID or compute instance."""
    profile: str | None
    gi: int | None
    mem: Mem


class _Host(TypedDict, total=False):
    ram_total: int | None
    ram_available: int | None
    report_at: float  # gpufit_report_timestamp_seconds, when finite
    driver: str | None


@dataclass
class _Gpu:
    key: str
    index: int | None = None
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    pci_device_id: str | None = None
    mem: Mem = field(default_factory=dict)  # total/free/used/reserved -> bytes
    available: bool = True
    mig_enabled: bool | None = None
    nvlink_up: int = 0
    unified: bool = False
    ecc: bool | None = None  # ECC mode (in-band ECC on GDDR costs bandwidth: speed.ecc_bandwidth_share)
    migs: dict[str, _MigRec] = field(default_factory=dict)  # key -> {index, uuid, profile, gi, ci, mem}


@dataclass
class _Node:
    gpus: dict[str, _Gpu] = field(default_factory=dict)
    host: _Host = field(default_factory=lambda: _Host())
    ages: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def gpu(self, key: str) -> _Gpu:
        if key not in self.gpus:
            self.gpus[key] = _Gpu(key)
        return self.gpus[key]


Nodes = dict[str, _Node]


def _read_gpufit(samples: Sequence[Sample], by: str | None, nodes: Nodes) -> None:
    migs: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        lab, name = s.labels, s.labels.get("__name__", "")
        node = node_of(lab, "gpufit", by)
        if node is None:
            continue
        n = nodes.setdefault(node, _Node())
        if name.startswith("gpufit_host_memory_"):
            if "total" in name:
                n.host["ram_total"] = _bytes(s.value, 1, "host memory total", n.notes)
            else:
                n.host["ram_available"] = _bytes(s.value, 1, "host memory available", n.notes)
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
        elif name == "gpufit_gpu_ecc_enabled":
            g.ecc = s.value == 1 if math.isfinite(s.value) else None
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
        parent = n.gpus.get(info.labels.get("parent_uuid", ""))  # no GPU is keyed ""
        if parent is None:
            continue
        lab = info.labels
        m: _MigRec = {"index": _int(lab.get("index", "").split("/")[-1], len(parent.migs)),
                      "uuid": None if "/mig/" in mig_uuid else mig_uuid, "profile": lab.get("profile") or None,
                      "gi": _int(lab.get("gpu_instance_id")), "ci": _int(lab.get("compute_instance_id")),
                      "mem": {}}
        for s in ss:
            nm = s.labels.get("__name__", "")
            if nm.startswith("gpufit_mig_memory_"):
                kind = nm[len("gpufit_mig_memory_"):-len("_bytes")]
                m["mem"][kind] = _bytes(s.value, 1, f"MIG device {mig_uuid} memory {kind}", n.notes)
        parent.migs[mig_uuid] = m


def _read_dcgm(samples: Sequence[Sample], by: str | None, nodes: Nodes) -> None:
    kinds = {"DCGM_FI_DEV_FB_FREE": "free", "DCGM_FI_DEV_FB_USED": "used", "DCGM_FI_DEV_FB_RESERVED": "reserved"}
    slices: dict[tuple[str, str, str], _Slice] = {}
    for s in samples:
        lab = s.labels
        kind = kinds.get(lab.get("__name__", ""))
        node = node_of(lab, "dcgm", by)
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
        free, used = mem.get("free"), mem.get("used")
        total = None if free is None or used is None else free + used + (mem.get("reserved") or 0)
        g.migs[gi] = {"index": len(g.migs), "uuid": None, "profile": m["profile"], "gi": m["gi"], "ci": None,
                      "mem": {"free": mem.get("free"), "total": total}}
    for node, n in nodes.items():
        for g in n.gpus.values():
            mem = g.mem
            free, used = mem.get("free"), mem.get("used")
            if "total" not in mem and free is not None and used is not None:
                # DCGM has no total in its default counters: NVML's total = free + used + reserved
                mem["total"] = free + used + (mem.get("reserved") or 0)
            if g.migs and mem.get("total") is None:
                tot = [t for mig in g.migs.values() if (t := mig["mem"]["total"]) is not None]
                if len(tot) == len(g.migs):
                    mem["total"] = sum(tot)  # the card's memory, as far as its MIG instances show it
                    n.notes.append(f"GPU {g.key}: no whole-GPU series; its total is the sum of its MIG instances")


def _read_nvidia_smi(samples: Sequence[Sample], by: str | None, nodes: Nodes) -> None:
    migs: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        lab, name = s.labels, s.labels.get("__name__", "")
        node = node_of(lab, "nvidia_smi", by)
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
        parent = nodes[node].gpus.get(u)
        if parent is None:
            continue
        mem_by_gi: dict[str | None, Mem] = {}
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
            parent.mig_enabled = True
            # the framebuffer belongs to the GPU instance, shared by its compute instances (the exporter's
            # own help text); devices.py splits it between the compute instances selected
            parent.migs[lab.get("mig_uuid") or f"{lab.get('gpu_instance_id')}/{lab.get('compute_instance_id')}"] = {
                "index": len(parent.migs), "uuid": lab.get("mig_uuid") or None, "profile": lab.get("profile") or None,
                "gi": _int(lab.get("gpu_instance_id")), "ci": _int(lab.get("compute_instance_id")),
                "mem": dict(mem_by_gi.get(lab.get("gpu_instance_id"), {}))}


READERS: dict[str, Callable[[Sequence[Sample], str | None, Nodes], None]] = {
    "gpufit": _read_gpufit, "dcgm": _read_dcgm, "nvidia_smi": _read_nvidia_smi}


def snapshot_of(node: str, source: str, n: _Node, at: float) -> Snapshot:
    gpus: list[GpuState] = []
    used_index: set[int] = set()
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
            unified_memory=g.unified, available=g.available, ecc=Ecc(enabled=g.ecc),
            errors={} if g.available else {"gpu": f"GPU {index} is reported lost or erroring (gpufit_gpu_available 0)"},
        ))
    taken = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    host = HostInfo(hostname=node, ram_total_bytes=n.host.get("ram_total"),
                    ram_available_bytes=n.host.get("ram_available"), driver_version=n.host.get("driver"),
                    taken_at=taken)
    return Snapshot(host=host, gpus=tuple(gpus), source=f"prometheus:{source}")
