"""nvidia-smi captures (XML, --query-gpu CSV, capture bundles) -> Snapshot, on every real capture we hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpufit.catalog import load_catalog
from gpufit.errors import ExitCode, SnapshotError
from gpufit.probe import load_snapshot, save_snapshot
from gpufit.render.probe import snapshot_table

CAPTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
ALL = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".xml", ".txt"))
MIB = 2**20


def cap(name: str) -> Path:
    return CAPTURES / name


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_every_capture_parses(path, tmp_path):
    snap = load_snapshot(path)
    assert snap.gpus, f"{path.name}: no GPU read"
    for g in snap.gpus:
        assert g.name, f"{path.name}: GPU {g.index} has no name"
        assert g.available
        # absent values are None with a reason, never 0 / -1 / "N/A"
        for key, why in g.errors.items():
            assert isinstance(why, str) and why, key
        if g.memory.total is not None:
            assert g.memory.total > 0
            assert g.memory.free is not None and 0 <= g.memory.free <= g.memory.total
        assert isinstance(g.compute_capability, (str, type(None)))
    if path.suffix == ".xml":
        assert snap.source == f"nvidia-smi-xml:{path}"
        assert all(g.memory.total for g in snap.gpus)
    # it round-trips through the JSON contract unchanged
    out = tmp_path / "snap.json"
    save_snapshot(snap, out)
    again = load_snapshot(out)
    assert again.gpus == snap.gpus and again.host == snap.host
    # and it renders
    text = snapshot_table(snap, load_catalog())
    assert f"GPU {snap.gpus[0].index}" in text and "GiB" in text


def test_v12_mig_capture_reads_mig_devices_and_ecc():
    snap = load_snapshot(cap("influxdata_telegraf__a100-sxm4-v12.xml"))
    (g,) = snap.gpus
    assert g.name == "NVIDIA A100-SXM4-80GB"
    assert g.pci_device_id == "0x20B210DE"
    assert g.memory.total == 81920 * MIB and g.memory.reserved == 869 * MIB and g.memory.free == 80999 * MIB
    assert g.mig.enabled is True
    assert [m.gpu_instance_id for m in g.mig.devices] == [3, 4, 5, 6]
    assert all(m.memory.total == 19968 * MIB and m.multiprocessor_count == 14 for m in g.mig.devices)
    assert g.power_w == pytest.approx(67.03) and g.power_limit_w == 500.0
    assert g.ecc.enabled is True and g.ecc.volatile.corrected == 0 and g.ecc.aggregate.uncorrected == 0
    assert g.clocks_mhz.sm == 1275 and g.clocks_mhz.sm_max == 1410
    assert g.pcie.gen == 4 and g.pcie.width_max == 16
    assert g.compute_capability is None and "compute_capability" in g.errors
    assert g.utilization.gpu is None and "N/A" in g.errors["utilization.gpu"]
    assert snap.host.driver_version == "535.54.03" and snap.host.cuda_driver_version == "12.2"


def test_v11_tesla_ecc_totals_processes_and_power_readings():
    snap = load_snapshot(cap("GuanceCloud_datakit__gtx-8card.xml"))
    assert len(snap.gpus) == 8
    assert [g.index for g in snap.gpus] == list(range(8))
    g = snap.gpus[0]
    assert g.name == "Tesla V100S-PCIE-32GB" and g.memory.total == 32510 * MIB
    assert g.ecc.enabled is True and g.ecc.volatile.corrected == 0 and g.ecc.retired_pages_single == 0
    assert g.power_limit_w == 250.0
    assert g.processes and g.processes[0].kind == "compute" and g.processes[0].used_bytes == 31683 * MIB
    assert g.memory.reserved is None and "memory.reserved" in g.errors  # v11 has no <reserved>


def test_v13_power_average_and_split_sram_counters():
    snap = load_snapshot(cap("influxdata_telegraf__dual_a5000-v13.xml"))
    g0, g1 = snap.gpus
    assert g0.power_w == pytest.approx(6.41)  # average_power_draw
    assert g0.pci_bus_id == "00000000:81:00.0" and g1.pci_bus_id == "00000000:C1:00.0"
    assert g0.ecc.enabled is False and g0.ecc.remapped_rows_correctable == 0
    assert g0.throttle_reasons == ("gpu_idle",)
    assert g0.processes[0].name.endswith("llama-server")
    snap = load_snapshot(cap("influxdata_telegraf__dual_2070-v13.xml"))
    assert snap.gpus[0].power_w == pytest.approx(9.23)  # average N/A -> instant


def test_redacted_and_virtual_captures_keep_going():
    g = load_snapshot(cap("influxdata_telegraf__rtx-3090-v12.xml")).gpus[0]
    assert g.pci_device_id is None and "REDACTED" in g.errors["pci_device_id"]
    g = load_snapshot(cap("influxdata_telegraf__tesla_p4.xml")).gpus[0]
    assert g.name == "GRID P4-1Q" and g.memory.total == 1024 * MIB
    assert g.processes and all(p.used_bytes is None for p in g.processes)
    g = load_snapshot(cap("influxdata_telegraf__gtx-1070-ti.xml")).gpus[0]  # v10, minimal
    assert g.pcie.width == 16 and g.pcie.gen_max is None and g.fan_percent == 100


def test_bundle_mig_capture_has_profiles_and_uuids():
    snap = load_snapshot(cap("utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-mig__590.48.01.txt"))
    (g,) = snap.gpus
    assert snap.source.startswith("nvidia-smi-bundle:")
    assert g.compute_capability == "9.0" and g.pci_device_id == "0x233010DE"
    assert g.mig.enabled is True
    assert [m.profile for m in g.mig.devices] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert g.mig.devices[0].uuid.startswith("MIG-") and g.mig.devices[0].memory.total == 40448 * MIB
    assert snap.host.cuda_driver_version == "13.1" and snap.host.nvml_version == "590.48"


def test_bundle_from_driver_610_reads_cuda_umd_version():
    snap = load_snapshot(cap("utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.txt"))
    assert snap.host.cuda_driver_version == "13.3"
    assert snap.gpus[0].memory.total == 8192 * MIB


def test_bare_query_csv():
    snap = load_snapshot(cap("utkuozdemir_nvidia_gpu_exporter__exporter_testdata_query.txt"))
    assert [g.name for g in snap.gpus] == ["NVIDIA GeForce RTX 2080 SUPER", "Some Other GPU"]
    assert snap.gpus[0].memory.used == 575 * MIB and snap.gpus[0].memory.total is None
    assert snap.gpus[0].fan_percent == 38 and snap.gpus[1].compute_capability == "8.6"


def test_garbage_file_is_a_snapshot_error_with_exit_6(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a GPU snapshot\n")
    with pytest.raises(SnapshotError) as e:
        load_snapshot(bad)
    assert e.value.exit_code == ExitCode.BAD_DATA == 6
    assert str(bad) in str(e.value) and "neither a gpufit snapshot nor nvidia-smi -q -x output" in str(e.value)


def test_invalid_xml_names_the_file(tmp_path):
    bad = tmp_path / "cut.xml"
    bad.write_text("<?xml version='1.0'?>\n<nvidia_smi_log><gpu id='x'><product_name>A</gpu>")
    with pytest.raises(SnapshotError, match=r"cut\.xml: not valid XML"):
        load_snapshot(bad)
    other = tmp_path / "other.xml"
    other.write_text("<?xml version='1.0'?>\n<html><body/></html>")
    with pytest.raises(SnapshotError, match=r"other\.xml: .*<html>"):
        load_snapshot(other)


def test_snapshot_json_with_a_bad_field_names_the_key(tmp_path):
    snap = load_snapshot(cap("influxdata_telegraf__tesla-t4.xml"))
    d = snap.to_dict()
    d["gpus"][0]["memory"]["free"] = "lots"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(SnapshotError, match=r"gpus\[0\]\.memory\.free"):
        load_snapshot(p)
    p.write_text("{ not json")
    with pytest.raises(SnapshotError, match="invalid JSON"):
        load_snapshot(p)


def test_captures_match_the_catalog_where_the_card_is_in_it():
    cat = load_catalog()
    if not cat.gpus:
        pytest.skip("the GPU catalog (gpus.toml) is not there yet")
    matched = {}
    for path in ALL:
        for g in load_snapshot(path).gpus:
            spec = cat.match_gpu(g.name, g.pci_device_id)
            matched[(path.name, g.name)] = spec.key if spec else None
    # cards any reasonable catalog holds must match
    for name in ("Tesla V100S-PCIE-32GB", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 3090", "NVIDIA H100 80GB HBM3",
                 "Tesla T4"):
        hits = {k for (f, n), k in matched.items() if n == name}
        assert hits and None not in hits, f"{name} does not match the catalog: {hits}"
