"""Local model stores in a temporary home, laid out as the tools write them: the Hugging Face hub cache
(refs/, blobs/, snapshots/ of relative symlinks, an unfinished download as blobs/*.incomplete), Ollama's
store (manifests/registry.ollama.ai/library/NAME/TAG -> blobs/sha256-HEX), LM Studio's models folder and
llama.cpp's flat -hf cache. Weight files come from the real safetensors and gguf writers; byte counts are
the hand-computed ones of test_modelfile.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

gguf = pytest.importorskip("gguf")
st_numpy = pytest.importorskip("safetensors.numpy")

from gpufit.app import resolve_model  # noqa: E402
from gpufit.catalog import load_catalog  # noqa: E402
from gpufit.cli import cli  # noqa: E402
from gpufit.errors import ExitCode, ModelFileError, UsageError  # noqa: E402
from gpufit.modelfile.stores import list_local  # noqa: E402
from test_modelfile import (EMBED, FINAL_NORM, GGUF_HEAD, GGUF_LAYER, HEAD, LAYER_BYTES, L,  # noqa: E402
                            llama_config, llama_tensors, write_gguf)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
FULL = EMBED + L * LAYER_BYTES + FINAL_NORM + HEAD  # 181,504 bytes: every tensor of the tiny Llama
GGUF_BYTES = EMBED + L * GGUF_LAYER + FINAL_NORM + GGUF_HEAD


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for k in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "OLLAMA_MODELS", "LLAMA_CACHE",
              "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    return h


def _blob(repo: Path, data: bytes) -> str:
    etag = hashlib.sha256(data).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "blobs" / etag).write_bytes(data)
    return etag


def _link(repo: Path, commit: str, name: str, etag: str) -> Path:
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    link = snap / name
    link.symlink_to(os.path.join("..", "..", "blobs", etag))  # as huggingface_hub does: relative
    return link


def hf_repo(hub: Path, repo_id: str, *, shards: int = 1, present: int | None = None, commit: str = COMMIT,
            ref: str | None = "main", config: dict | None = None, weights: bool = True) -> Path:
    """A cached repo: config.json and the tiny Llama's tensors in `shards` files, of which `present`
    finished downloading (the others are blobs/*.incomplete with no snapshot entry)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    tmp = hub.parent / f"build-{commit}"
    tmp.mkdir(parents=True, exist_ok=True)
    _link(repo, commit, "config.json", _blob(repo, json.dumps(config or llama_config()).encode()))
    if weights:
        t = llama_tensors()
        names = sorted(t)
        parts = [names[i::shards] for i in range(shards)]
        wm = {}
        for i, part in enumerate(parts):
            fname = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            st_numpy.save_file({n: t[n] for n in part}, str(tmp / fname))
            data = (tmp / fname).read_bytes()
            if present is None or i < present:
                _link(repo, commit, fname, _blob(repo, data))
            else:
                (repo / "blobs" / (hashlib.sha256(data).hexdigest() + ".incomplete")).write_bytes(data[:100])
            wm.update({n: fname for n in part})
        if shards > 1:
            index = {"metadata": {"total_size": FULL}, "weight_map": wm}
            _link(repo, commit, "model.safetensors.index.json", _blob(repo, json.dumps(index).encode()))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


def ollama_model(root: Path, name: str, tag: str = "latest", projector: bytes | None = None,
                 skip_blob: bool = False) -> Path:
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    g = write_gguf(root / "tmp.gguf")
    data = g.read_bytes()
    g.unlink()
    layers = []
    for media, content in (("application/vnd.ollama.image.model", data),
                           ("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
                           ("application/vnd.ollama.image.projector", projector)):
        if content is None:
            continue
        digest = hashlib.sha256(content).hexdigest()
        if not (skip_blob and media.endswith("model")):
            (blobs / f"sha256-{digest}").write_bytes(content)
        layers.append({"mediaType": media, "digest": f"sha256:{digest}", "size": len(content)})
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"schemaVersion": 2,
                                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                               "digest": "sha256:" + "0" * 64, "size": 2},
                                    "layers": layers}))
    return manifest


# ---- Hugging Face cache -------------------------------------------------------------------------


def test_repo_id_in_the_default_cache_wins_over_the_catalog_and_names_the_files(home):
    hf_repo(home / ".cache" / "huggingface" / "hub", "meta-llama/Meta-Llama-3-8B")
    cat = load_catalog()
    assert cat.has_model("meta-llama/Meta-Llama-3-8B")
    ch = resolve_model("meta-llama/Meta-Llama-3-8B", cat)
    assert ch.weights_bytes_exact == FULL and ch.spec.layers == L  # the tiny file, not the catalog's 8B
    assert ch.spec.hf_repo == "meta-llama/Meta-Llama-3-8B"
    text = " ".join(ch.notes)
    assert "instead of the catalog entry" in text
    assert "read config.json, model.safetensors in " in text and text.count(f"snapshots/{COMMIT}") == 1
    assert f"revision {COMMIT}" in text


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HF_HOME"])
def test_cache_location_from_the_environment(home, tmp_path, monkeypatch, var):
    hub = tmp_path / "elsewhere" / ("hub" if var == "HF_HOME" else "")
    hf_repo(hub, "acme/Tiny-Llama")
    monkeypatch.setenv(var, str(hub.parent if var == "HF_HOME" else hub))
    assert resolve_model("acme/tiny-llama", load_catalog()).weights_bytes_exact == FULL  # case-insensitive id


def test_repo_folder_itself_is_accepted_not_only_the_snapshot(home):
    repo = hf_repo(home / "hub", "acme/Tiny-Llama")
    ch = resolve_model(str(repo), load_catalog())
    assert ch.weights_bytes_exact == FULL and ch.spec.name == "Tiny-Llama"


def test_revision_by_branch_and_by_commit(home):
    hub = home / ".cache" / "huggingface" / "hub"
    hf_repo(hub, "acme/Tiny-Llama")
    hf_repo(hub, "acme/Tiny-Llama", commit=OTHER, ref="dev", config=llama_config(max_position_embeddings=1024))
    cat = load_catalog()
    assert resolve_model("acme/Tiny-Llama", cat).spec.max_context == 4096  # refs/main
    assert resolve_model("acme/Tiny-Llama", cat, revision="dev").spec.max_context == 1024
    assert resolve_model("acme/Tiny-Llama@" + OTHER, cat).spec.max_context == 1024
    with pytest.raises(UsageError) as ei:
        resolve_model("acme/Tiny-Llama", cat, revision="v9")
    assert "refs: dev, main" in str(ei.value)


def test_incomplete_download_is_a_warning_naming_the_shards_and_sized_from_the_index(home):
    hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Tiny-Llama", shards=4, present=1)
    r = CliRunner().invoke(cli, ["plan", "acme/Tiny-Llama", "--gpu", "rtx-3090", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["memory"]["weights_bytes"] == FULL  # metadata.total_size, not the one shard on disk
    warn = " ".join(w["message"] for w in out["warnings"])
    assert "3 of 4 shards missing" in warn
    for i in (2, 3, 4):
        assert f"model-0000{i}-of-00004.safetensors" in warn


def test_dangling_snapshot_symlink_is_exit_6_naming_the_file(home):
    repo = hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Tiny-Llama")
    target = (repo / "snapshots" / COMMIT / "model.safetensors").resolve()
    target.unlink()
    r = CliRunner().invoke(cli, ["plan", "acme/Tiny-Llama", "--gpu", "rtx-3090"])
    assert r.exit_code == ExitCode.BAD_DATA
    assert f"snapshots/{COMMIT}/model.safetensors" in r.stderr and "missing" in r.stderr


def test_invalid_index_json_is_exit_6_naming_it(home):
    repo = hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Tiny-Llama", shards=2)
    (repo / "snapshots" / COMMIT / "model.safetensors.index.json").resolve().write_text("{not json")
    with pytest.raises(ModelFileError) as ei:
        resolve_model("acme/Tiny-Llama", load_catalog())
    assert "model.safetensors.index.json" in str(ei.value) and "not valid JSON" in str(ei.value)


def test_unknown_hf_id_says_to_fetch_its_config(home):
    r = CliRunner().invoke(cli, ["plan", "nobody/Unheard-Of-7B", "--gpu", "rtx-3090"])
    assert r.exit_code == ExitCode.USAGE
    assert "config.json" in r.stderr and "huggingface.co/nobody/Unheard-Of-7B/resolve/main/config.json" in r.stderr


# ---- config.json alone --------------------------------------------------------------------------


def test_config_json_file_plans_from_the_architecture_with_quant(tmp_path, home):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(llama_config()))
    r = CliRunner().invoke(cli, ["plan", str(cfg), "--gpu", "rtx-3090", "--quant", "int8", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["quant"] == "int8"
    assert any("alone (no weights)" in n and "estimated from the config" in n for n in (x["message"] for x in out["notes"]))
    # the architecture's parameters: embed + head + 2 layers + final norm, elements (not bytes)
    params = 128 * 64 * 2 + 2 * (64 * 64 * 2 + 2 * 32 * 64 + 3 * 128 * 64 + 2 * 64) + 64
    assert out["model"]["params"] == params


def test_config_only_folder_in_the_cache_defaults_to_torch_dtype(home):
    hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Config-Only", weights=False)
    ch = resolve_model("acme/Config-Only", load_catalog())
    assert ch.weights_bytes_exact is None and ch.file_quant is None and ch.spec.native_dtype == "bf16"
    assert any("estimated from the config" in n for n in ch.notes)


def test_fp8_config_defaults_to_its_quantization_config(tmp_path, home):
    folder = tmp_path / "fp8-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_config(
        quantization_config={"quant_method": "fp8", "activation_scheme": "dynamic"})))
    ch = resolve_model(str(folder), load_catalog())
    assert ch.spec.native_dtype == "fp8" and ch.weights_bytes_exact is None


# ---- Ollama -------------------------------------------------------------------------------------


def test_ollama_name_reads_the_model_blob_and_counts_the_projector(home):
    ollama_model(home / ".ollama" / "models", "tinyllama", "q8", projector=b"\0" * 4096)
    ch = resolve_model("tinyllama:q8", load_catalog())
    assert ch.weights_bytes_exact == GGUF_BYTES + 4096
    assert ch.file_quant == "q8_0" and ch.spec.key == "tinyllama-q8"
    assert "projector" in ch.weights_source
    assert any("read sha256-" in n and n.endswith(".ollama/models/blobs") for n in ch.notes)


def test_ollama_default_tag_and_models_env(tmp_path, home, monkeypatch):
    root = tmp_path / "ollama-store"
    ollama_model(root, "tinyllama")
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    r = CliRunner().invoke(cli, ["plan", "tinyllama", "--gpu", "rtx-3090", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["memory"]["weights_bytes"] == GGUF_BYTES and out["engine"] == "llama.cpp"


def test_manifest_naming_a_missing_blob_is_exit_6(home):
    m = ollama_model(home / ".ollama" / "models", "tinyllama", skip_blob=True)
    r = CliRunner().invoke(cli, ["plan", "tinyllama", "--gpu", "rtx-3090"])
    assert r.exit_code == ExitCode.BAD_DATA
    assert str(m) in r.stderr and "missing" in r.stderr


def test_invalid_manifest_json_is_exit_6(home):
    m = ollama_model(home / ".ollama" / "models", "tinyllama")
    m.write_text("{")
    with pytest.raises(ModelFileError) as ei:
        resolve_model("tinyllama", load_catalog())
    assert str(m) in str(ei.value)


# ---- LM Studio, llama.cpp, two stores, listing --------------------------------------------------


def test_lm_studio_publisher_repo_file(home):
    repo = home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-Llama-GGUF"
    repo.mkdir(parents=True)
    write_gguf(repo / "Tiny-Llama-Q8_0.gguf")
    cat = load_catalog()
    for name in ("lmstudio-community/Tiny-Llama-GGUF", "lmstudio-community/Tiny-Llama-GGUF/Tiny-Llama-Q8_0.gguf"):
        assert resolve_model(name, cat).weights_bytes_exact == GGUF_BYTES
    write_gguf(repo / "Tiny-Llama-Q4.gguf")
    with pytest.raises(UsageError) as ei:
        resolve_model("lmstudio-community/Tiny-Llama-GGUF", cat)
    assert "Tiny-Llama-Q4.gguf" in str(ei.value) and "name one" in str(ei.value)


def test_llama_cpp_flat_cache_with_manifest(home, tmp_path, monkeypatch):
    cache = tmp_path / "llama-cache"
    cache.mkdir()
    write_gguf(cache / "ggml-org_Tiny-GGUF_tiny-q8_0.gguf")
    (cache / "manifest=ggml-org=Tiny-GGUF=latest.json").write_text(json.dumps({"ggufFile": {"rfilename": "tiny-q8_0.gguf"}}))
    monkeypatch.setenv("LLAMA_CACHE", str(cache))
    ch = resolve_model("ggml-org/Tiny-GGUF", load_catalog())
    assert ch.weights_bytes_exact == GGUF_BYTES


def test_id_in_two_stores_says_which_copy_was_used(home):
    hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Tiny-Llama")
    repo = home / ".lmstudio" / "models" / "acme" / "Tiny-Llama"
    repo.mkdir(parents=True)
    write_gguf(repo / "tiny.gguf")
    r = CliRunner().invoke(cli, ["plan", "acme/Tiny-Llama", "--gpu", "rtx-3090"])
    assert r.exit_code == 0, r.output
    assumed = r.stdout.split("Assumed:")[1]
    assert "is in 2 local stores: the huggingface copy" in assumed and "lm-studio" in assumed


def test_models_local_lists_every_store_and_fits_with_a_snapshot(home, tmp_path):
    hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Tiny-Llama", shards=2, present=1)
    ollama_model(home / ".ollama" / "models", "tinyllama", "q8")
    rows = list_local()
    got = {(e.name, e.store, e.format) for e in rows}
    assert got == {("acme/Tiny-Llama", "huggingface", "safetensors"), ("tinyllama:q8", "ollama", "gguf")}
    hf = next(e for e in rows if e.store == "huggingface")
    assert hf.missing == ("model-00002-of-00002.safetensors",)
    r = CliRunner().invoke(cli, ["models", "--local", "--json"])
    assert r.exit_code == 0, r.output
    assert {x["name"] for x in json.loads(r.stdout)} == {"acme/Tiny-Llama", "tinyllama:q8"}
    # a GTX 1050 (a real capture, compute capability 6.1): the safetensors model's default engine, vLLM, needs
    # 7.0 and refuses; the GGUF runs in what is free
    cap = Path(__file__).parent / "fixtures" / "nvidia-smi" / "GuanceCloud_datakit__gtx-1050-1.xml"
    r = CliRunner().invoke(cli, ["models", "--local", "--snapshot", str(cap), "--json"])
    assert r.exit_code == 0, r.output
    verdicts = {x["name"]: x["verdict"] for x in json.loads(r.stdout)}
    assert verdicts == {"acme/Tiny-Llama": "no_fit", "tinyllama:q8": "fits"}


def test_revision_option_on_the_command_line(home):
    hub = home / ".cache" / "huggingface" / "hub"
    hf_repo(hub, "acme/Tiny-Llama")
    hf_repo(hub, "acme/Tiny-Llama", commit=OTHER, ref="dev", config=llama_config(max_position_embeddings=1024))
    r = CliRunner().invoke(cli, ["plan", "acme/Tiny-Llama", "--revision", "dev", "--gpu", "rtx-3090", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["context"] == 1024
    r = CliRunner().invoke(cli, ["plan", "acme/Tiny-Llama", "--revision", "nope", "--gpu", "rtx-3090"])
    assert r.exit_code == ExitCode.USAGE and "no such ref or snapshot" in r.stderr


def test_ref_naming_a_missing_snapshot_is_exit_6(home):
    repo = hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Tiny-Llama")
    (repo / "refs" / "main").write_text(OTHER)
    r = CliRunner().invoke(cli, ["plan", "acme/Tiny-Llama", "--gpu", "rtx-3090"])
    assert r.exit_code == ExitCode.BAD_DATA
    assert "refs/main" in r.stderr and OTHER in r.stderr


def test_lm_studio_mmproj_is_counted_beside_the_model(home):
    repo = home / ".lmstudio" / "models" / "pub" / "Vision-GGUF"
    repo.mkdir(parents=True)
    write_gguf(repo / "model-Q8_0.gguf")
    (repo / "mmproj-model-f16.gguf").write_bytes(b"\0" * 1000)
    ch = resolve_model("pub/Vision-GGUF", load_catalog())
    assert ch.weights_bytes_exact == GGUF_BYTES + 1000
    assert any("mmproj-model-f16.gguf" in n for n in ch.notes)


def test_models_local_with_a_broken_store_is_exit_6(home):
    ollama_model(home / ".ollama" / "models", "tinyllama", skip_blob=True)
    r = CliRunner().invoke(cli, ["models", "--local"])
    assert r.exit_code == ExitCode.BAD_DATA and "missing" in r.stderr


def test_config_only_repo_is_listed_as_such(home):
    hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Config-Only", weights=False)
    (e,) = list_local()
    assert (e.name, e.format, e.bytes) == ("acme/Config-Only", "config.json", 0)


def test_a_json_that_is_no_config_is_a_usage_error(tmp_path, home):
    f = tmp_path / "notes.json"
    f.write_text('{"hello": 1}')
    r = CliRunner().invoke(cli, ["plan", str(f), "--gpu", "rtx-3090"])
    assert r.exit_code == ExitCode.USAGE and "is a file but not a model" in r.stderr


def test_gemma3_style_gguf_with_the_vision_tower_inside_says_it_counted_it(home):
    vision = np.zeros((64, 64), np.float16)  # 8192 bytes of "v.*" tensors

    def extra(w):
        w.add_tensor("v.patch_embd.weight", vision)

    root = home / ".lmstudio" / "models" / "pub" / "Gemma-GGUF"
    root.mkdir(parents=True)
    write_gguf(root / "gemma.gguf", extra=extra)
    ch = resolve_model("pub/Gemma-GGUF", load_catalog())
    assert ch.weights_bytes_exact == GGUF_BYTES + 8192
    assert any("8192 bytes of vision-tower" in n for n in ch.notes)


def test_cached_repo_with_only_a_tokenizer_falls_through_to_the_catalog(home):
    repo = home / ".cache" / "huggingface" / "hub" / "models--meta-llama--Meta-Llama-3-8B"
    _link(repo, COMMIT, "tokenizer.json", _blob(repo, b"{}"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    ch = resolve_model("meta-llama/Meta-Llama-3-8B", load_catalog())
    assert ch.spec.key == "llama3-8b" and ch.weights_bytes_exact is None


def test_single_file_download_in_progress_is_a_warning_not_a_silent_config_estimate(home):
    repo = hf_repo(home / ".cache" / "huggingface" / "hub", "acme/Tiny-Llama", weights=False)
    (repo / "blobs" / ("ab" * 32 + ".incomplete")).write_bytes(b"\0" * 10)
    r = CliRunner().invoke(cli, ["plan", "acme/Tiny-Llama", "--gpu", "rtx-3090", "--json"])
    assert r.exit_code == 0, r.output
    warn = " ".join(w["message"] for w in json.loads(r.stdout)["warnings"])
    assert "did not finish" in warn and "config.json alone" in warn


@pytest.mark.parametrize("arch,family", [("glm4moe", "glm4.5"), ("smollm3", "smollm3"), ("olmo2", "olmo2"),
                                         ("granite", "granite3"), ("qwen3vl", "qwen3-vl")])
def test_new_standard_gguf_architectures_read_from_an_ollama_store(home, arch, family):
    g = write_gguf(home / "tmp.gguf", arch=arch)
    data = g.read_bytes()
    blobs = home / ".ollama" / "models" / "blobs"
    blobs.mkdir(parents=True)
    digest = hashlib.sha256(data).hexdigest()
    (blobs / f"sha256-{digest}").write_bytes(data)
    m = home / ".ollama" / "models" / "manifests" / "registry.ollama.ai" / "library" / "newarch" / "latest"
    m.parent.mkdir(parents=True)
    m.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)}]}))
    ch = resolve_model("newarch", load_catalog())
    assert ch.spec.family == family and ch.weights_bytes_exact == GGUF_BYTES


def _hybrid_gguf(path: Path, arch: str, layers: int, kv, ff, meta) -> Path:
    """A GGUF with a hybrid's metadata as llama.cpp's converter writes it (per-layer head_count_kv /
    feed_forward_length arrays, ssm.* sizes); the tensor table is a token embedding and a norm."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(kv)
    w.add_feed_forward_length(ff)
    w.add_key_length(16)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_token_list([f"t{i}" for i in range(128)])
    meta(w)
    w.add_tensor("token_embd.weight", np.zeros((128, 64), np.float16))
    w.add_tensor("output_norm.weight", np.zeros(64, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _ssm(conv, inner, state, groups, rank):
    def meta(w):
        w.add_ssm_conv_kernel(conv)
        w.add_ssm_inner_size(inner)
        w.add_ssm_state_size(state)
        w.add_ssm_group_count(groups)
        w.add_ssm_time_step_rank(rank)
    return meta


def test_qwen3next_gguf_reads_its_deltanet_layers(tmp_path):
    from gpufit.modelfile.gguf_file import load_gguf

    def meta(w):
        _ssm(4, 4 * 16, 16, 2, 4)(w)  # 2 key heads of 16, 4 value heads of 16
        w.add_full_attention_interval(4)
    mf = load_gguf(_hybrid_gguf(tmp_path / "qn.gguf", "qwen3next", 8, 2, 128, meta))
    s = mf.spec
    assert (s.linear_layers, s.linear_key_heads, s.linear_value_heads, s.linear_key_head_dim,
            s.linear_value_head_dim, s.linear_conv_kernel, s.attn_output_gate) == (6, 2, 4, 16, 16, 4, True)
    assert s.linear_state_elems == (2 * 2 * 16 + 4 * 16) * 3 + 4 * 16 * 16


def test_granitehybrid_gguf_counts_mamba_layers_from_the_kv_array(tmp_path):
    from gpufit.modelfile.gguf_file import load_gguf

    kv = [0, 0, 0, 2, 0, 0, 0, 2]
    mf = load_gguf(_hybrid_gguf(tmp_path / "g.gguf", "granitehybrid", 8, kv, 128, _ssm(4, 128, 16, 1, 8)))
    s = mf.spec
    assert (s.linear_layers, s.mamba_heads, s.mamba_head_dim, s.mamba_state, s.kv_heads) == (6, 8, 16, 16, 2)
    assert s.linear_state_elems == (128 + 2 * 16) * 3 + 128 * 16


def test_nemotron_h_gguf_tells_mamba_attention_and_mlp_layers_apart(tmp_path):
    from gpufit.modelfile.gguf_file import load_gguf

    pattern = "M-M*M-"
    kv = [2 if c == "*" else 0 for c in pattern]
    ff = [128 if c == "-" else 0 for c in pattern]
    mf = load_gguf(_hybrid_gguf(tmp_path / "n.gguf", "nemotron_h", 6, kv, ff, _ssm(4, 128, 16, 2, 8)))
    s = mf.spec
    assert (s.single_sublayer, s.linear_layers, s.mlp_only_layers, s.intermediate, s.mlp) == (True, 3, 2, 128, "plain")


def test_hybrid_gguf_without_the_per_layer_array_names_the_key(tmp_path):
    from gpufit.modelfile.gguf_file import load_gguf

    with pytest.raises(ModelFileError) as ei:
        load_gguf(_hybrid_gguf(tmp_path / "g.gguf", "granitehybrid", 8, 2, 128, _ssm(4, 128, 16, 1, 8)))
    assert "granitehybrid.attention.head_count_kv" in str(ei.value) and ei.value.exit_code == 6


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_store_this_user_cannot_list_is_skipped_not_a_traceback(home):
    hub = home / ".cache" / "huggingface" / "hub"
    hub.mkdir(parents=True)
    hub.chmod(0)
    try:
        assert resolve_model("llama3-8b", load_catalog()).spec.key == "llama3-8b"
        assert list_local() == []
    finally:
        hub.chmod(0o755)


def test_nemotron_h_moe_gguf_reads_its_moe_sublayers(tmp_path):
    """Nemotron 3 Nano as llama.cpp converts it (arch nemotron_h_moe): 'E' layers are MLP-only layers
    (head_count_kv 0, feed_forward_length > 0) holding routed experts and a shared expert."""
    from gpufit.modelfile.gguf_file import load_gguf

    pattern = "MEM*EM"
    kv = [2 if c == "*" else 0 for c in pattern]
    ff = [32 if c == "E" else 0 for c in pattern]
    ssm = _ssm(4, 128, 16, 2, 8)

    def meta(w):
        ssm(w)
        w.add_expert_count(16)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(32)
        w.add_expert_shared_feed_forward_length(64)
        w.add_expert_shared_count(1)

    s = load_gguf(_hybrid_gguf(tmp_path / "n.gguf", "nemotron_h_moe", 6, kv, ff, meta)).spec
    assert (s.family, s.single_sublayer, s.linear_layers, s.mlp_only_layers, s.mlp) == ("nemotron-h", True, 3, 2, "plain")
    assert (s.experts, s.experts_active, s.moe_intermediate, s.shared_experts) == (16, 2, 32, 2)
