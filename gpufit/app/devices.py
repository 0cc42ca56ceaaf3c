"""From a Snapshot (or catalog specs) to the schedulable units the estimator places a model on.

A unit is a whole GPU, or — when MIG is enabled on it — each of its MIG devices. Selection honours
`--gpus` (indexes "0", MIG indexes "0/1", GPU UUIDs, MIG UUIDs), else CUDA_VISIBLE_DEVICES, else every
available unit. Memory is what is *free* now (NVML free); unified-memory parts use the host's available RAM.

Approximations, stated: a MIG device's bandwidth and BF16 throughput are the card's scaled by its share of
the card's memory (slice memory / card memory); MIG compute instances that share one GPU instance share its
memory and bandwidth, so each selected one gets an equal part of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..catalog import Catalog
from ..catalog.types import GpuSpec
from ..errors import ProbeError, UsageError, did_you_mean_hint
from ..estimator.types import Device
from ..probe.snapshot import GpuState, Snapshot


@dataclass(frozen=True)
class _Unit:
    device: Device
    gpu_index: int
    names: tuple[str, ...]  # every string that selects this unit: index, "G/M", UUID
    group: tuple[int, int] | None = None  # (gpu index, GPU instance id) for MIG devices
    ci: int | None = None  # compute instance id for MIG devices


def _gpu_unit(g: GpuState, snap: Snapshot, spec: GpuSpec | None) -> _Unit | None:
    total, free = g.memory.total, g.memory.free
    if g.unified_memory and snap.host.ram_available_bytes is not None:
        total = snap.host.ram_total_bytes or total
        free = snap.host.ram_available_bytes
    if not total or free is None:  # unknown, or 0 bytes: nothing can be placed on it
        return None
    dev = Device(
        index=str(g.index),
        name=g.name or f"GPU {g.index}",
        total_bytes=int(total),
        free_bytes=int(free),
        uuid=g.uuid,
        spec=spec,
        bandwidth_gbps=spec.bandwidth_gbps if spec else None,
        bf16_tflops=spec.bf16_tflops if spec else None,
        nvlink=any(link.up for link in g.nvlink),
        reserved_bytes=None if g.unified_memory else (int(g.memory.reserved) if g.memory.reserved is not None else None),
        ecc=g.ecc.enabled,
    )
    return _Unit(dev, g.index, tuple(n for n in (str(g.index), g.uuid) if n))


def _mig_units(g: GpuState, spec: GpuSpec | None) -> list[_Unit]:
    units = []
    card_total = g.memory.total
    for m in g.mig.devices:
        total, free = m.memory.total, m.memory.free
        if not total or free is None:
            continue
        share = total / card_total if card_total else None
        index = f"{g.index}/{m.index}"
        dev = Device(
            index=index,
            name=f"{g.name or 'GPU'} MIG {m.profile}" if m.profile else f"{g.name or 'GPU'} MIG {index}",
            total_bytes=int(total),
            free_bytes=int(free),
            uuid=m.uuid,
            spec=spec,
            bandwidth_gbps=spec.bandwidth_gbps * share if spec and share else None,
            bf16_tflops=spec.bf16_tflops * share if spec and spec.bf16_tflops and share else None,
            nvlink=False,  # NVLink is not available to MIG devices
            mig_profile=m.profile,
            parent=g.uuid or str(g.index),
            ecc=g.ecc.enabled,
        )
        group = (g.index, m.gpu_instance_id) if m.gpu_instance_id is not None else None
        units.append(_Unit(dev, g.index, tuple(n for n in (index, m.uuid) if n), group, m.compute_instance_id))
    return units


def _label(g: GpuState) -> str:
    return f"GPU {g.index} ({g.name})" if g.name else f"GPU {g.index}"


def _why_unusable(g: GpuState) -> str:
    """Why a GPU the snapshot lists yields no unit: the memory figure that is missing, and why it is."""
    if g.mig.enabled:
        return "MIG is on but no MIG device has known memory" + (
            f" ({g.errors['mig.devices']})" if "mig.devices" in g.errors else "")
    for key, what in (("total", "total memory"), ("free", "free memory")):
        if getattr(g.memory, key) is None:
            why = g.errors.get(f"memory.{key}") or g.errors.get("memory")
            return f"{what} unknown" + (f" ({why})" if why else "")
    if not g.memory.total:
        return "reports 0 bytes of memory"
    return "memory unknown"  # pragma: no cover - unified memory without host RAM is caught above


def _all_units(snapshot: Snapshot, catalog: Catalog) -> tuple[list[_Unit], dict[int, str]]:
    """The schedulable units, and {gpu index: why it gives none} for every GPU left out."""
    units: list[_Unit] = []
    left_out: dict[int, str] = {}
    for g in snapshot.gpus:
        if not g.available:
            left_out[g.index] = g.errors.get("gpu", "lost or erroring")
            continue
        spec = catalog.match_gpu(g.name, g.pci_device_id, g.memory.total)
        found = _mig_units(g, spec) if g.mig.enabled else [u for u in (_gpu_unit(g, snapshot, spec),) if u]
        if not found:
            if g.unified_memory and snapshot.host.ram_available_bytes is None:
                left_out[g.index] = "unified-memory GPU and the snapshot does not say how much host RAM is free"
            else:
                left_out[g.index] = _why_unusable(g)
        units.extend(found)
    return units, left_out


def _index(token: str) -> int | None:
    """A GPU index as CUDA and nvidia-smi write it: ASCII digits only ('²' is no index)."""
    return int(token) if re.fullmatch(r"[0-9]{1,9}", token) else None


def _lookup(token: str, units: list[_Unit], gpu_uuids: dict[str, int]) -> list[_Unit] | None:
    """The units `token` names: a unit's own name, or a whole GPU (its index / UUID -> its MIG devices)."""
    t = token.strip()
    low = t.lower()
    hit = [u for u in units if any(n.lower() == low for n in u.names)]
    if hit:
        return hit
    gi = _index(t) if _index(t) is not None else gpu_uuids.get(low)
    if gi is not None:
        hit = [u for u in units if u.gpu_index == gi]
        return hit or None
    legacy = re.fullmatch(r"mig-(gpu-[0-9a-f-]+)/(\d+)/(\d+)", low)  # CUDA 11.0-era MIG-GPU-<uuid>/gi/ci
    if legacy:
        gi_index = gpu_uuids.get(legacy.group(1))
        ids = (int(legacy.group(2)), int(legacy.group(3)))
        hit = [u for u in units if u.gpu_index == gi_index and u.group and (u.group[1], u.ci) == ids]
        return hit or None
    if low.startswith(("gpu-", "mig-")) and len(low) > 4:  # CUDA accepts a unique UUID prefix
        gis = {v for k, v in gpu_uuids.items() if k.startswith(low)}
        if len(gis) == 1:
            return [u for u in units if u.gpu_index in gis] or None
        migs = [u for u in units if u.group is not None and (u.device.uuid or "").lower().startswith(low)]
        if len(migs) == 1:
            return migs
    return None


def _split_shared_instances(units: list[_Unit]) -> tuple[Device, ...]:
    """MIG compute instances of one GPU instance share its memory: give each selected one an equal part."""
    counts: dict[tuple[int, int], int] = {}
    for u in units:
        if u.group is not None:
            counts[u.group] = counts.get(u.group, 0) + 1
    out: list[Device] = []
    for u in units:
        n = counts.get(u.group, 1) if u.group is not None else 1
        d = u.device
        if n > 1:
            d = replace(d, total_bytes=d.total_bytes // n, free_bytes=d.free_bytes // n,
                        bandwidth_gbps=d.bandwidth_gbps / n if d.bandwidth_gbps else d.bandwidth_gbps,
                        bf16_tflops=d.bf16_tflops / n if d.bf16_tflops else d.bf16_tflops)
        out.append(d)
    return tuple(out)


@dataclass(frozen=True)
class Selection:
    """The units chosen and what chose them: `notes` say which filter applied and which GPU was left
    out and why, for the result's "Assumed:" list."""
    devices: tuple[Device, ...]
    notes: tuple[str, ...] = ()


def select_devices(snapshot: Snapshot, catalog: Catalog, gpus: str | None = None,
                   env: Mapping[str, str] = os.environ) -> tuple[Device, ...]:
    """The units to place a model on (see `select_devices_noted`)."""
    return select_devices_noted(snapshot, catalog, gpus, env).devices


def select_devices_noted(snapshot: Snapshot, catalog: Catalog, gpus: str | None = None,
                         env: Mapping[str, str] = os.environ) -> Selection:
    """The units to place a model on. `gpus` is the --gpus value; without it CUDA_VISIBLE_DEVICES in `env`
    applies (CUDA's rules: indexes or UUID (prefixes), MIG UUIDs, entries after an unknown one ignored;
    indexes are taken in PCI bus order, as nvidia-smi and NVML number GPUs — set CUDA_DEVICE_ORDER=PCI_BUS_ID
    so CUDA agrees). Callers pass an empty `env` for a snapshot of another box: this shell's
    CUDA_VISIBLE_DEVICES says nothing about it. A lost or unusable GPU is never used; naming it explicitly
    is a ProbeError saying why; `--gpus` naming nothing (',,,') is a UsageError."""
    units, left_out = _all_units(snapshot, catalog)
    by_index = {g.index: g for g in snapshot.gpus}
    gpu_uuids = {g.uuid.lower(): g.index for g in snapshot.gpus if g.uuid}
    notes: list[str] = []
    if gpus is not None:
        tokens = [t.strip() for t in gpus.split(",") if t.strip()]
        if not tokens:
            raise UsageError(f"--gpus {gpus!r} names no GPU; give indexes or UUIDs, e.g. --gpus 0,1")
        chosen: list[_Unit] = []
        for token in tokens:
            _refuse_unusable(token, left_out, by_index, gpu_uuids)
            hit = _lookup(token, units, gpu_uuids)
            if hit is None:
                valid = [n for u in units for n in u.names]
                raise UsageError(f"unknown GPU {token!r} in --gpus{did_you_mean_hint(token, valid)} "
                                 f"(valid: {', '.join(valid) or 'none'})")
            chosen.extend(u for u in hit if u not in chosen)
        notes.append(f"GPUs {', '.join(u.device.index for u in chosen)} of this box's "
                     f"{len(snapshot.gpus)}: --gpus {gpus}")
    elif "CUDA_VISIBLE_DEVICES" in env:
        value = env["CUDA_VISIBLE_DEVICES"].strip()
        chosen = []
        for token in (t.strip() for t in value.split(",")):
            hit = _lookup(token, units, gpu_uuids) if token and token != "-1" else None
            if hit is None:
                break  # CUDA ignores an invalid entry and everything after it
            chosen.extend(u for u in hit if u not in chosen)
        if not chosen:
            raise ProbeError(
                f"CUDA_VISIBLE_DEVICES hides every GPU (it is {value!r}); unset it or name a GPU index or UUID"
            )
        notes.append(f"GPUs {', '.join(u.device.index for u in chosen)} of {len(snapshot.gpus)}: "
                     f"CUDA_VISIBLE_DEVICES={value} (this shell's; --gpus overrides it)")
    else:
        chosen = units
    for i, why in left_out.items():
        notes.append(f"{_label(by_index[i])} left out: {why}")
    for g in snapshot.gpus:  # single MIG devices without memory figures, on a GPU that has others
        if g.available and g.mig.enabled and g.index not in left_out:
            for m in g.mig.devices:
                if not m.memory.total or m.memory.free is None:
                    notes.append(f"MIG device {g.index}/{m.index} of {_label(g)} left out: its memory is unknown")
    if not chosen:
        why = "; ".join(f"{_label(by_index[i])}: {w}" for i, w in left_out.items())
        raise ProbeError("no usable GPU in this snapshot" + (f": {why}" if why else ""))
    return Selection(_split_shared_instances(chosen), tuple(notes))


def _refuse_unusable(token: str, left_out: dict[int, str], by_index: dict[int, GpuState],
                     gpu_uuids: dict[str, int]) -> None:
    """ProbeError when `token` names a GPU that was left out (lost, unusable), saying why."""
    low = token.strip().lower()
    gi = _index(low) if _index(low) is not None else gpu_uuids.get(low)
    if gi is not None and gi in left_out:
        raise ProbeError(f"GPU {token!r} in --gpus cannot be used: {_label(by_index[gi])}: {left_out[gi]}")
