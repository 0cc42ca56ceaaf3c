"""Shared by the report / health / prometheus / node_exporter tests: hand-built GPUs and the real captures.

Captures are the `nvidia-smi -q -x` files in tests/fixtures/nvidia-smi (origins in its SOURCES.md), read with
gpufit.probe.load_snapshot, the same reader `gpufit report --snapshot FILE` uses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gpufit.probe.snapshot import (
    Clocks, Ecc, EccCounts, GpuState, HostInfo, Memory, Pcie, Process, Snapshot, Utilization,
)

GiB = 2**30
CAPTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "nvidia-smi"
CAPTURES = sorted(CAPTURE_DIR.glob("*.xml"))
assert len(CAPTURES) >= 20, f"the nvidia-smi -q -x captures are missing from {CAPTURE_DIR}"


def capture_params():
    """pytest params over every `nvidia-smi -q -x` capture in tests/fixtures/nvidia-smi."""
    return [pytest.param(p, id=p.stem) for p in CAPTURES]


def load_capture(path) -> Snapshot:
    from gpufit.probe import load_snapshot

    return load_snapshot(path)


def healthy_gpu(index: int = 0, **changes) -> GpuState:
    """An idle, healthy 24 GiB card with every value supported."""
    g = GpuState(
        index=index,
        name="NVIDIA GeForce RTX 3090",
        uuid=f"GPU-00000000-0000-0000-0000-00000000000{index}",
        pci_bus_id=f"00000000:0{index + 1}:00.0",
        pci_device_id="0x220410DE",
        memory=Memory(total=24 * GiB, free=23 * GiB, used=1 * GiB, reserved=0),
        clocks_mhz=Clocks(sm=1695, mem=9751, sm_max=2100, mem_max=9751),
        temperature_c=45,
        power_w=120.0,
        power_limit_w=350.0,
        utilization=Utilization(gpu=3, memory=1),
        compute_capability="8.6",
        pcie=Pcie(gen=4, width=16, gen_max=4, width_max=16),
        processes=(Process(pid=4242, name="python3", used_bytes=GiB),),
        ecc=Ecc(enabled=True, volatile=EccCounts(0, 0), aggregate=EccCounts(0, 0),
                remapped_rows_correctable=0, remapped_rows_uncorrectable=0,
                remapped_rows_pending=False, remapped_rows_failure=False),
        fan_percent=30,
        performance_state="P8",
    )
    return dataclasses.replace(g, **changes)


def unsupported_gpu(index: int = 0) -> GpuState:
    """A card where NVML supports almost nothing: every optional value None."""
    return GpuState(index=index, name="GRID T4-1Q", uuid=f"GPU-ffffffff-0000-0000-0000-00000000000{index}",
                    memory=Memory(total=GiB, free=GiB // 2, used=GiB // 2),
                    errors={"temperature_c": "Not Supported", "power_w": "Not Supported"})


def host(**changes) -> HostInfo:
    h = HostInfo(hostname="gpu-box-1", os="Linux", cpu_count=32, ram_total_bytes=128 * GiB,
                 ram_available_bytes=100 * GiB, driver_version="550.54.14", cuda_driver_version="12.4",
                 nvml_version="12.550.54.14", taken_at="2024-05-01T12:00:00Z")
    return dataclasses.replace(h, **changes)


def snapshot(*gpus, **host_changes) -> Snapshot:
    return Snapshot(host=host(**host_changes), gpus=tuple(gpus) or (healthy_gpu(),), source="test")
