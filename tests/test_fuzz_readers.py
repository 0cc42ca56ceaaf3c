"""Fuzz the public readers (issue 11, item 6): whatever bytes a snapshot, capture or model file holds, only
a GpufitError subclass escapes — never a KeyError, RecursionError or OverflowError that the CLI would
report as "internal error (a bug)".

Inputs start from real files (the captures in tests/fixtures/nvidia-smi, model files written by the real
`safetensors` and `gguf` writers) and hypothesis mutates them: values swapped for placeholders, huge,
negative, non-finite or mistyped ones, keys dropped, bytes flipped, files truncated. A snapshot that loads
is also taken through what `here` and `report` do with it. Deterministic (derandomize, no example
database) and bounded: a few seconds in all.
"""

from __future__ import annotations

import copy
import json
import struct
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufit.errors import GpufitError

FIX = Path(__file__).parent / "fixtures"
XML = FIX / "nvidia-smi" / "influxdata_telegraf__dual_a5000-v13.xml"
MIG_XML = FIX / "nvidia-smi" / "influxdata_telegraf__a100-sxm4-v12.xml"
CSV = FIX / "handwritten" / "p100-no-memory-total.csv"

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_WORK = Path()  # the module's temporary folder, made and removed by _workdir


@pytest.fixture(scope="module", autouse=True)
def _workdir():
    global _WORK
    with tempfile.TemporaryDirectory(prefix="gpufit-fuzz-") as d:
        _WORK = Path(d)
        yield


def _file(name: str, data: bytes) -> Path:
    p = _WORK / name
    p.write_bytes(data)
    return p


# what nvidia-smi and hand edits put where a value belongs
PLACEHOLDERS = ["N/A", "[N/A]", "[Not Supported]", "[Unknown Error]", "Not Found", "GPU is lost", "[GPU is lost]",
                "Requested functionality has been deprecated", "", " ", "-1", "-5 MiB", "0", "0 MiB",
                "9" * 400 + " MiB", "1e309 W", "nan", "inf %", "0x", "0xFFFFFFFFFFFFFFFFFF", "²", "١٢٣ MiB",
                "16x", "Enabled", "Active", "\x00", "é" * 50]
TEXT = st.one_of(st.sampled_from(PLACEHOLDERS), st.text(max_size=30))
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                        st.sampled_from([10**400, -(10**400), 2**64, 2**63]),
                        st.floats(allow_nan=True, allow_infinity=True), TEXT)
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                               st.dictionaries(TEXT, inner, max_size=4)),
                          max_leaves=12)


def _paths(obj, prefix=()):
    """Every (path) to a value in a JSON-like tree."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(tree, edits):
    """Apply (path index, action, value) edits: replace a value, or delete a key / item."""
    tree = copy.deepcopy(tree)
    for idx, action, value in edits:
        paths = [p for p in _paths(tree) if p]
        if not paths:
            break
        path = paths[idx % len(paths)]
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return tree


EDITS = st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from(["replace", "replace", "delete"]),
                           JSON_VALUE), min_size=1, max_size=6)


def _use_snapshot(path: Path) -> None:
    """load_snapshot, then what `here` and `report` do with a snapshot that loads."""
    from gpufit.app import fit_on_snapshot
    from gpufit.catalog import load_catalog
    from gpufit.app.config import Config
    from gpufit.probe import load_snapshot
    from gpufit.render.prometheus import render
    from gpufit.app.report import build_report

    try:
        snap = load_snapshot(path)
    except GpufitError:
        return
    catalog = load_catalog()
    render(build_report(snap, Config(), catalog))
    try:
        fit_on_snapshot("llama3-8b", snap, quant="q4_k_m", catalog=catalog, env={})
    except GpufitError:
        pass


def _base_snapshot() -> dict:
    from gpufit.probe import load_snapshot

    s = json.loads(load_snapshot(MIG_XML).to_json())
    s["gpus"] += json.loads(load_snapshot(XML).to_json())["gpus"]
    return s


BASE_SNAPSHOT = _base_snapshot()


@FUZZ
@given(EDITS)
def test_fuzzed_snapshot_json_raises_only_gpufit_errors(edits):
    _use_snapshot(_file("snap.json", json.dumps(_mutate(BASE_SNAPSHOT, edits)).encode()))


NASTY_NUMBERS = st.sampled_from([-1, -(2**40), 0, 1, 2**63, 2**64, 10**400, 1e308, -0.0, float("nan"), float("inf"),
                                 float("-inf"), 10**18, 2**45])


def _number_paths(tree):
    return [p for p in _paths(tree) if p and isinstance(_get(tree, p), (int, float)) and not isinstance(_get(tree, p), bool)]


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**6), NASTY_NUMBERS), min_size=1, max_size=8))
def test_snapshot_with_extreme_numbers_raises_only_gpufit_errors(edits):
    """Numbers only, every other key kept: the schema passes, so the values reach the checks and the fit."""
    tree = copy.deepcopy(BASE_SNAPSHOT)
    paths = _number_paths(tree)
    for idx, value in edits:
        path = paths[idx % len(paths)]
        _get(tree, path[:-1])[path[-1]] = value
    _use_snapshot(_file("num.json", json.dumps(tree).encode()))


@FUZZ
@given(JSON_VALUE)
def test_arbitrary_json_as_a_snapshot_raises_only_gpufit_errors(value):
    _use_snapshot(_file("any.json", json.dumps({"schema": "gpufit.snapshot/1", "host": value, "gpus": [value]}).encode()))


XML_TREE = ET.parse(XML)
XML_ELEMENTS = len(list(XML_TREE.getroot().iter()))


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=XML_ELEMENTS - 1), TEXT), min_size=1, max_size=12),
       st.one_of(st.none(), st.integers(min_value=0, max_value=120_000)))
def test_fuzzed_nvidia_smi_xml_raises_only_gpufit_errors(edits, cut):
    root = copy.deepcopy(XML_TREE.getroot())
    els = list(root.iter())
    for i, text in edits:
        els[i].text = text.replace("\x00", "")
    data = ET.tostring(root)
    _use_snapshot(_file("cap.xml", data[:cut] if cut is not None else data))


CSV_LINES = CSV.read_text().splitlines()
CSV_COLUMNS = ["index", "name", "uuid", "pci.bus_id", "pci.device_id", "memory.total [MiB]", "memory.free [MiB]",
               "memory.used [MiB]", "memory.reserved [MiB]", "utilization.gpu [%]", "temperature.gpu",
               "power.draw [W]", "enforced.power.limit [W]", "clocks_event_reasons.active", "mig.mode.current",
               "pcie.link.gen.max", "timestamp", "driver_version", "ecc.mode.current", "compute_cap"]


@FUZZ
@given(st.lists(st.sampled_from(CSV_COLUMNS), min_size=1, max_size=10, unique=True),
       st.lists(st.lists(TEXT, min_size=1, max_size=12), min_size=0, max_size=3),
       st.sampled_from([0, 1]))
def test_fuzzed_query_csv_raises_only_gpufit_errors(columns, rows, real):
    cols = ["name", "uuid", *[c for c in columns if c not in ("name", "uuid")]]
    lines = [", ".join(cols)] + [", ".join((r * len(cols))[:len(cols)]).replace("\n", " ") for r in rows]
    if real:
        lines = CSV_LINES[:1] + [", ".join((r * 12)[:12]).replace("\n", " ") for r in rows] + CSV_LINES[1:]
    _use_snapshot(_file("cap.csv", ("\n".join(lines) + "\n").encode("utf-8", "replace")))


BUNDLE = FIX / "nvidia-smi" / "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-mig__590.48.01.txt"
BUNDLE_LINES = BUNDLE.read_text().splitlines()


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(BUNDLE_LINES) - 1),
                          st.one_of(TEXT, st.sampled_from(["GPU 00000000:1A:00.0", "    MIG Device", "        Index : x",
                                                           "#" * 30, "# idle :: query-gpu (csv)"]))),
                min_size=1, max_size=10),
       st.one_of(st.none(), st.integers(min_value=0, max_value=len(BUNDLE_LINES))))
def test_fuzzed_capture_bundle_raises_only_gpufit_errors(edits, cut):
    """An nvidia_gpu_exporter capture bundle (-L, -q, --query-gpu sections, MIG blocks) with lines
    replaced and the file cut short."""
    lines = list(BUNDLE_LINES)
    for i, text in edits:
        lines[i] = text.replace("\n", " ")
    _use_snapshot(_file("bundle.txt", ("\n".join(lines[:cut]) + "\n").encode("utf-8", "replace")))


# ---- model files -------------------------------------------------------------------------------------

TINY_CONFIG = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 2,
               "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
               "vocab_size": 1000, "max_position_embeddings": 2048, "torch_dtype": "bfloat16",
               "sliding_window": 1024, "use_sliding_window": True, "max_window_layers": 1,
               "quantization_config": {"quant_method": "awq", "bits": 4},
               "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "mlp_only_layers": [0],
               "text_config": None, "layer_types": ["sliding_attention", "full_attention"]}


def _safetensors_bytes() -> bytes:
    from safetensors.numpy import save

    import numpy as np

    return save({"model.embed_tokens.weight": np.zeros((1000, 64), dtype=np.float16),
                 "model.layers.0.mlp.up_proj.weight": np.zeros((128, 64), dtype=np.float16),
                 "model.layers.1.self_attn.q_proj.bias": np.zeros((64,), dtype=np.float16)})


ST_BYTES = _safetensors_bytes()


def _load_model(path: Path) -> None:
    """load_model_file, then what `plan MODEL --gpu rtx-4090:2` does with a model file that loads."""
    from gpufit import app
    from gpufit.catalog import load_catalog
    from gpufit.estimator.types import devices_from_specs
    from gpufit.modelfile import load_model_file

    try:
        mf = load_model_file(path)
        catalog = load_catalog()
        choice = app.ModelChoice(mf.spec, mf.weights_bytes, mf.weights_source, mf.quant, mf.notes)
        req, notes = app.build_request(choice, devices_from_specs([(catalog.gpu("rtx-4090"), 2)]), catalog,
                                       planning=True)
        app.run_estimate(req, notes, catalog)
    except GpufitError:
        pass


@FUZZ
@given(EDITS)
def test_fuzzed_config_json_raises_only_gpufit_errors(edits):
    folder = _WORK / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(ST_BYTES)
    cfg = _mutate(TINY_CONFIG, edits)
    if cfg.get("text_config") is None:
        cfg.pop("text_config", None)
    (folder / "config.json").write_text(json.dumps(cfg))
    _load_model(folder)


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**6),
                          st.sampled_from([0, 1, 2, 3, 7, 2**31 - 1, 2**31, 10**400, -1, 1.5, float("nan")])),
                min_size=1, max_size=6))
def test_config_json_with_extreme_numbers_raises_only_gpufit_errors(edits):
    """Numbers only, every key kept: the values pass the type checks and reach the bounds and the estimate."""
    folder = _WORK / "hf-num"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(ST_BYTES)
    cfg = {k: v for k, v in TINY_CONFIG.items() if k != "text_config"}
    paths = _number_paths(cfg)
    for idx, value in edits:
        path = paths[idx % len(paths)]
        _get(cfg, path[:-1])[path[-1]] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    _load_model(folder)


ST_HEADER_LEN = struct.unpack("<Q", ST_BYTES[:8])[0]
ST_HEADER = json.loads(ST_BYTES[8:8 + ST_HEADER_LEN])


@FUZZ
@given(EDITS, st.one_of(st.none(), st.integers(min_value=0, max_value=len(ST_BYTES))),
       st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)))
def test_fuzzed_safetensors_header_raises_only_gpufit_errors(edits, cut, claimed):
    header = json.dumps(_mutate(ST_HEADER, edits)).encode()
    length = len(header) if claimed is None else claimed
    data = struct.pack("<Q", length) + header + ST_BYTES[8 + ST_HEADER_LEN:]
    _load_model(_file("m.safetensors", data[:cut] if cut is not None else data))


def _gguf_bytes() -> bytes:
    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="gpufit-fuzz-gguf-") as d:
        return _write_gguf(Path(d) / "base.gguf", gguf, np)


def _write_gguf(p: Path, gguf, np) -> bytes:
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_feed_forward_length(128)
    w.add_context_length(2048)
    w.add_file_type(1)
    w.add_array("llama.attention.sliding_window_pattern", [True, False])
    w.add_token_list([f"t{i}" for i in range(8)])
    w.add_tensor("token_embd.weight", np.zeros((1000, 64), dtype=np.float16))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
    w.add_tensor("blk.1.ffn_up.weight", np.zeros((128, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p.read_bytes()


GGUF_BYTES = _gguf_bytes()
GGUF_HEADER_END = GGUF_BYTES.index(b"blk.1.ffn_up.weight") + 64  # the metadata and tensor table


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=4, max_value=GGUF_HEADER_END), st.integers(min_value=0, max_value=255)),
                min_size=1, max_size=8),
       st.one_of(st.none(), st.integers(min_value=0, max_value=len(GGUF_BYTES))))
def test_fuzzed_gguf_header_bytes_raise_only_gpufit_errors(flips, cut):
    data = bytearray(GGUF_BYTES)
    for pos, byte in flips:
        data[pos] = byte
    _load_model(_file("m.gguf", bytes(data[:cut] if cut is not None else data)))


def test_the_fuzz_bases_are_valid_inputs():
    """The unmutated inputs load: the fuzz starts from real files, not from garbage the readers reject."""
    from gpufit.modelfile import load_model_file
    from gpufit.probe import load_snapshot

    assert len(load_snapshot(_file("base.json", json.dumps(BASE_SNAPSHOT).encode())).gpus) == 3
    assert load_model_file(_file("ok.gguf", GGUF_BYTES)).spec.layers == 2
    folder = _WORK / "ok-hf"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(ST_BYTES)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in TINY_CONFIG.items() if k != "text_config"}))
    assert load_model_file(folder).spec.layers == 2
