"""One writer for every file gpufit writes, one bounded reader for the files it reads (issue 11, items 3/4).

The writer refuses an empty path, a folder, a device, a FIFO and any symlink, and leaves what was there as
it was; a regular file is replaced atomically (temp in the same folder, fsync, rename). The reader reads
only regular files, at most a bound, so /dev/zero or a FIFO never hangs a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpufit.cli import cli
from gpufit.errors import SnapshotError, WriteError
from gpufit.fsutil import read_data_file, write_atomic

FIX = Path(__file__).parent / "fixtures" / "nvidia-smi"
XML = FIX / "influxdata_telegraf__rtx-3090-v12.xml"


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_regular_file_is_replaced_whole_and_keeps_its_mode(tmp_path):
    out = tmp_path / "box.json"
    write_atomic(out, "one\n")
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    out.chmod(0o640)
    write_atomic(out, b"two\n")
    assert out.read_text() == "two\n" and oct(out.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in tmp_path.iterdir()] == ["box.json"]


def test_empty_path_is_refused_with_a_reason_not_device_busy():
    with pytest.raises(WriteError, match="empty path") as e:
        write_atomic("", "x")
    assert e.value.exit_code == 2


def test_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("k")
    with pytest.raises(WriteError, match="is a folder"):
        write_atomic(tmp_path / "d", "x")
    assert (tmp_path / "d" / "keep").read_text() == "k"


def test_device_node_is_refused():
    before = os.stat("/dev/null")
    with pytest.raises(WriteError, match="is a device"):
        write_atomic("/dev/null", "x")
    after = os.stat("/dev/null")
    assert (before.st_ino, before.st_rdev) == (after.st_ino, after.st_rdev)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="FIFO"):
        write_atomic(fifo, "x")
    assert fifo.is_fifo()


def test_symlink_to_a_regular_file_is_refused_and_both_are_kept(tmp_path):
    real = tmp_path / "real.prom"
    real.write_text("old\n")
    link = tmp_path / "gpufit.prom"
    link.symlink_to(real)
    with pytest.raises(WriteError, match="symlink") as e:
        write_atomic(link, "new\n")
    assert str(real) in str(e.value), "the message names the real path to use instead"
    assert link.is_symlink() and real.read_text() == "old\n"


def test_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "out"
    link.symlink_to("/dev/null")
    with pytest.raises(WriteError, match="symlink"):
        write_atomic(link, "x")
    assert link.is_symlink()


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(WriteError, match="No such file or directory"):
        write_atomic(tmp_path / "nope" / "out.json", "x")


def test_probe_save_refuses_a_folder_a_symlink_and_an_empty_path_with_exit_2(tmp_path):
    (tmp_path / "d").mkdir()
    real = tmp_path / "real.json"
    real.write_text("{}")
    (tmp_path / "link.json").symlink_to(real)
    for target, needle in ((tmp_path / "d", "is a folder"), (tmp_path / "link.json", "symlink"), ("", "empty path")):
        r = run("probe", "--snapshot", str(XML), "--save", str(target))
        assert r.exit_code == 2, (target, r.output)
        assert needle in r.stderr and "Traceback" not in r.output
    assert real.read_text() == "{}"


def test_report_output_to_dev_stdout_or_empty_is_refused_not_replaced(tmp_path):
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    for target, needle in (("/dev/stdout", "symlink"), ("", "empty path"), ("/dev/null", "is a device")):
        r = run("report", "--format", "prometheus", "--output", target, "--config", str(cfg), "--snapshot", str(XML))
        assert r.exit_code == 2, (target, r.output)
        assert needle in r.stderr and "busy" not in r.stderr
    assert Path("/dev/null").is_char_device()


def test_probe_save_writes_through_the_one_writer(tmp_path):
    out = tmp_path / "box.json"
    r = run("probe", "--snapshot", str(XML), "--save", str(out))
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["schema"] == "gpufit.snapshot/1"
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_catalog_cache_never_writes_through_a_symlink(tmp_path, monkeypatch):
    """The cache goes through the same writer: a symlink planted at the cache entry's name is not
    followed (the file it points to is untouched) and the catalog still loads."""
    from gpufit.catalog import loader

    monkeypatch.setenv("GPUFIT_CACHE_DIR", str(tmp_path))
    src = tmp_path / "extra.toml"
    src.write_text('[[quant]]\nkey = "myq"\nname = "my q"\nkind = "int"\nbits_per_weight = 4.0\nsource = "test"\n')
    victim = tmp_path / "victim"
    victim.write_text("precious")
    entry = loader._cache_entry(src.read_bytes())
    entry.symlink_to(victim)
    out = loader.load_file(src)
    assert [q.key for q in out["quant"]] == ["myq"]
    assert victim.read_text() == "precious" and entry.is_symlink()


# ---- reading ---------------------------------------------------------------------------------------


def test_dev_zero_as_a_snapshot_is_refused_at_once_with_exit_6():
    with pytest.raises(SnapshotError, match="is a device"):
        read_data_file("/dev/zero", 1 << 20, SnapshotError, "snapshot")
    r = run("here", "llama3-8b", "--snapshot", "/dev/zero")
    assert r.exit_code == 6 and "/dev/zero" in r.stderr


def test_fifo_as_a_snapshot_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    r = run("here", "llama3-8b", "--snapshot", str(fifo))
    assert r.exit_code == 6 and "FIFO" in r.stderr


def test_missing_unreadable_folder_and_oversized_snapshots_all_exit_6(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(65 * 2**20)  # sparse: costs no disk
    cases = {"missing": tmp_path / "nope.json", "folder": tmp_path, "oversized": big}
    for what, path in cases.items():
        r = run("here", "llama3-8b", "--snapshot", str(path))
        assert r.exit_code == 6, (what, r.output)
        assert str(path) in r.stderr
    r = run("here", "llama3-8b", "--snapshot", "")
    assert r.exit_code == 6 and "empty path" in r.stderr


def test_missing_or_folder_config_exits_6(tmp_path):
    for path in (tmp_path / "nope.toml", tmp_path):
        r = run("report", "--config", str(path), "--snapshot", str(XML))
        assert r.exit_code == 6, r.output


def test_report_that_cannot_write_even_its_failure_exits_2_not_5(tmp_path):
    """No probe here and an output path that is a folder: monitoring gets nothing, so the exit says the
    write failed (2, which fails the systemd unit) rather than 5 (which the unit counts as success)."""
    cfg = tmp_path / "gpufit.toml"
    cfg.write_text("")
    (tmp_path / "out").mkdir()
    r = run("report", "--format", "prometheus", "--output", str(tmp_path / "out"), "--config", str(cfg),
            "--snapshot", str(tmp_path / "missing.json"))
    assert r.exit_code == 2 and "missing.json" in r.stderr and "is a folder" in r.stderr


def test_a_symlinked_folder_on_the_way_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    write_atomic(tmp_path / "via" / "gpufit.prom", "a 1\n")
    assert (tmp_path / "real" / "gpufit.prom").read_text() == "a 1\n"


# ---- one typed reader for snapshots and catalog tables (issue 14: one JSON->dataclass reader) ---------------


def _snapshot_dict() -> dict:
    from gpufit.probe import load_snapshot

    return json.loads(load_snapshot(XML).to_json())


def _snapshot_error(data: dict) -> SnapshotError:
    from gpufit.probe.snapshot import Snapshot

    with pytest.raises(SnapshotError) as e:
        Snapshot.from_dict(data, "box.json")
    return e.value


def test_a_snapshot_round_trips_through_the_reader_and_ignores_keys_a_newer_writer_adds():
    from gpufit.probe import load_snapshot
    from gpufit.probe.snapshot import Snapshot

    d = _snapshot_dict()
    d["gpus"][0]["added_by_a_newer_gpufit"] = 1
    d["host"]["also_new"] = "x"
    back = Snapshot.from_dict(d, "box.json")
    assert back == load_snapshot(XML)
    assert isinstance(back.gpus, tuple) and isinstance(back.gpus[0].processes, tuple)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["gpus"][0]["memory"].update(total="24 GiB"),
     "key 'gpus[0].memory.total' must be an integer, got '24 GiB'"),
    (lambda d: d["gpus"][0]["memory"].update(total=2**64),
     "key 'gpus[0].memory.total' is out of range (64-bit integers)"),
    (lambda d: d["gpus"][0]["memory"].update(total=True), "key 'gpus[0].memory.total' must be an integer, got True"),
    (lambda d: d["gpus"][0].update(power_w=float("nan")), "key 'gpus[0].power_w' must be a finite number, got nan"),
    (lambda d: d["gpus"][0].update(name=7), "key 'gpus[0].name' must be a string, got 7"),
    (lambda d: d["gpus"][0].update(errors={"fan": 3}), "key 'gpus[0].errors.fan' must be a string, got 3"),
    (lambda d: d.update(gpus={}), "key 'gpus' must be a list, got {}"),
    (lambda d: d.update(host=[]), "key 'host' must be an object, got []"),
    (lambda d: d.pop("host"), "missing required key 'host'"),
])
def test_a_snapshot_value_of_the_wrong_type_names_the_key_path(edit, message):
    d = _snapshot_dict()
    edit(d)
    e = _snapshot_error(d)
    assert e.path == "box.json" and e.detail.startswith(message), e.detail


def test_catalog_tables_go_through_the_same_reader_with_unknown_keys_refused(tmp_path):
    from gpufit.catalog.loader import load_file
    from gpufit.errors import CatalogError

    gpu = ('[[gpu]]\nkey = "lab-card"\nname = "Lab Card"\nvendor_class = "workstation"\narchitecture = "Ada"\n'
           'compute_capability = "8.9"\nmemory_bytes = 51539607552\nmemory_type = "GDDR6"\n'
           'bandwidth_gbps = {bw}\nsource = "test"\nnvml_names = {names}\n')
    rec = load_file(tmp_path / "ok.toml", gpu.format(bw=960, names='["NVIDIA Lab Card"]'), cache=False)["gpu"][0]
    assert rec.bandwidth_gbps == 960.0 and isinstance(rec.bandwidth_gbps, float)
    assert rec.nvml_names == ("NVIDIA Lab Card",)
    for bw, names, message in [
        ("inf", "[]", "key 'bandwidth_gbps' must be a finite number, got inf"),
        ('"960"', "[]", "key 'bandwidth_gbps' must be a number, got '960'"),
        ("960", "[1]", "key 'nvml_names[0]' must be a string, got 1"),
        ("960", '"NVIDIA Lab Card"', "key 'nvml_names' must be a list, got 'NVIDIA Lab Card'"),
    ]:
        with pytest.raises(CatalogError) as e:
            load_file(tmp_path / "bad.toml", gpu.format(bw=bw, names=names), cache=False)
        assert e.value.where == "[[gpu]] #1 key='lab-card'" and e.value.detail == message
    with pytest.raises(CatalogError) as e:
        load_file(tmp_path / "bad.toml", gpu.format(bw=960, names="[]") + "memory_gb = 48\n", cache=False)
    assert e.value.detail.startswith("unknown key 'memory_gb'; did you mean ")
