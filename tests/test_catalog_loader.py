"""The catalog loader refuses broken files with the file, entry and key named (exit 6)."""

import pytest

from gpufit.catalog import Catalog, pci_device_key
from gpufit.errors import CatalogError, ExitCode

MODEL = """
[[model]]
key = "tiny"
name = "Tiny"
family = "tiny"
layers = 2
hidden = 64
heads = 4
kv_heads = 2
head_dim = 16
intermediate = 128
vocab = 100
max_context = 512
source = "test"
{extra}
"""


def _load(tmp_path, text, name="x.toml"):
    p = tmp_path / name
    p.write_text(text)
    c = Catalog()
    c.add_file(p)
    return c


def test_valid_model_entry_loads(tmp_path):
    c = _load(tmp_path, MODEL.format(extra='aliases = ["tiny-1"]'))
    assert c.model("TINY-1").key == "tiny"


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    with pytest.raises(CatalogError) as e:
        _load(tmp_path, "[[model]]\nkey = \n")
    assert "x.toml" in str(e.value) and "line 2" in str(e.value)
    assert e.value.exit_code == ExitCode.BAD_DATA


def test_unknown_key_is_rejected_with_did_you_mean(tmp_path):
    with pytest.raises(CatalogError) as e:
        _load(tmp_path, MODEL.format(extra="kv_head = 2"))
    msg = str(e.value)
    assert "x.toml" in msg and "key='tiny'" in msg and "unknown key 'kv_head'; did you mean kv_heads" in msg


def test_wrong_type_names_the_key_and_value(tmp_path):
    with pytest.raises(CatalogError, match=r"'sliding_window' must be a integer, got 'big'|'sliding_window' must be an? integer"):
        _load(tmp_path, MODEL.format(extra='sliding_window = "big"'))


def test_missing_required_key(tmp_path):
    with pytest.raises(CatalogError, match="missing required key 'vocab'"):
        _load(tmp_path, MODEL.format(extra="").replace("vocab = 100\n", ""))


def test_heads_must_divide_by_kv_heads(tmp_path):
    with pytest.raises(CatalogError, match="multiple of kv_heads"):
        _load(tmp_path, MODEL.format(extra="").replace("kv_heads = 2", "kv_heads = 3"))


def test_duplicate_key_in_one_file(tmp_path):
    with pytest.raises(CatalogError, match="duplicate key 'tiny'"):
        _load(tmp_path, MODEL.format(extra="") + MODEL.format(extra=""))


def test_alias_naming_two_models_is_rejected(tmp_path):
    two = MODEL.format(extra='aliases = ["shared"]') + MODEL.format(extra='aliases = ["shared"]').replace(
        'key = "tiny"', 'key = "tiny2"')
    with pytest.raises(CatalogError, match="alias 'shared' already names model 'tiny'"):
        _load(tmp_path, two)


def test_user_addition_may_override_a_builtin_entry(tmp_path):
    c = _load(tmp_path, MODEL.format(extra=""))
    p = tmp_path / "user.toml"
    p.write_text(MODEL.format(extra="").replace("layers = 2", "layers = 4"))
    c.add_file(p, override=True)
    assert c.model("tiny").layers == 4


def test_unknown_table_is_rejected(tmp_path):
    with pytest.raises(CatalogError, match=r"unknown table \[\[gpus\]\]"):
        _load(tmp_path, '[[gpus]]\nkey = "x"\n')


def test_gguf_block_layout_must_agree_with_bits(tmp_path):
    text = """
[[quant]]
key = "q8_x"
name = "bad"
kind = "gguf"
bits_per_weight = 8.0
block_size = 32
type_size_bytes = 34
source = "test"
"""
    with pytest.raises(CatalogError, match=r"type_size_bytes\*8/block_size = 8.5"):
        _load(tmp_path, text)


@pytest.mark.parametrize("raw,expect", [
    ("0x220410DE", "2204"), ("220410DE", "2204"), (0x220410DE, "2204"), ("2204", "2204"),
    ("0x000000DE", None), ("12345678", None), ("[REDACTED]", None), (None, None),
])
def test_pci_device_key(raw, expect):
    assert pci_device_key(raw) == expect


def test_broken_builtin_catalog_exits_6_naming_file_and_entry(tmp_path, monkeypatch):
    import shutil

    from click.testing import CliRunner

    import gpufit.catalog as catalog_mod
    from gpufit.cli import cli as main

    data = tmp_path / "data"
    shutil.copytree(catalog_mod.DATA_DIR, data)
    text = (data / "models.toml").read_text().replace('key = "llama3-8b"', 'key = "Llama 3 8B"', 1)
    (data / "models.toml").write_text(text)
    monkeypatch.setattr(catalog_mod, "DATA_DIR", data)
    monkeypatch.setattr(catalog_mod, "_CACHE", {})
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 6
    assert "models.toml" in r.stderr and "Llama 3 8B" in r.stderr
    assert "Traceback" not in r.output


def test_validated_records_are_cached_and_rebuilt_equal(tmp_path, monkeypatch):
    from gpufit.catalog import loader

    monkeypatch.setenv("GPUFIT_CACHE_DIR", str(tmp_path / "cache"))
    p = tmp_path / "x.toml"
    p.write_text(MODEL.format(extra='aliases = ["tiny-1"]\nsliding_window = 64\nsliding_layers = 1'))
    first = loader.load_file(p)
    assert len(list((tmp_path / "cache").glob("catalog-*.json"))) == 1
    # a hit must not parse or validate again
    monkeypatch.setattr(loader, "validate_tables", lambda *a: pytest.fail("validated again"))
    second = loader.load_file(p)
    assert second == first and second["model"][0].aliases == ("tiny-1",)


def test_an_edited_file_is_validated_anew_not_served_from_the_cache(tmp_path, monkeypatch):
    from gpufit.catalog import loader

    monkeypatch.setenv("GPUFIT_CACHE_DIR", str(tmp_path / "cache"))
    p = tmp_path / "x.toml"
    p.write_text(MODEL.format(extra=""))
    loader.load_file(p)
    p.write_text(MODEL.format(extra="").replace("kv_heads = 2", "kv_heads = 3"))
    with pytest.raises(CatalogError, match="multiple of kv_heads"):
        loader.load_file(p)


def test_a_corrupt_or_unwritable_cache_is_ignored(tmp_path, monkeypatch):
    from gpufit.catalog import loader

    cache = tmp_path / "cache"
    monkeypatch.setenv("GPUFIT_CACHE_DIR", str(cache))
    p = tmp_path / "x.toml"
    p.write_text(MODEL.format(extra=""))
    good = loader.load_file(p)
    for entry in cache.glob("catalog-*.json"):
        entry.write_text('{"model": [{"nonsense": 1}]}')
    assert loader.load_file(p) == good
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("GPUFIT_CACHE_DIR", str(blocker / "sub"))
    assert loader.load_file(p) == good
