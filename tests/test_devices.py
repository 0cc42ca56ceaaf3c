"""Snapshot -> schedulable devices: MIG leaves, --gpus, CUDA_VISIBLE_DEVICES, lost GPUs, catalog specs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pynvml
import pytest
from fakenvml import FakeNvml

from gpufit.catalog import Catalog
from gpufit.app.devices import select_devices
from gpufit.estimator.types import devices_from_specs
from gpufit.errors import ProbeError, UsageError
from gpufit.probe import load_snapshot, take_snapshot

CAPTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
MIB = 2**20

# A small catalog written for these tests (figures from the NVIDIA datasheets), so the tests do not
# depend on the built-in gpus.toml while it is being written.
CATALOG_TOML = """
[[gpu]]
key = "v100s-pcie-32gb"
name = "NVIDIA Tesla V100S PCIe 32 GB"
vendor_class = "datacenter"
architecture = "Volta"
compute_capability = "7.0"
memory_bytes = 34089730048
memory_type = "HBM2"
bandwidth_gbps = 1134.0
fp16_tflops = 130.0
source = "NVIDIA V100S datasheet"
nvml_names = ["Tesla V100S-PCIE-32GB"]
pci_device_ids = ["1DF6"]

[[gpu]]
key = "h100-sxm5-80gb"
name = "NVIDIA H100 SXM5 80 GB"
vendor_class = "datacenter"
architecture = "Hopper"
compute_capability = "9.0"
memory_bytes = 85520809984
memory_type = "HBM3"
bandwidth_gbps = 3350.0
bf16_tflops = 989.0
nvlink_gbps = 900.0
mig = true
source = "NVIDIA H100 datasheet"
nvml_names = ["NVIDIA H100 80GB HBM3"]
pci_device_ids = ["2330"]

[[gpu]]
key = "h200-sxm-141gb"
name = "NVIDIA H200 SXM 141 GB"
vendor_class = "datacenter"
architecture = "Hopper"
compute_capability = "9.0"
memory_bytes = 150754820096
memory_type = "HBM3e"
bandwidth_gbps = 4800.0
bf16_tflops = 989.0
mig = true
source = "NVIDIA H200 datasheet"
pci_device_ids = ["2335"]

[[gpu]]
key = "rtx-a5000"
name = "NVIDIA RTX A5000"
vendor_class = "workstation"
architecture = "Ampere"
compute_capability = "8.6"
memory_bytes = 25757220864
memory_type = "GDDR6"
bandwidth_gbps = 768.0
nvlink_gbps = 112.5
source = "NVIDIA RTX A5000 datasheet"
nvml_names = ["NVIDIA RTX A5000"]
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    cat = Catalog()
    cat.add_file(Path("test-gpus.toml"), CATALOG_TOML)
    return cat


def snap(name):
    return load_snapshot(CAPTURES / name)


V100 = "GuanceCloud_datakit__gtx-8card.xml"
A5000 = "influxdata_telegraf__dual_a5000-v13.xml"
H100_MIG = "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-mig__590.48.01.txt"
H200_MIG = "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h200-mig__590.48.01.txt"
A100_MIG = "influxdata_telegraf__a100-sxm4-v12.xml"


def test_all_gpus_with_free_memory_and_catalog_spec(catalog):
    s = snap(V100)
    devs = select_devices(s, catalog, env={})
    assert [d.index for d in devs] == [str(i) for i in range(8)]
    assert devs[0].free_bytes == s.gpus[0].memory.free and devs[0].total_bytes == 32510 * MIB
    assert devs[0].free_bytes < devs[0].total_bytes  # free, not total
    assert devs[0].catalog_key == "v100s-pcie-32gb" and devs[0].bandwidth_gbps == 1134.0
    assert devs[0].bf16_tflops is None  # V100 has no BF16: None, not 0


def test_unmatched_gpu_has_no_spec(catalog):
    devs = select_devices(snap("influxdata_telegraf__tesla-t4.xml"), catalog, env={})
    assert devs[0].spec is None and devs[0].bandwidth_gbps is None


def test_mig_devices_are_the_schedulable_units(catalog):
    s = snap(H100_MIG)
    devs = select_devices(s, catalog, env={})
    assert [d.index for d in devs] == ["0/0", "0/1", "0/2", "0/3"]
    assert [d.mig_profile for d in devs] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert devs[0].total_bytes == 40448 * MIB and devs[0].free_bytes == 40423 * MIB
    assert devs[0].uuid == "MIG-00000000-0000-0000-0000-000000000000"
    # bandwidth: the card's scaled by the slice's share of memory (approximation, documented)
    assert devs[0].bandwidth_gbps == pytest.approx(3350.0 * 40448 * MIB / s.gpus[0].memory.total)
    assert not any(d.nvlink for d in devs)
    # the same through the live path (fake NVML fed from the capture)
    live = take_snapshot(lib=FakeNvml(s))
    assert [d.index for d in select_devices(live, catalog, env={})] == ["0/0", "0/1", "0/2", "0/3"]


def test_mig_compute_instances_sharing_a_gpu_instance_split_its_memory(catalog):
    s = snap(H200_MIG)
    devs = select_devices(s, catalog, env={})
    assert [d.mig_profile for d in devs] == ["1c.3g.71gb", "2c.3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb"]
    assert devs[0].total_bytes == devs[1].total_bytes == 71424 * MIB // 2
    assert devs[2].total_bytes == 33280 * MIB
    alone = select_devices(s, catalog, gpus="0/1", env={})
    assert alone[0].total_bytes == 71424 * MIB


def test_gpus_option_by_index_uuid_and_mig_uuid(catalog):
    s = snap(A5000)
    devs = select_devices(s, catalog, gpus="1", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert [d.index for d in devs] == ["1"]  # --gpus wins over the environment
    devs = select_devices(s, catalog, gpus=s.gpus[0].uuid.upper(), env={})
    assert [d.index for d in devs] == ["0"]
    m = snap(H100_MIG)
    devs = select_devices(m, catalog, gpus="MIG-00000002-0000-0000-0000-000000000002,0/0", env={})
    assert [d.index for d in devs] == ["0/2", "0/0"]
    assert [d.index for d in select_devices(m, catalog, gpus="0", env={})] == ["0/0", "0/1", "0/2", "0/3"]


def test_unknown_gpu_in_gpus_option_lists_valid_ones(catalog):
    with pytest.raises(UsageError, match=r"unknown GPU '7'.*valid: 0, GPU-.*1, GPU-") as e:
        select_devices(snap(A5000), catalog, gpus="0,7", env={})
    assert e.value.exit_code == 2


def test_cuda_visible_devices_with_indexes(catalog):
    devs = select_devices(snap(V100), catalog, env={"CUDA_VISIBLE_DEVICES": "5,2"})
    assert [d.index for d in devs] == ["5", "2"]
    # CUDA ignores an invalid entry and everything after it
    devs = select_devices(snap(V100), catalog, env={"CUDA_VISIBLE_DEVICES": "1,9,3"})
    assert [d.index for d in devs] == ["1"]


def test_cuda_visible_devices_with_uuids(catalog):
    s = snap(V100)
    uuid = s.gpus[6].uuid
    devs = select_devices(s, catalog, env={"CUDA_VISIBLE_DEVICES": uuid})
    assert [d.index for d in devs] == ["6"]
    devs = select_devices(s, catalog, env={"CUDA_VISIBLE_DEVICES": uuid[:16]})  # a unique prefix
    assert [d.index for d in devs] == ["6"]


def test_cuda_visible_devices_with_mig_uuid(catalog):
    devs = select_devices(snap(H100_MIG), catalog, env={"CUDA_VISIBLE_DEVICES": "MIG-00000001-0000-0000-0000-000000000001"})
    assert [(d.index, d.mig_profile) for d in devs] == [("0/1", "2g.20gb")]


@pytest.mark.parametrize("value", ["", "-1", "  "])
def test_cuda_visible_devices_empty_hides_every_gpu(catalog, value):
    with pytest.raises(ProbeError, match="CUDA_VISIBLE_DEVICES hides every GPU") as e:
        select_devices(snap(A5000), catalog, env={"CUDA_VISIBLE_DEVICES": value})
    assert e.value.exit_code == 5


def test_lost_gpu_is_not_used_but_the_others_are(catalog):
    live = take_snapshot(lib=FakeNvml(snap(V100), lost={2: pynvml.NVML_ERROR_GPU_IS_LOST}))
    devs = select_devices(live, catalog, env={})
    assert [d.index for d in devs] == ["0", "1", "3", "4", "5", "6", "7"]
    with pytest.raises(ProbeError, match="GPU is lost"):
        select_devices(live, catalog, gpus="2", env={})


def test_unified_memory_part_uses_host_available_ram(catalog):
    s = snap(A5000)
    g = dataclasses.replace(s.gpus[0], unified_memory=True)
    host = dataclasses.replace(s.host, ram_total_bytes=128 * 2**30, ram_available_bytes=100 * 2**30)
    devs = select_devices(dataclasses.replace(s, gpus=(g,), host=host), catalog, env={})
    assert devs[0].free_bytes == 100 * 2**30 and devs[0].total_bytes == 128 * 2**30


def test_nvlink_is_any_link_up(catalog):
    from gpufit.probe.snapshot import NvLink

    s = snap(A5000)
    g0 = dataclasses.replace(s.gpus[0], nvlink=(NvLink(0, False), NvLink(1, True)))
    devs = select_devices(dataclasses.replace(s, gpus=(g0, s.gpus[1])), catalog, env={})
    assert devs[0].nvlink is True and devs[1].nvlink is False


def test_devices_from_specs(catalog):
    devs = devices_from_specs([(catalog.gpu("h100-sxm5-80gb"), 2), (catalog.gpu("v100s-pcie-32gb"), 1)])
    assert [d.index for d in devs] == ["0", "1", "2"]
    assert devs[0].free_bytes == devs[0].total_bytes == 85520809984
    assert devs[0].nvlink is True and devs[2].nvlink is False
    assert devs[2].catalog_key == "v100s-pcie-32gb"


def test_the_ecc_mode_the_driver_reports_reaches_each_unit(catalog):
    """ECC on GDDR memory takes bandwidth (speed.ecc_bandwidth_share), so each unit carries the mode
    the capture gives: on for the L40S and A10G captures, on for every MIG device of the A100."""
    for name in ("utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-l40s__595.80.txt",
                 "influxdata_telegraf__a10g.xml", "influxdata_telegraf__a100-sxm4-v12.xml"):
        units = select_devices(load_snapshot(CAPTURES / name), catalog)
        assert units and all(u.ecc is True for u in units), name
    assert all(u.ecc is None for u in devices_from_specs([(catalog.gpus["v100s-pcie-32gb"], 2)]))
