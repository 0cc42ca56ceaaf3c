"""Capture defects of issue 11, each test named after the failure it covers.

Inputs are the real captures in tests/fixtures/nvidia-smi (the lost-GPU and "Not Found" variants are made
from them here, by the edit the test names) and one hand-written CSV in tests/fixtures/handwritten.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from gpufit.cli import cli
from gpufit.probe import load_snapshot

FIX = Path(__file__).parent / "fixtures"
P100_CSV = FIX / "handwritten" / "p100-no-memory-total.csv"
DUAL_A5000 = FIX / "nvidia-smi" / "influxdata_telegraf__dual_a5000-v13.xml"
V100S_8 = FIX / "nvidia-smi" / "GuanceCloud_datakit__gtx-8card.xml"
MIB = 2**20


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env)


def fit(*args, env=None):
    r = run(*args, "--json", env=env)
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    return r, json.loads(r.stdout)


def without_column(src: Path, column: str, dst: Path) -> Path:
    lines = src.read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    drop = next(i for i, h in enumerate(header) if h.split(" [")[0] == column)
    dst.write_text("\n".join(", ".join(c.strip() for j, c in enumerate(ln.split(",")) if j != drop)
                             for ln in lines) + "\n")
    return dst


def lost_second_gpu(tmp_path) -> Path:
    """dual_a5000 with "GPU is lost" in every field of its second GPU, as nvidia-smi prints a GPU that
    fell off the bus."""
    tree = ET.parse(DUAL_A5000)
    gpu = tree.getroot().findall("gpu")[1]
    for el in gpu.iter():
        if el.text and el.text.strip():
            el.text = "GPU is lost"
    out = tmp_path / "lost.xml"
    tree.write(out)
    return out


# ---- memory.total missing from a CSV capture (a P100) -----------------------------------------------


def test_csv_without_memory_total_derives_it_from_free_used_reserved():
    s = load_snapshot(P100_CSV)
    assert [g.memory.total for g in s.gpus] == [16384 * MIB, 16384 * MIB]  # 16119+2+263, 9970+6151+263
    assert [g.memory.free for g in s.gpus] == [16119 * MIB, 9970 * MIB]
    assert all("memory.total" not in g.errors for g in s.gpus)
    r, d = fit("here", "llama3-8b", "--quant", "int4", "--snapshot", str(P100_CSV))
    assert {x["catalog_key"] for x in d["devices"]} == {"p100-pcie-16gb"}
    # int4 runs on vLLM by default, which needs compute capability 7.0; the P100 has 6.0
    assert r.exit_code == 3 and d["verdict"] == "no_fit" and d["refusal"]["code"] == "compute_capability"


def test_gpu_left_out_of_a_snapshot_is_named_with_the_reason(tmp_path):
    csv = without_column(P100_CSV, "memory.reserved", tmp_path / "p100.csv")
    r = run("here", "llama3-8b", "--snapshot", str(csv))
    assert r.exit_code == 5
    assert "GPU 0 (Tesla P100-PCIE-16GB): total memory unknown (not in this nvidia-smi capture)" in r.stderr
    assert "GPU 1 (Tesla P100-PCIE-16GB)" in r.stderr


def test_gpus_naming_an_unusable_gpu_says_why_not_unknown_gpu(tmp_path):
    csv = without_column(P100_CSV, "memory.reserved", tmp_path / "p100.csv")
    r = run("here", "llama3-8b", "--snapshot", str(csv), "--gpus", "0")
    assert r.exit_code == 5
    assert "unknown GPU" not in r.stderr
    assert "GPU '0' in --gpus cannot be used" in r.stderr and "total memory unknown" in r.stderr


def test_a_left_out_gpu_is_said_under_assumed(tmp_path):
    r, d = fit("here", "llama3-8b", "--quant", "int4", "--snapshot", str(lost_second_gpu(tmp_path)))
    assert [x["index"] for x in d["devices"]] == ["0"]
    left = [n for n in (x["message"] for x in d["notes"]) if "left out" in n]
    assert len(left) == 1 and left[0].startswith("GPU 1 left out: nvidia-smi reported 'GPU is lost'")


# ---- a lost GPU in an XML capture -------------------------------------------------------------------


def test_gpu_lost_in_every_field_is_unavailable_not_a_gpu_using_host_ram(tmp_path):
    s = load_snapshot(lost_second_gpu(tmp_path))
    good, lost = s.gpus
    assert good.available and good.name == "NVIDIA RTX A5000"
    assert lost.available is False and lost.unified_memory is False
    assert lost.name is None and lost.uuid is None and lost.memory.total is None
    assert lost.pci_bus_id == ET.parse(DUAL_A5000).getroot().findall("gpu")[1].get("id"), "the slot is still named"
    assert "GPU is lost" in lost.errors["gpu"] and "reset" in lost.errors["gpu"]


def test_report_is_not_healthy_about_a_lost_gpu(tmp_path):
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    r = run("report", "--format", "json", "--config", str(cfg), "--snapshot", str(lost_second_gpu(tmp_path)))
    assert r.exit_code == 5, r.output
    rep = json.loads(r.stdout)
    assert rep["status"] == "crit"
    g1 = rep["gpus"][1]
    assert g1["available"] is False and g1["status"] == "crit"
    assert [c["name"] for c in g1["checks"]] == ["available"]
    assert "host RAM" not in json.dumps(g1) and g1["unified_memory"] is False


# ---- placeholders become null -------------------------------------------------------------------------


def test_not_found_na_and_bracketed_placeholders_become_null(tmp_path):
    text = DUAL_A5000.read_text()
    text = re.sub(r"<cuda_version>[^<]*</cuda_version>", "<cuda_version>Not Found</cuda_version>", text)
    text = re.sub(r"<driver_version>[^<]*</driver_version>", "<driver_version>[Unknown Error]</driver_version>", text)
    text = text.replace("<product_name>NVIDIA RTX A5000</product_name>",
                        "<product_name>[Not Supported]</product_name>", 1)
    text = re.sub(r"<serial>[^<]*</serial>", "<serial>N/A</serial>", text)
    p = tmp_path / "na.xml"
    p.write_text(text)
    s = load_snapshot(p)
    assert s.host.cuda_driver_version is None and s.host.driver_version is None
    assert s.gpus[0].name is None and s.gpus[1].name == "NVIDIA RTX A5000"
    assert all(g.serial is None for g in s.gpus)
    assert s.gpus[0].errors["name"] == "nvidia-smi reported '[Not Supported]'"
    d = json.loads(run("probe", "--json", "--snapshot", str(p)).stdout)
    assert d["host"]["cuda_driver_version"] is None


def test_csv_placeholders_become_null(tmp_path):
    text = P100_CSV.read_text().replace("535.161.08", "[N/A]").replace(", P0", ", [Unknown Error]")
    p = tmp_path / "na.csv"
    p.write_text(text)
    s = load_snapshot(p)
    assert s.host.driver_version is None and {g.performance_state for g in s.gpus} == {None}


# ---- host name and time come from the snapshot, never this machine -------------------------------------


def _report(tmp_path, snapshot, fmt="json"):
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    return run("report", "--format", fmt, "--config", str(cfg), "--snapshot", str(snapshot))


def test_report_on_a_snapshot_takes_host_and_time_from_the_snapshot(tmp_path):
    # the XML <timestamp>; nvidia-smi -q -x names no host
    rep = json.loads(_report(tmp_path, DUAL_A5000).stdout)
    xml_ts = ET.parse(DUAL_A5000).getroot().findtext("timestamp")
    assert rep["host"]["hostname"] is None
    assert rep["time"] == load_snapshot(DUAL_A5000).host.taken_at and rep["time"][:4] in xml_ts
    # the CSV timestamp column
    rep = json.loads(_report(tmp_path, P100_CSV).stdout)
    assert rep["time"] == "2024-05-14T10:21:33.123" and rep["host"]["hostname"] is None
    # a gpufit snapshot carries its own host name
    snap = dataclasses.replace(load_snapshot(P100_CSV))
    snap = dataclasses.replace(snap, host=dataclasses.replace(snap.host, hostname="box-7", taken_at="2025-01-02T03:04:05Z"))
    saved = tmp_path / "box.json"
    saved.write_text(snap.to_json())
    rep = json.loads(_report(tmp_path, saved).stdout)
    assert rep["host"]["hostname"] == "box-7" and rep["time"] == "2025-01-02T03:04:05Z"


def test_report_on_a_capture_without_time_says_null_not_now(tmp_path):
    csv = without_column(P100_CSV, "timestamp", tmp_path / "p100.csv")
    rep = json.loads(_report(tmp_path, csv).stdout)
    assert rep["time"] is None and rep["host"]["hostname"] is None
    text = _report(tmp_path, csv, "text").stdout
    assert socket.gethostname() not in text.splitlines()[0]
    assert "host not in the capture" in text and "time not in the capture" in text


# ---- CUDA_VISIBLE_DEVICES is this shell's; --gpus applies to both -----------------------------------


def test_cuda_visible_devices_does_not_filter_a_snapshot_of_another_box():
    for value in ("", "7", "²"):
        r, d = fit("here", "llama3-8b", "--quant", "q4_k_m", "--snapshot", str(V100S_8),
                   env={"CUDA_VISIBLE_DEVICES": value})
        assert r.exit_code == 0 and len(d["devices"]) == 8, value
        assert not any("CUDA_VISIBLE_DEVICES" in n for n in (x["message"] for x in d["notes"]))


def test_cuda_visible_devices_filters_the_live_probe_and_says_so(monkeypatch):
    import gpufit.probe as probe

    live = dataclasses.replace(load_snapshot(V100S_8), source="nvml")
    monkeypatch.setattr(probe, "take_snapshot", lambda *a, **k: live)
    r, d = fit("here", "llama3-8b", "--quant", "q4_k_m", env={"CUDA_VISIBLE_DEVICES": "5,2"})
    assert sorted(x["index"] for x in d["devices"]) == ["2", "5"]
    assert any(n.startswith("GPUs 5, 2 of 8: CUDA_VISIBLE_DEVICES=5,2") for n in (x["message"] for x in d["notes"]))
    r = run("here", "llama3-8b", env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.exit_code == 5 and "CUDA_VISIBLE_DEVICES hides every GPU" in r.stderr


def test_gpus_filters_both_and_is_said_under_assumed(monkeypatch):
    import gpufit.probe as probe

    r, d = fit("here", "llama3-8b", "--quant", "q4_k_m", "--snapshot", str(V100S_8), "--gpus", "3")
    assert [x["index"] for x in d["devices"]] == ["3"] and "GPUs 3 of this box's 8: --gpus 3" in [x["message"] for x in d["notes"]]
    live = dataclasses.replace(load_snapshot(V100S_8), source="nvml")
    monkeypatch.setattr(probe, "take_snapshot", lambda *a, **k: live)
    r, d = fit("here", "llama3-8b", "--quant", "q4_k_m", "--gpus", "1", env={"CUDA_VISIBLE_DEVICES": "5"})
    assert [x["index"] for x in d["devices"]] == ["1"] and "GPUs 1 of this box's 8: --gpus 1" in [x["message"] for x in d["notes"]]
    text = run("here", "llama3-8b", "--quant", "q4_k_m", "--snapshot", str(V100S_8), "--gpus", "3").stdout
    assert "Assumed:" in text and text.index("--gpus 3") > text.index("Assumed:")


def test_failed_report_on_a_snapshot_is_not_labelled_with_this_host(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = _report(tmp_path, bad)
    assert r.exit_code == 6
    rep = json.loads(r.stdout)
    assert rep["success"] is False and rep["host"]["hostname"] is None and rep["time"] is None


def test_a_mig_device_without_memory_is_said_under_assumed():
    from gpufit.catalog import load_catalog
    from gpufit.app.devices import select_devices_noted

    s = load_snapshot(FIX / "nvidia-smi" / "influxdata_telegraf__a100-sxm4-v12.xml")
    g = s.gpus[0]
    dev = g.mig.devices[1]
    blind = dataclasses.replace(dev, memory=dataclasses.replace(dev.memory, free=None))
    g = dataclasses.replace(g, mig=dataclasses.replace(g.mig, devices=(g.mig.devices[0], blind, *g.mig.devices[2:])))
    sel = select_devices_noted(dataclasses.replace(s, gpus=(g,)), load_catalog(), None, {})
    assert "0/1" not in [d.index for d in sel.devices] and len(sel.devices) == len(g.mig.devices) - 1
    assert sel.notes == (f"MIG device 0/{dev.index} of GPU 0 (NVIDIA A100-SXM4-80GB) left out: its memory is unknown",)


def test_a_server_command_lines_cuda_visible_devices_is_this_shells_too(monkeypatch):
    """`check -- vllm serve M` reads the server's CUDA_VISIBLE_DEVICES from this shell: it filters a live
    probe by CUDA's rules (empty hides every GPU) and says so, and leaves a snapshot of another box alone."""
    import gpufit.probe as probe

    server = ["--", "vllm", "serve", "meta-llama/Meta-Llama-3-8B", "--dtype", "half"]
    r = run("check", "--snapshot", str(V100S_8), "--json", *server, env={"CUDA_VISIBLE_DEVICES": ""})
    assert "--gpus" not in r.stderr, r.output
    # the captured box's GPU 0 has 0.80 of 31.75 GiB free: vLLM's 0.9 claim cannot be met there
    d = json.loads(r.stdout)
    assert r.exit_code == 3 and d["refusal"]["code"] == "free_memory_below_utilization"
    assert len(d["devices"]) == 8
    live = dataclasses.replace(load_snapshot(V100S_8), source="nvml")
    monkeypatch.setattr(probe, "take_snapshot", lambda *a, **k: live)
    r = run("check", *server, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.exit_code == 5 and "CUDA_VISIBLE_DEVICES hides every GPU" in r.stderr
    r = run("check", "--json", *server, env={"CUDA_VISIBLE_DEVICES": "3"})
    d = json.loads(r.stdout)
    assert [x["index"] for x in d["devices"]] == ["3"] and any("CUDA_VISIBLE_DEVICES=3" in n for n in (x["message"] for x in d["notes"]))
