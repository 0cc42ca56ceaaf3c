"""Health checks: each one's ok / warn / crit edges, and unsupported (None) values never flagged."""

from __future__ import annotations

import dataclasses

import pytest

from gpufit.app import health
from gpufit.app.config import Thresholds
from gpufit.probe.snapshot import Clocks, Ecc, EccCounts, Memory, Pcie, Process, Utilization

from report_helpers import GiB, capture_params, healthy_gpu, host, load_capture, snapshot, unsupported_gpu

T = Thresholds()


def by_name(checks):
    return {c.name: c for c in checks}


def test_healthy_gpu_is_all_ok():
    checks = health.gpu_checks(healthy_gpu(), T)
    assert {c.status for c in checks} == {"ok"}, [c for c in checks if c.status != "ok"]
    assert health.worst(c.status for c in checks) == "ok"


@pytest.mark.parametrize("temp,status", [(82, "ok"), (83, "warn"), (89, "warn"), (90, "crit"), (101, "crit")])
def test_temperature_edges(temp, status):
    c = health.check_temperature(healthy_gpu(temperature_c=temp), T)
    assert c.status == status
    assert c.value == temp and c.threshold == {"warn": 83.0, "crit": 90.0} and c.unit == "celsius"


def test_thresholds_come_from_config():
    t = dataclasses.replace(T, temperature_warn_c=40, temperature_crit_c=44)
    assert health.check_temperature(healthy_gpu(temperature_c=45), t).status == "crit"


@pytest.mark.parametrize("reasons,thermal,power", [
    ((), "ok", "ok"),
    (("gpu_idle",), "ok", "ok"),
    (("sw_thermal_slowdown",), "warn", "ok"),
    (("hw_thermal_slowdown", "hw_slowdown"), "crit", "crit"),
    (("sw_power_cap",), "ok", "ok"),  # healthy_gpu is idle: see the test below
    (("hw_power_brake_slowdown",), "ok", "crit"),
])
def test_throttle_reasons(reasons, thermal, power):
    g = healthy_gpu(throttle_reasons=reasons)
    assert health.check_thermal_throttling(g, T).status == thermal
    assert health.check_power_throttling(g, T).status == power


def test_sw_power_cap_is_judged_only_on_busy_gpus():
    busy = healthy_gpu(throttle_reasons=("sw_power_cap",), utilization=Utilization(gpu=97, memory=60))
    idle = healthy_gpu(throttle_reasons=("sw_power_cap",), utilization=Utilization(gpu=0, memory=0))
    unknown = healthy_gpu(throttle_reasons=("sw_power_cap",), utilization=Utilization())
    assert health.check_power_throttling(busy, T).status == "warn"
    c = health.check_power_throttling(idle, T)
    assert c.status == "ok" and c.value == [] and "not flagged" in c.message and "0 %" in c.message
    assert health.check_power_throttling(unknown, T).status == "ok"
    # a hardware brake is flagged whatever the load
    braked = healthy_gpu(throttle_reasons=("sw_power_cap", "hw_power_brake_slowdown"), utilization=Utilization(gpu=0))
    assert health.check_power_throttling(braked, T).status == "crit"


def test_sw_power_cap_on_the_idle_3090_capture_is_not_a_warning():
    from pathlib import Path

    from gpufit.probe import load_snapshot

    s = load_snapshot(Path(__file__).parent / "fixtures/nvidia-smi/influxdata_telegraf__3090-v13.xml")
    g = s.gpus[0]
    assert "sw_power_cap" in g.throttle_reasons and g.utilization.gpu == 0
    assert health.check_power_throttling(g, T).status == "ok"


def test_health_text_does_not_say_nvml_for_captures():
    assert health.check_available(healthy_gpu(), T).message == "GPU answers NVML"
    assert "NVML" not in health.check_available(healthy_gpu(), T, live=False).message


def test_throttle_reasons_unreadable_are_unknown_not_ok():
    g = healthy_gpu(errors={"throttle_reasons": "Not Supported"})
    assert health.check_thermal_throttling(g, T).status == "unknown"


def test_power_near_limit():
    assert health.check_power_near_limit(healthy_gpu(power_w=340.0), T).status == "warn"
    c = health.check_power_near_limit(healthy_gpu(power_w=200.0), T)
    assert c.status == "ok" and c.value == pytest.approx(200 / 350, abs=1e-4)


def test_ecc_volatile_uncorrected_is_critical_aggregate_is_a_warning():
    g = healthy_gpu(ecc=Ecc(enabled=True, volatile=EccCounts(0, 2), aggregate=EccCounts(5, 2)))
    c = by_name(health.check_ecc(g, T))
    assert c["ecc_volatile_uncorrected"].status == "crit"
    assert c["ecc_aggregate_uncorrected"].status == "warn"
    assert c["ecc_volatile_corrected"].status == "ok"
    g = healthy_gpu(ecc=Ecc(enabled=True, volatile=EccCounts(150, 0), aggregate=EccCounts(150, 0)))
    c = by_name(health.check_ecc(g, T))
    assert c["ecc_volatile_corrected"].status == "warn"
    assert c["ecc_aggregate_corrected"].status == "ok"


def test_ecc_disabled_or_unsupported_is_unknown():
    for ecc in (Ecc(enabled=False), Ecc()):
        assert {c.status for c in health.check_ecc(healthy_gpu(ecc=ecc), T)} == {"unknown"}


def test_memory_repair_pending_and_failure():
    g = healthy_gpu(ecc=Ecc(enabled=True, remapped_rows_pending=True, remapped_rows_failure=True,
                            retired_pages_pending=True))
    c = by_name(health.check_memory_repair(g, T))
    assert c["remapped_rows_pending"].status == "warn"
    assert c["remapped_rows_failure"].status == "crit"
    assert c["retired_pages_pending"].status == "warn"
    # a generation without the mechanism (None) reports nothing about it
    assert health.check_memory_repair(healthy_gpu(ecc=Ecc(enabled=True)), T) == []


def test_pcie_link_below_max_is_only_flagged_when_busy():
    slow = Pcie(gen=1, width=16, gen_max=4, width_max=16)
    idle = health.check_pcie_link(healthy_gpu(pcie=slow, utilization=Utilization(gpu=0, memory=0)), T)
    assert idle.status == "ok" and "downshift to save power" in idle.message
    busy = health.check_pcie_link(healthy_gpu(pcie=slow, utilization=Utilization(gpu=97, memory=60)), T)
    assert busy.status == "warn" and "gen1" in busy.message
    narrow = Pcie(gen=4, width=8, gen_max=4, width_max=16)
    assert health.check_pcie_link(healthy_gpu(pcie=narrow, utilization=Utilization(90, 50)), T).status == "warn"
    unknown_load = health.check_pcie_link(healthy_gpu(pcie=slow, utilization=Utilization()), T)
    assert unknown_load.status == "unknown"


def test_clocks_stuck_low_under_load():
    low = Clocks(sm=300, mem=9751, sm_max=2100, mem_max=9751)
    assert health.check_clocks(healthy_gpu(clocks_mhz=low, utilization=Utilization(95, 40)), T).status == "warn"
    assert health.check_clocks(healthy_gpu(clocks_mhz=low, utilization=Utilization(0, 0)), T).status == "ok"


def test_memory_held_names_the_processes():
    g = healthy_gpu(memory=Memory(total=24 * GiB, free=1 * GiB, used=23 * GiB),
                    processes=(Process(pid=7, name="vllm", used_bytes=22 * GiB),))
    c = health.check_memory_held(g, T)
    assert c.status == "warn" and "vllm[7]" in c.message and c.value == 23 * GiB


def test_lost_gpu_is_critical_and_does_not_hide_the_others():
    lost = dataclasses.replace(unsupported_gpu(1), available=False, errors={"gpu": "GPU is lost"})
    checks = health.gpu_checks(lost, T)
    assert [(c.name, c.status) for c in checks] == [("available", "crit")]
    assert "GPU is lost" in checks[0].message
    s = snapshot(healthy_gpu(0), lost)
    assert health.check_gpus_present(s, T).status == "ok"
    assert health.worst(c.status for c in health.gpu_checks(s.gpus[0], T)) == "ok"


def test_no_gpu_is_critical():
    from gpufit.probe.snapshot import Snapshot

    assert health.check_gpus_present(Snapshot(host=host()), T).status == "crit"


@pytest.mark.parametrize("avail,status", [(50, "ok"), (10, "ok"), (8, "warn"), (4, "crit")])
def test_host_ram(avail, status):
    h = host(ram_total_bytes=100 * GiB, ram_available_bytes=avail * GiB)
    assert health.check_host_ram(h, T).status == status


def test_unsupported_values_are_never_flagged():
    checks = health.gpu_checks(unsupported_gpu(), T) + [health.check_host_ram(host(ram_total_bytes=None), T)]
    for c in checks:
        if c.value is None:
            assert c.status in ("unknown", "ok"), c
    assert by_name(checks)["temperature"].status == "unknown"
    assert "Not Supported" in by_name(checks)["temperature"].message
    assert health.worst(c.status for c in checks) == "ok"


def test_worst_ignores_unknown():
    assert health.worst(["unknown", "ok"]) == "ok"
    assert health.worst(["ok", "warn", "unknown"]) == "warn"
    assert health.worst(["warn", "crit"]) == "crit"
    assert health.worst([]) == "ok"


@pytest.mark.parametrize("path", capture_params())
def test_every_capture_checks_cleanly(path):
    snap = load_capture(path)
    for g in snap.gpus:
        for c in health.gpu_checks(g, T):
            assert c.status in health.STATUSES
            assert set(c.threshold) == {"warn", "crit"}
            if c.value is None:
                assert c.status == "unknown", (path.name, c)
            assert c.message


def test_checks_that_carry_sizes_give_figures_and_render_words_them():
    """memory_held and host_ram keep bytes as data (the app formats no units); the message is worded by
    render/words.py: 23 GiB of 24 GiB is 96 %."""
    from gpufit.probe.snapshot import Memory, Process

    g = dataclasses.replace(healthy_gpu(), memory=Memory(total=24 * GiB, free=1 * GiB, used=23 * GiB),
                            processes=(Process(pid=7, name="vllm", used_bytes=23 * GiB),))
    c = health.check_memory_held(g, T)
    assert c.data["used_bytes"] == 23 * GiB and c.text == ""
    assert c.message == "23.0 GiB of 24.0 GiB in use (96%); held by vllm[7] 23.0 GiB"
    assert c.to_dict()["message"] == c.message and set(c.to_dict()) == {"name", "status", "value", "threshold",
                                                                         "unit", "message"}
