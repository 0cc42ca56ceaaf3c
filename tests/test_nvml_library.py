"""gpufit's whole NVML path -- the real, unmodified pynvml and its ctypes layer -- against a fake
libnvidia-ml.so.1 written in C (tests/fakenvml_c), fed from every capture in tests/fixtures/nvidia-smi.

Each test starts gpufit as a subprocess with LD_LIBRARY_PATH on the fake, so pynvml dlopens it exactly as it
dlopens NVIDIA's library: function names, versioned structs (nvmlMemory_v2_t and its version word), return
codes and symbols missing on old drivers are all exercised. The library is compiled once per session
(fixture `fake_nvml_lib` in conftest.py); without a C compiler these tests skip and say so.

What `probe --json` through the library is compared with (`probe --snapshot CAPTURE --json`): every field of
every GPU (index, name, uuid, serial, pci_bus_id, pci_device_id, memory.*, clocks_mhz.*, temperature_c,
power_w, power_limit_w, utilization.*, compute_capability, pcie.*, mig.enabled and every MIG device's fields,
nvlink, processes, ecc.*, throttle_reasons, fan_percent, performance_state, unified_memory, available) and
host.driver_version / cuda_driver_version / nvml_version. Left out, each for a reason:
- host hostname, os, cpu_count, cpu_model, ram_*: the live path reads this machine (psutil), not the
  captured box; host.taken_at: the live path stamps the time of the probe; `source`: says which path it was.
- gpus[].errors: why a field is null is worded by each source ("nvidia-smi reported 'N/A'" vs NVML's
  "Not Supported"); checked separately: every error the library path gives is a one-line reason.
- processes[].name: NVML reports pids only; gpufit names them with psutil on this machine. Processes are
  compared as a set of (kind, pid, used_bytes): NVML lists compute and graphics processes in two calls.
- pci_device_id where the capture has a bus id but no device id: nvmlPciInfo_t carries both in one struct,
  so the fake answers device id 0 ("0x00000000").
- memory and unified_memory where the capture has no memory.total: nvmlMemory_t always has a total, and
  NVML answering NotSupported is what a unified-memory part (GH200 / GB10) does, so gpufit sizes it from host
  RAM; asserted as such instead.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakenvml_c.build import NEWER_SYMBOLS, SOURCE
from fakenvml_c.table import table_for, table_for_capture
from gpufit.cli import cli
from gpufit.probe import load_snapshot

ROOT = Path(__file__).resolve().parents[1]
CAPTURE_DIR = Path(__file__).parent / "fixtures" / "nvidia-smi"
CAPTURES = sorted(p for p in CAPTURE_DIR.iterdir() if p.suffix in (".xml", ".txt", ".csv"))
MIG_CAPTURES = [p for p in CAPTURES if load_snapshot(p).gpus[0].mig.enabled]
HOST_FROM_THIS_MACHINE = ("hostname", "os", "cpu_count", "cpu_model", "ram_total_bytes", "ram_available_bytes",
                          "taken_at")
TRACEBACK = re.compile(r"Traceback|internal error")


def capture_id(p: Path) -> str:
    return p.stem


def write_table(tmp_path, capture, extra: str = "") -> Path:
    t = tmp_path / "device.tbl"
    t.write_text(table_for_capture(capture) + extra, encoding="utf-8")
    return t


def snapshot_json(capture) -> dict:
    """`gpufit probe --snapshot CAPTURE --json`, run in this process (same CLI code, no driver needed)."""
    r = CliRunner().invoke(cli, ["probe", "--snapshot", str(capture), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def comparable(d: dict, capture_snap) -> dict:
    """The fields both paths carry (see the module docstring for what is left out and why)."""
    d = json.loads(json.dumps(d))
    for k in HOST_FROM_THIS_MACHINE:
        d["host"].pop(k)
    d.pop("source")
    for i, cap in enumerate(capture_snap.gpus):
        if not cap.available:  # served as lost: NVML answers nothing about it, the capture may say more
            d["gpus"][i] = {k: d["gpus"][i][k] for k in ("index", "available")}
    for g, cap in zip(d["gpus"], capture_snap.gpus):
        if not cap.available:
            continue
        g.pop("errors")
        g["processes"] = sorted((p["kind"], p["pid"], p["used_bytes"]) for p in g["processes"])
        if cap.pci_bus_id and not cap.pci_device_id:
            g.pop("pci_device_id")
        if cap.memory.total is None:
            g.pop("memory")
            g.pop("unified_memory")
    return d


def assert_clean(r, codes=(0,)):
    assert r.returncode in codes, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert not TRACEBACK.search(r.stderr), r.stderr


# ---- the library itself -------------------------------------------------------------------------------


def _symbols_behind(pynvml, fn: str, depth: int = 0) -> set[str]:
    """The C symbols pynvml's `fn` resolves (following its calls to other pynvml functions)."""
    src = inspect.getsource(getattr(pynvml, fn))
    found = set(re.findall(r'_nvmlGetFunctionPointer\("(\w+)"\)', src))
    if depth < 2:
        for callee in set(re.findall(r"\b(nvml\w+)\(", src)) - {fn}:
            if callable(getattr(pynvml, callee, None)) and not callee.startswith("nvmlStruct"):
                found |= _symbols_behind(pynvml, callee, depth + 1)
    return found


def gpufit_nvml_calls() -> set[str]:
    text = "".join((ROOT / "gpufit" / "probe" / f).read_text() for f in ("nvml.py", "nvml_fields.py"))
    import pynvml

    names = set(re.findall(r'"(nvml[A-Z]\w+)"', text))
    names |= {n + "_v2" for n in re.findall(r'\("(nvmlDevice\w+RunningProcesses)"', text)}  # fn + "_v2"
    return {n for n in names if callable(getattr(pynvml, n, None))}


def test_every_nvml_entry_point_gpufit_reaches_is_in_the_library(fake_nvml_lib):
    import pynvml

    calls = gpufit_nvml_calls()
    assert len(calls) >= 40, sorted(calls)
    symbols = set().union(*(_symbols_behind(pynvml, fn) for fn in calls)) | {"nvmlErrorString"}
    current, old = exported(fake_nvml_lib.current), exported(fake_nvml_lib.old)
    missing = sorted(symbols - current)
    assert not missing, f"gpufit reaches these NVML symbols through pynvml; the fake lacks them: {missing}"
    assert set(NEWER_SYMBOLS) <= current and not set(NEWER_SYMBOLS) & old
    assert current - old == set(NEWER_SYMBOLS)


def exported(folder) -> set[str]:
    """The nvml* symbols a build exports, asked in a child process: loading the fake into the test process
    would make pynvml there find it (dlopen matches the loaded soname) and the `gpu` tests run against it."""
    import subprocess
    import sys

    code = ("import ctypes, re, sys\n"
            "src = open(sys.argv[2]).read()\n"
            "lib = ctypes.CDLL(sys.argv[1])\n"
            "names = set(re.findall(r'EXPORT [^(]*?\\b(nvml\\w+)\\(', src))\n"
            "print(' '.join(sorted(n for n in names if hasattr(lib, n))))\n")
    r = subprocess.run([sys.executable, "-c", code, str(folder / "libnvidia-ml.so.1"), str(SOURCE)],
                       capture_output=True, text=True, check=True)
    return set(r.stdout.split())


def test_memory_v2_checks_the_struct_version_word_as_the_driver_does(fake_nvml_lib, tmp_path):
    table = write_table(tmp_path, CAPTURE_DIR / "influxdata_telegraf__dual_a5000-v13.xml")
    code = (
        "import pynvml, sys\n"
        "pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)\n"
        "m = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)\n"
        "v1 = pynvml.nvmlDeviceGetMemoryInfo(h)\n"
        "print(m.total, m.reserved, m.free, m.used, v1.used)\n"
        "for bad in (0x01000028, 0x02000020, 40):\n"
        "    try:\n"
        "        pynvml.nvmlDeviceGetMemoryInfo(h, version=bad); print('accepted', hex(bad))\n"
        "    except pynvml.NVMLError_ArgumentVersionMismatch: print('mismatch')\n"
    )
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], env=fake_nvml_lib.env(table), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    # dual_a5000 GPU 0: 24564 MiB total, 450 MiB reserved, 1678 MiB free, 22437 MiB used (nvidia-smi -q -x)
    total, reserved, free, used, v1_used = map(int, lines[0].split())
    assert (total, reserved, free, used) == (24564 * 2**20, 450 * 2**20, 1678 * 2**20, 22437 * 2**20)
    assert v1_used == used + reserved  # nvml.h: v1 used is "Sum of Reserved and Allocated device memory"
    assert lines[1:4] == ["mismatch"] * 3


# ---- probe: the library path equals the capture --------------------------------------------------------


@pytest.mark.parametrize("capture", CAPTURES, ids=capture_id)
def test_probe_through_pynvml_equals_the_capture(fake_nvml_lib, tmp_path, capture):
    snap = load_snapshot(capture)
    r = fake_nvml_lib.run(["probe", "--json"], write_table(tmp_path, capture))
    assert_clean(r)
    live = json.loads(r.stdout)
    assert live["source"] == "nvml"
    assert comparable(live, snap) == comparable(snapshot_json(capture), snap)
    for g, cap in zip(live["gpus"], snap.gpus):
        assert all(isinstance(v, str) and v and "\n" not in v for v in g["errors"].values()), g["errors"]
        if not cap.available:
            assert "GPU is lost" in g["errors"]["gpu"]
        elif cap.memory.total is None:  # served as NotSupported: a unified-memory part, sized from host RAM
            assert g["unified_memory"] and g["memory"]["total"] == live["host"]["ram_total_bytes"]


@pytest.mark.parametrize("capture", CAPTURES, ids=capture_id)
def test_old_driver_gives_the_same_memory_figures(fake_nvml_lib, tmp_path, capture):
    """An R470-era library (no memory v2, no _v3 process lists, no ClocksEventReasons): gpufit's fallbacks
    give the same total and free, v1's used (allocated + reserved, as nvml.h defines it), and the rest."""
    snap = load_snapshot(capture)
    r = fake_nvml_lib.run(["probe", "--json"], write_table(tmp_path, capture), old=True)
    assert_clean(r)
    live = json.loads(r.stdout)
    want = comparable(snapshot_json(capture), snap)
    for g in want["gpus"]:
        if "memory" in g:
            g["memory"]["used"] += g["memory"]["reserved"] or 0
            g["memory"]["reserved"] = None
        for d in g.get("mig", {}).get("devices", ()):
            d["memory"]["used"] += d["memory"]["reserved"] or 0
            d["memory"]["reserved"] = None
    assert comparable(live, snap) == want
    for g, cap in zip(live["gpus"], snap.gpus):
        if cap.available and cap.memory.total is not None:
            assert "old driver" in g["errors"]["memory.reserved"]


def test_old_driver_lists_processes_through_the_v2_call(fake_nvml_lib, tmp_path):
    """Regression: pynvml's nvmlDeviceGetComputeRunningProcesses calls the _v3 symbol and raises
    NVMLLibraryMismatchError (not an NVMLError) on a driver before R510; gpufit let it escape and
    `gpufit probe` ended in "internal error" on every such machine."""
    calls = tmp_path / "calls.log"
    r = fake_nvml_lib.run(["probe", "--json"], write_table(tmp_path, CAPTURE_DIR / "influxdata_telegraf__tesla-t4.xml"),
                          old=True, call_log=calls)
    assert_clean(r)
    procs = json.loads(r.stdout)["gpus"][0]["processes"]
    assert sorted((p["kind"], p["pid"], p["used_bytes"]) for p in procs) == [
        ("compute", 5762, 1005 * 2**20), ("graphics", 675, 22 * 2**20)]  # tesla-t4.xml <processes>
    called = calls.read_text().split()
    assert "nvmlDeviceGetComputeRunningProcesses_v2" in called
    assert "nvmlDeviceGetGraphicsRunningProcesses_v2" in called
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in called  # the pre-R535 name of the same call
    assert "nvmlDeviceGetMemoryInfo" in called


def test_current_driver_uses_the_newest_calls(fake_nvml_lib, tmp_path):
    calls = tmp_path / "calls.log"
    r = fake_nvml_lib.run(["probe", "--json"], write_table(tmp_path, CAPTURE_DIR / "influxdata_telegraf__tesla-t4.xml"),
                          call_log=calls)
    assert_clean(r)
    called = set(calls.read_text().split())
    assert {"nvmlInitWithFlags", "nvmlShutdown", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetGraphicsRunningProcesses_v3"} <= called
    assert not called & {"nvmlDeviceGetComputeRunningProcesses_v2", "nvmlDeviceGetCurrentClocksThrottleReasons"}


@pytest.mark.parametrize("capture", MIG_CAPTURES, ids=capture_id)
def test_mig_devices_come_through_the_mig_handle_calls(fake_nvml_lib, tmp_path, capture):
    snap = load_snapshot(capture)
    calls = tmp_path / "calls.log"
    r = fake_nvml_lib.run(["probe", "--json"], write_table(tmp_path, capture), call_log=calls)
    assert_clean(r)
    mig = json.loads(r.stdout)["gpus"][0]["mig"]
    assert mig["enabled"] is True and len(mig["devices"]) == len(snap.gpus[0].mig.devices) >= 4
    for got, want in zip(mig["devices"], snap.gpus[0].mig.devices):
        assert (got["gpu_instance_id"], got["memory"]["total"]) == (want.gpu_instance_id, want.memory.total)
    called = calls.read_text().split()
    assert called.count("nvmlDeviceGetMigDeviceHandleByIndex") == 7  # every slot up to the max, empty ones too
    for fn in ("nvmlDeviceGetMigMode", "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetGpuInstanceId",
               "nvmlDeviceGetComputeInstanceId", "nvmlDeviceGetAttributes_v2"):
        assert fn in called


# ---- here / check / report through the library -------------------------------------------------------


def _fit_comparable(d: dict) -> dict:
    d = dict(d)
    d.pop("notes")  # the snapshot run adds "GPUs from FILE (taken ...)"
    # warnings may name processes holding memory: NVML gives pids, named on this machine
    d["warnings"] = [{**w, "message": re.sub(r"held by .*", "held by ...", w["message"])} for w in d["warnings"]]
    return d


@pytest.mark.parametrize("capture", CAPTURES, ids=capture_id)
def test_here_check_and_report_through_pynvml_match_the_capture(fake_nvml_lib, tmp_path, capture):
    snap = load_snapshot(capture)
    table = write_table(tmp_path, capture)
    served_as_is = all(g.memory.total is not None for g in snap.gpus)  # (a lost GPU is served as lost)
    fit_args = ["llama3-8b", "--quant", "q4_k_m", "--ram", "64GiB"]
    runner = CliRunner()
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    report_args = ["report", "--format", "prometheus", "--config", str(cfg)]
    # the three live runs go at once (each its own process); the capture runs meanwhile, in this one
    procs = [fake_nvml_lib.start(args, table) for args in (["here", *fit_args, "--json"], ["check", *fit_args],
                                                          report_args)]
    want = runner.invoke(cli, ["here", *fit_args, "--json", "--snapshot", str(capture)])
    want_check = runner.invoke(cli, ["check", *fit_args, "--snapshot", str(capture)])
    want_rep = runner.invoke(cli, [*report_args, "--snapshot", str(capture)])
    here, check, rep = (fake_nvml_lib.finish(p) for p in procs)

    assert_clean(here, (0, 3, 4, 5))
    assert_clean(check, (0, 3, 4, 5))
    if served_as_is:
        assert here.returncode == want.exit_code, (here.stderr, want.output)
        assert check.returncode == want_check.exit_code, (check.stderr, want_check.output)
        if here.returncode != 5:
            assert _fit_comparable(json.loads(here.stdout)) == _fit_comparable(json.loads(want.stdout))

    assert_clean(rep, (0, 4, 5))
    assert "gpufit_report_success 1.0" in rep.stdout
    if served_as_is:
        gpu_lines = lambda text: sorted(l for l in text.splitlines() if l.startswith("gpufit_gpu_"))  # noqa: E731
        assert gpu_lines(rep.stdout) == gpu_lines(want_rep.stdout)
        assert len(gpu_lines(rep.stdout)) >= 10 * len(snap.gpus)


# ---- faults --------------------------------------------------------------------------------------------

A5000 = CAPTURE_DIR / "influxdata_telegraf__dual_a5000-v13.xml"


@pytest.mark.parametrize("code, says", [
    ("DRIVER_NOT_LOADED", "the NVIDIA kernel driver is not loaded"),
    ("LIB_RM_VERSION_MISMATCH", "the NVML library and the loaded NVIDIA kernel module are different versions"),
    ("NO_PERMISSION", "no permission to open the NVIDIA devices"),
])
def test_init_failures_exit_5_with_what_to_check(fake_nvml_lib, tmp_path, code, says):
    table = write_table(tmp_path, A5000)
    for args in (["probe", "--json"], ["here", "llama3-8b"], ["check", "llama3-8b"]):
        r = fake_nvml_lib.run(args, table, init_error=code)
        assert_clean(r, (5,))
        assert says in r.stderr and r.stdout == ""
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    r = fake_nvml_lib.run(["report", "--format", "prometheus", "--config", str(cfg)], table, init_error=code)
    assert_clean(r, (5,))
    assert says in r.stderr and "gpufit_report_success 0.0" in r.stdout


def test_no_gpu_behind_the_driver_exits_5(fake_nvml_lib):
    r = fake_nvml_lib.run(["probe"], None)
    assert_clean(r, (5,))
    assert "NVML sees no NVIDIA GPU" in r.stderr


@pytest.mark.parametrize("how", ["env", "table"])
def test_one_lost_gpu_of_two_is_reported_and_the_other_used(fake_nvml_lib, tmp_path, how):
    # FAKENVML_LOST=1, or a `lost` line in GPU 1's block (what table.py writes for an unavailable GPU)
    table = write_table(tmp_path, A5000, "lost\t1\n" if how == "table" else "")
    lost = {"lost": "1"} if how == "env" else {}
    r = fake_nvml_lib.run(["probe", "--json"], table, **lost)
    assert_clean(r)
    g0, g1 = json.loads(r.stdout)["gpus"]
    assert g0["available"] and g0["memory"]["free"] == 1678 * 2**20
    assert g1["available"] is False and "GPU is lost" in g1["errors"]["gpu"] and g1["name"] is None
    here = fake_nvml_lib.run(["here", "llama3-8b", "--quant", "q4_k_m", "--ram", "64GiB", "--json"], table, **lost)
    assert_clean(here, (0, 3, 4))
    assert [d["index"] for d in json.loads(here.stdout)["devices"]] == ["0"]
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    rep = fake_nvml_lib.run(["report", "--format", "prometheus", "--config", str(cfg)], table, **lost)
    assert_clean(rep, (5,))  # a lost GPU is critical
    assert 'gpufit_gpu_available{uuid="unknown-1"} 0.0' in rep.stdout
    assert "GPU is lost" in rep.stderr


def test_a_field_without_permission_is_null_with_the_reason(fake_nvml_lib, tmp_path):
    # in containers the process lists answer NO_PERMISSION while everything else works
    table = write_table(tmp_path, CAPTURE_DIR / "influxdata_telegraf__tesla-t4.xml",
                        "processes.compute\t!NO_PERMISSION\nprocesses.graphics\t!NO_PERMISSION\n")
    r = fake_nvml_lib.run(["probe", "--json"], table)
    assert_clean(r)
    g = json.loads(r.stdout)["gpus"][0]
    assert g["processes"] == [] and "Insufficient Permissions" in g["errors"]["processes.compute"]
    assert g["memory"]["total"] == 15360 * 2**20


def test_memory_v2_refusing_the_version_falls_back_to_v1(fake_nvml_lib, tmp_path):
    table = write_table(tmp_path, A5000)
    r = fake_nvml_lib.run(["probe", "--json"], table, errors="nvmlDeviceGetMemoryInfo_v2=ARGUMENT_VERSION_MISMATCH")
    assert_clean(r)
    m = json.loads(r.stdout)["gpus"][0]["memory"]
    assert (m["total"], m["free"], m["reserved"]) == (24564 * 2**20, 1678 * 2**20, None)


def test_a_hung_driver_call_is_bounded_by_the_probe_timeout(fake_nvml_lib, tmp_path):
    import time

    table = write_table(tmp_path, A5000)
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("[report]\nprobe_timeout_s = 1\n")
    out = tmp_path / "gpufit.prom"
    t0 = time.monotonic()
    r = fake_nvml_lib.run(["report", "--format", "prometheus", "--config", str(cfg), "--output", str(out)], table,
                          hang="nvmlDeviceGetMemoryInfo_v2", timeout=30)
    took = time.monotonic() - t0
    assert_clean(r, (5,))
    assert "NVML did not answer within 1 s" in r.stderr
    assert "gpufit_report_success 0" in out.read_text()
    assert took < 8, took  # the timeout, not the hung call, ended it


def test_table_round_trip_keeps_what_the_capture_says():
    """The generator itself: a None field is left out (so the fake answers NotSupported), a lost GPU is
    marked lost, and values are written as NVML encodes them."""
    snap = load_snapshot(CAPTURE_DIR / "influxdata_telegraf__a100-sxm4-v12.xml")
    text = table_for(snap)
    keys = dict(line.split("\t", 1) for line in text.splitlines()[1:12])
    assert keys["cuda_driver_version"] == "12020"  # "12.2"
    assert keys["pci.device_id"] == str(0x20B210DE)
    assert "util.gpu" not in text  # N/A in the capture
    assert text.count("\nmig\t") == 4 and "mig.max_count\t7" in text
    import dataclasses

    lost = dataclasses.replace(snap, gpus=(dataclasses.replace(snap.gpus[0], available=False),))
    assert "\nlost\t1\n" in table_for(lost)


def test_nvlink_and_retired_pages_that_no_capture_has(fake_nvml_lib, tmp_path):
    """No capture here has NVLink or retired pages; served from table lines, they go through the list
    protocols (link index past the last -> InvalidArgument; page lists sized by INSUFFICIENT_SIZE)."""
    extra = ("nvlink.count\t3\nnvlink.0.up\t1\nnvlink.0.version\t3\nnvlink.1.up\t1\nnvlink.1.version\t3\n"
             "nvlink.2.up\t0\nretired.single\t3\nretired.double\t1\nretired.pending\t1\n")
    r = fake_nvml_lib.run(["probe", "--json"], write_table(tmp_path, CAPTURE_DIR / "influxdata_telegraf__tesla-t4.xml", extra))
    assert_clean(r)
    g = json.loads(r.stdout)["gpus"][0]
    assert g["nvlink"] == [{"link": 0, "up": True, "version": 3, "remote_pci_bus_id": None},
                           {"link": 1, "up": True, "version": 3, "remote_pci_bus_id": None},
                           {"link": 2, "up": False, "version": None, "remote_pci_bus_id": None}]
    e = g["ecc"]
    assert (e["retired_pages_single"], e["retired_pages_double"], e["retired_pages_pending"]) == (3, 1, True)
