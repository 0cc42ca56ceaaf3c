"""gpufit.toml: defaults, merge order, and errors that name the file, the line and the key."""

from __future__ import annotations

import textwrap

import pytest

from gpufit.app.config import Config, Thresholds, check_models, default_paths, load_config
from gpufit.errors import ConfigError, ExitCode, UsageError
from gpufit.app.report import run_report

GPU_ENTRY = """
[[catalog.gpu]]
key = "lab-card-48g"
name = "Lab Card 48G"
vendor_class = "workstation"
architecture = "Ada"
compute_capability = "8.9"
memory_bytes = 51539607552
memory_type = "GDDR6"
bandwidth_gbps = 960.0
source = "vendor datasheet (test)"
nvml_names = ["NVIDIA Lab Card 48G"]
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def error_of(path) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return e.value


def test_no_config_files_gives_defaults():
    c = load_config(search=[])
    assert c == Config() and c.thresholds.temperature_crit_c == 90.0 and c.models == ()


def test_default_paths_follow_xdg(tmp_path):
    assert default_paths({"XDG_CONFIG_HOME": str(tmp_path)})[-1] == tmp_path / "gpufit" / "gpufit.toml"
    assert default_paths({"HOME": "/home/op"})[-1].as_posix() == "/home/op/.config/gpufit/gpufit.toml"
    assert default_paths({})[0].as_posix() == "/etc/gpufit/gpufit.toml"


def test_later_file_overrides_earlier(tmp_path):
    system = write(tmp_path, "etc/gpufit.toml", """
        [thresholds]
        temperature_warn_c = 70
        temperature_crit_c = 80
        [[model]]
        name = "llama3-8b"
        [[model]]
        name = "llama3-70b"
    """)
    user = write(tmp_path, "home/gpufit.toml", """
        [thresholds]
        temperature_crit_c = 85
        [[model]]
        name = "llama3-8b"
        quant = "int4"
        context = 4096
        engine = "vllm"
    """)
    c = load_config(search=[system, tmp_path / "missing.toml", user])
    assert c.thresholds.temperature_warn_c == 70 and c.thresholds.temperature_crit_c == 85
    assert [(m.name, m.quant, m.context, m.engine, m.batch) for m in c.models] == [
        ("llama3-8b", "int4", 4096, "vllm", 1)]
    assert c.files == (str(system), str(user))


def test_named_config_must_exist(tmp_path):
    e = error_of(tmp_path / "nope.toml")
    assert "nope.toml" in str(e) and "no such config file" in str(e)


def test_unknown_key_names_file_line_and_nearest_key(tmp_path):
    p = write(tmp_path, "gpufit.toml", """
        [thresholds]
        temperature_warn_c = 80

        temprature_crit_c = 95
    """)
    e = error_of(p)
    assert e.path == str(p)
    assert e.where == "line 5: thresholds.temprature_crit_c"
    assert "did you mean temperature_crit_c" in e.detail
    assert str(e).startswith(f"{p}: line 5: ")


def test_unknown_section(tmp_path):
    e = error_of(write(tmp_path, "gpufit.toml", "[treshold]\nx = 1\n"))
    assert e.where.startswith("line 1") and "did you mean thresholds" in e.detail


def test_bad_value_names_the_line_of_its_key(tmp_path):
    p = write(tmp_path, "gpufit.toml", """
        # comment
        [report]
        probe_timeout_s = 5

        [thresholds]
        power_near_limit_ratio = "high"
    """)
    e = error_of(p)
    assert e.where == "line 7: thresholds.power_near_limit_ratio" and "must be a number" in e.detail


def test_ratio_given_as_percent_is_rejected(tmp_path):
    e = error_of(write(tmp_path, "gpufit.toml", "[thresholds]\npower_near_limit_ratio = 95\n"))
    assert "ratio" in e.detail and e.where.startswith("line 2")


def test_warn_above_crit_is_rejected(tmp_path):
    e = error_of(write(tmp_path, "gpufit.toml", "[thresholds]\ntemperature_warn_c = 95\n"))
    assert "temperature_warn_c" in e.where and "must not exceed" in e.detail


def test_syntax_error_gives_tomllib_line(tmp_path):
    e = error_of(write(tmp_path, "gpufit.toml", "[thresholds]\n\ntemperature_warn_c = = 3\n"))
    assert e.where == "line 3" and "invalid TOML" in e.detail


def test_model_entries_are_checked_with_their_line(tmp_path):
    p = write(tmp_path, "gpufit.toml", """
        [[model]]
        name = "llama3-8b"

        [[model]]
        name = "llama3-70b"
        engine = "vlm"
    """)
    e = error_of(p)
    assert e.where == "line 7: [[model]] #2 engine" and "did you mean vllm" in e.detail
    for body, key in (('context = -1', "context"), ('batch = "2"', "batch"), ('gpu = 1', "gpu")):
        e = error_of(write(tmp_path, "m.toml", f'[[model]]\nname = "x"\n{body}\n'))
        assert e.where == f"line 3: [[model]] #1 {key}", (body, e)
    e = error_of(write(tmp_path, "m.toml", '[[model]]\nquant = "int4"\n'))
    assert e.where.startswith("line 1") and "'name'" in e.detail


def test_unknown_model_is_a_config_error_with_did_you_mean(tmp_path):
    p = write(tmp_path, "gpufit.toml", '[thresholds]\n\n[[model]]\nname = "llama3-8bb"\n')
    c = load_config(p)
    with pytest.raises(ConfigError) as e:
        check_models(c, c.catalog())
    assert e.value.path == str(p) and e.value.where == "line 3: [[model]] name"
    assert "llama3-8b" in e.value.detail


def test_inline_catalog_gpu_is_added_and_validated(tmp_path):
    c = load_config(write(tmp_path, "gpufit.toml", GPU_ENTRY))
    cat = c.catalog()
    assert cat.gpu("lab-card-48g").memory_bytes == 51539607552
    assert cat.match_gpu("NVIDIA Lab Card 48G").key == "lab-card-48g"
    bad = GPU_ENTRY.replace('memory_type = "GDDR6"\n', "").replace("bandwidth_gbps = 960.0", "bandwith_gbps = 960.0")
    e = error_of(write(tmp_path, "bad.toml", "# user cards\n" + bad))
    assert e.path.endswith("bad.toml") and e.where.startswith("line 3: [[catalog.gpu]]")
    assert "bandwith_gbps" in e.detail and "bandwidth_gbps" in e.detail


def test_catalog_files_are_relative_to_the_config(tmp_path):
    write(tmp_path, "conf/cards.toml", GPU_ENTRY.replace("[[catalog.gpu]]", "[[gpu]]"))
    c = load_config(write(tmp_path, "conf/gpufit.toml", '[catalog]\nfiles = ["cards.toml"]\n'))
    assert c.catalog().gpu("lab-card-48g").name == "Lab Card 48G"
    e = error_of(write(tmp_path, "conf/b.toml", '[catalog]\n\nfiles = ["nope.toml"]\n'))
    assert e.where == "line 3: catalog.files" and "nope.toml" in e.detail


def test_inline_entries_join_the_catalog_directly_and_leave_the_cached_one_alone(tmp_path, monkeypatch):
    from gpufit.catalog import load_catalog, loader

    base = load_catalog()
    built_in_3090 = base.gpu("rtx-3090")
    override = GPU_ENTRY.replace('key = "lab-card-48g"', 'key = "rtx-3090"').replace(
        'name = "Lab Card 48G"', 'name = "My RTX 3090"').replace(
        'nvml_names = ["NVIDIA Lab Card 48G"]', 'nvml_names = ["NVIDIA GeForce RTX 3090"]\naliases = ["my-3090"]')
    c = load_config(write(tmp_path, "gpufit.toml", GPU_ENTRY + override))
    monkeypatch.setattr(loader, "parse_toml", lambda *a, **k: pytest.fail("inline entries parsed as TOML"))
    cat = c.catalog()
    assert cat is not base
    lab = cat.gpu("lab-card-48g")
    assert lab.key == "lab-card-48g" and lab.bandwidth_gbps == 960.0 and lab.nvml_names == ("NVIDIA Lab Card 48G",)
    mine = cat.gpu("my-3090")
    assert mine.name == "My RTX 3090" and mine.memory_bytes == 51539607552
    assert cat.match_gpu("NVIDIA GeForce RTX 3090") is mine
    assert cat.files[-1] == str(tmp_path / "gpufit.toml")
    # the process-cached catalog every other command uses is as it was
    assert load_catalog() is base and base.gpu("rtx-3090") is built_in_3090
    assert built_in_3090.memory_bytes == 25769803776
    assert "lab-card-48g" not in base.gpus and base.match_gpu("NVIDIA Lab Card 48G") is None
    with pytest.raises(UsageError):
        base.gpu("my-3090")
    assert base.match_gpu("NVIDIA GeForce RTX 3090").key == "rtx-3090" and str(tmp_path) not in " ".join(base.files)
    # a config without inline entries gets the cached catalog itself
    assert load_config(write(tmp_path, "plain.toml", "[thresholds]\n")).catalog() is base


def test_two_inline_entries_with_one_key_in_one_file_are_a_config_error(tmp_path):
    c = load_config(write(tmp_path, "gpufit.toml", GPU_ENTRY + GPU_ENTRY))
    with pytest.raises(ConfigError) as e:
        c.catalog()
    assert e.value.path == str(tmp_path / "gpufit.toml")
    assert e.value.where == "[[catalog.gpu]] #2 key='lab-card-48g'" and e.value.detail == "duplicate key 'lab-card-48g'"


def test_invalid_config_makes_report_exit_6_naming_file_line_and_key(tmp_path, capsys):
    p = write(tmp_path, "gpufit.toml", "[thresholds]\ntemperature_warn_c = 80\nmax_temp = 9\n")
    out = tmp_path / "gpufit.prom"
    run = run_report("prometheus", str(out), str(p), snapshot_path=str(tmp_path / "unused.json"))
    assert run.exit_code == ExitCode.BAD_DATA == 6
    err = "\n".join(run.diagnostics)
    assert str(p) in err and "line 3" in err and "max_temp" in err
    # monitoring still learns that the report failed
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert fams["gpufit_report_success"].samples[0].value == 0


def test_thresholds_defaults_are_ordered():
    t = Thresholds()
    assert t.temperature_warn_c < t.temperature_crit_c
    assert t.host_ram_available_crit_ratio < t.host_ram_available_warn_ratio
    assert 0 < t.power_near_limit_ratio <= 1
