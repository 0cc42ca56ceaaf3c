"""The systemd units: `systemd-analyze verify` clean and `security --offline=yes` exposure <= 2.0.

verify checks that ExecStart= points at an executable, and /usr/local/bin/gpufit is not installed on a test
machine: the units are copied to a temp folder with that path rewritten to /bin/true (nothing else changes).
The drop-in is verified attached to a stand-in vllm.service in the same way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian/Ubuntu: apt-get install systemd)")
GPUFIT = "/usr/local/bin/gpufit"
MAX_EXPOSURE = 2.0


def staged(tmp_path, *names) -> Path:
    for name in names:
        text = (UNITS / name).read_text()
        assert GPUFIT in text or name.endswith(".timer")
        (tmp_path / name).write_text(text.replace(GPUFIT, "/bin/true"))
    return tmp_path


def analyze(*args, cwd=None, env=None):
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@needs_analyze
def test_units_verify_clean(tmp_path):
    d = staged(tmp_path, "gpufit-report.service", "gpufit-report.timer")
    r = analyze("verify", str(d / "gpufit-report.service"), str(d / "gpufit-report.timer"), cwd=d)
    # verify exits 0 even for unknown keys; those only show up as messages, so clean means no output at all
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


@needs_analyze
def test_verify_would_catch_a_mistake(tmp_path):
    """Guards the test above: a misspelt key in the unit is reported."""
    d = staged(tmp_path, "gpufit-report.service")
    p = d / "gpufit-report.service"
    p.write_text(p.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    r = analyze("verify", str(p), cwd=d)
    assert "ProtectHom" in r.stderr


@needs_analyze
def test_report_unit_exposure_is_at_most_2(tmp_path):
    d = staged(tmp_path, "gpufit-report.service")
    r = analyze("security", "--offline=yes", str(d / "gpufit-report.service"), cwd=d)
    m = re.search(r"Overall exposure level for gpufit-report\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout
    # and the threshold flag agrees (exit status is non-zero above it)
    r = analyze("security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}",
                str(d / "gpufit-report.service"), cwd=d)
    assert r.returncode == 0, r.stdout


@needs_analyze
def test_preflight_dropin_verifies_on_a_server_unit(tmp_path):
    (tmp_path / "vllm.service").write_text("[Unit]\nDescription=stand-in server\n[Service]\nExecStart=/bin/true\n")
    dropin = tmp_path / "vllm.service.d"
    dropin.mkdir()
    (dropin / "gpufit-preflight.conf").write_text((UNITS / "vllm-preflight.conf").read_text().replace(GPUFIT, "/bin/true"))
    r = analyze("verify", str(tmp_path / "vllm.service"), cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # the drop-in really was read: break it and verify complains about it
    (dropin / "gpufit-preflight.conf").write_text("[Service]\nExecStartPre=/bin/true\nBogus=1\n")
    assert "gpufit-preflight.conf" in analyze("verify", str(tmp_path / "vllm.service"), cwd=tmp_path).stderr


def _directives(name):
    out = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_report_unit_shape():
    d = _directives("gpufit-report.service")
    assert d["Type"] == ["oneshot"]
    assert d["DevicePolicy"] == ["closed"] and d["PrivateNetwork"] == ["yes"]
    assert d["ReadWritePaths"] == ["/var/lib/prometheus/node-exporter"] and d["ProtectSystem"] == ["strict"]
    assert d["UMask"] == ["0022"] and d["CapabilityBoundingSet"] == [""]
    assert all(a.split()[0].startswith(("/dev/nvidia", "char-nvidia")) for a in d["DeviceAllow"])
    out = d["ExecStart"][0]
    assert "--format prometheus" in out and "--output /var/lib/prometheus/node-exporter/gpufit.prom" in out
    # warnings/critical still wrote the report: not a failed unit
    assert set(d["SuccessExitStatus"][0].split()) == {"4", "5"}
    t = _directives("gpufit-report.timer")
    assert t["Persistent"] == ["true"] and t["WantedBy"] == ["timers.target"]


def test_preflight_runs_gpufit_check_before_the_server():
    d = _directives("vllm-preflight.conf")
    pre = d["ExecStartPre"][0]
    # the server's own command line after `--`, so its flags are written once
    assert pre.startswith(GPUFIT + " check ") and " -- vllm serve " in pre


def test_the_units_exact_command_works_after_a_plain_install(tmp_path):
    """ExecStart= of gpufit-report.service, run as written (only the binary's and the textfile's paths
    point into this test): prometheus_client comes with the base install, so the command writes a valid
    textfile and exits with a code the unit accepts (0, or 4/5 of SuccessExitStatus=) — never 1 for a
    missing module. Without a GPU here that is exit 5 and gpufit_report_success 0."""
    import os
    import shlex
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    unit = (UNITS / "gpufit-report.service").read_text()
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == GPUFIT
    exe = Path(sys.executable).with_name("gpufit")
    assert exe.is_file(), "the console script pip installs beside this interpreter"
    out_at = argv.index("--output") + 1
    textfile = tmp_path / Path(argv[out_at]).name
    argv = [str(exe), *argv[1:out_at], str(textfile), *argv[out_at + 1:]]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "GPUFIT_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    ok = {0} | {int(c) for c in re.search(r"^SuccessExitStatus=(.*)$", unit, re.M).group(1).split()}
    assert r.returncode in ok, r.stderr
    assert "internal error" not in r.stderr and "No module named" not in r.stderr
    names = {f.name for f in text_string_to_metric_families(textfile.read_text())}
    assert "gpufit_report_success" in names
