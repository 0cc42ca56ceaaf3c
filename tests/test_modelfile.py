"""Exact inputs from local model files: tiny real safetensors folders and GGUF files built in tmp_path.

Byte counts are written out by hand from the shapes, so a reader that miscounts cannot pass.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
st_numpy = pytest.importorskip("safetensors.numpy")

from gpufit.errors import ExitCode, ModelFileError  # noqa: E402
from gpufit.modelfile import ModelFile, is_model_path, load_model_file  # noqa: E402

# a tiny Llama: 2 layers, hidden 64, 4 heads of 16, 2 KV heads, MLP 128, vocab 128
L, H, HEADS, KV, HD, FF, V = 2, 64, 4, 2, 16, 128, 128
F16, F32 = 2, 4  # bytes per element

LAYER_F16 = (H * H + KV * HD * H + KV * HD * H + H * H + 3 * FF * H) * F16  # q k v o + gate up down
LAYER_F32 = 2 * H * F32  # input / post-attention RMSNorm
LAYER_BYTES = LAYER_F16 + LAYER_F32
EMBED = V * H * F16
HEAD = V * H * F16
FINAL_NORM = H * F32


def llama_config(**over) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": L,
        "hidden_size": H,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "intermediate_size": FF,
        "vocab_size": V,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    cfg.update(over)
    return cfg


def llama_tensors(layers: int = L, lm_head: bool = True, prefix: str = "model.") -> dict[str, np.ndarray]:
    t = {f"{prefix}embed_tokens.weight": np.zeros((V, H), np.float16), f"{prefix}norm.weight": np.zeros(H, np.float32)}
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        t[p + "self_attn.q_proj.weight"] = np.zeros((H, H), np.float16)
        t[p + "self_attn.k_proj.weight"] = np.zeros((KV * HD, H), np.float16)
        t[p + "self_attn.v_proj.weight"] = np.zeros((KV * HD, H), np.float16)
        t[p + "self_attn.o_proj.weight"] = np.zeros((H, H), np.float16)
        t[p + "mlp.gate_proj.weight"] = np.zeros((FF, H), np.float16)
        t[p + "mlp.up_proj.weight"] = np.zeros((FF, H), np.float16)
        t[p + "mlp.down_proj.weight"] = np.zeros((H, FF), np.float16)
        t[p + "input_layernorm.weight"] = np.zeros(H, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.zeros(H, np.float32)
    if lm_head:
        t["lm_head.weight"] = np.zeros((V, H), np.float16)
    return t


def make_folder(root: Path, name: str = "Tiny_Llama Test", config: dict | None = None, tensors=None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config or llama_config()))
    st_numpy.save_file(tensors if tensors is not None else llama_tensors(), str(folder / "model.safetensors"))
    return folder


def raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    """Write a safetensors file by hand (for headers the library refuses to write)."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return path


def assert_model_error(excinfo, *needles: str):
    exc = excinfo.value
    assert exc.exit_code == ExitCode.BAD_DATA == 6
    for n in needles:
        assert n in str(exc), f"{n!r} not in {str(exc)!r}"


# ---- safetensors folders ------------------------------------------------------------------------


def test_folder_weights_bytes_are_the_exact_tensor_sum(tmp_path):
    folder = make_folder(tmp_path)
    mf = load_model_file(folder)
    assert isinstance(mf, ModelFile)
    assert mf.weights_bytes == EMBED + L * LAYER_BYTES + FINAL_NORM + HEAD == 181_504
    assert mf.dtype_bytes == {"F16": EMBED + HEAD + L * LAYER_F16, "F32": FINAL_NORM + L * LAYER_F32}
    assert mf.layer_bytes == (LAYER_BYTES, LAYER_BYTES) == (74_240, 74_240)
    assert mf.non_layer_bytes == EMBED + FINAL_NORM + HEAD
    assert mf.tensor_count == 3 + 9 * L
    assert mf.weights_source == "safetensors headers (1 file)"
    assert mf.quant == "fp16"  # what the file stores, not what config.json's torch_dtype says


def test_folder_spec_comes_from_config(tmp_path):
    folder = make_folder(tmp_path)
    s = load_model_file(str(folder)).spec
    assert (s.layers, s.hidden, s.heads, s.kv_heads, s.head_dim) == (L, H, HEADS, KV, HD)
    assert (s.intermediate, s.vocab, s.max_context) == (FF, V, 4096)
    assert s.key == "tiny-llama-test" and s.family == "llama" and s.source == str(folder)
    assert s.native_dtype == "bf16" and s.mlp == "gated"
    assert s.tie_embeddings is False and s.attn_bias is False
    assert s.sliding_window is None and s.experts == 0 and s.kv_lora_rank is None
    # parameters: every element of an unquantized checkpoint
    assert s.params == V * H * 2 + H + L * (LAYER_F16 // F16 + LAYER_F32 // F32)


def test_tied_head_detected_from_missing_lm_head(tmp_path):
    folder = make_folder(tmp_path, tensors=llama_tensors(lm_head=False))
    mf = load_model_file(folder)
    assert mf.spec.tie_embeddings is True
    assert mf.weights_bytes == EMBED + L * LAYER_BYTES + FINAL_NORM


def test_sharded_folder_reads_every_shard(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_config()))
    t = llama_tensors()
    names = sorted(t)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, part in shards.items():
        st_numpy.save_file({n: t[n] for n in part}, str(folder / fname))
        weight_map.update({n: fname for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    mf = load_model_file(folder)
    assert mf.weights_bytes == 181_504
    assert mf.layer_bytes == (LAYER_BYTES, LAYER_BYTES)
    assert mf.weights_source == "safetensors headers (2 files)"
    assert mf.tensor_count == len(names)


def test_index_naming_a_missing_shard_names_it(tmp_path):
    folder = make_folder(tmp_path)
    wm = {n: "model.safetensors" for n in llama_tensors()}
    wm["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "model-00002-of-00002.safetensors", "missing", "model.safetensors.index.json")


def test_truncated_safetensors_names_file_and_tensor_end(tmp_path):
    folder = make_folder(tmp_path)
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "model.safetensors", f"file is {len(data) // 2} bytes but tensor", "ends at")


def test_absurd_header_length_is_rejected_without_allocating(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_config()))
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as ei:
            load_model_file(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_model_error(ei, "model.safetensors", "header length", str(2**60))
    assert peak < 10 * 2**20


def test_header_length_past_end_of_file(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "model.safetensors", "header claims 1000 bytes")


def test_file_shorter_than_the_length_prefix(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "model.safetensors", "file is 2 bytes")


def test_invalid_json_header(tmp_path):
    folder = make_folder(tmp_path)
    raw_safetensors(folder / "model.safetensors", b'{"x": {"dtype": "F16",')
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "model.safetensors", "not valid JSON")


@pytest.mark.parametrize(
    "entry, data, needle",
    [
        ({"shape": [2], "data_offsets": [0, 4]}, 4, "no dtype"),
        ({"dtype": "F16", "data_offsets": [0, 4]}, 4, "no shape"),
        ({"dtype": "F16", "shape": [2]}, 4, "no data_offsets"),
        ({"dtype": "Q4", "shape": [2], "data_offsets": [0, 4]}, 4, "unknown dtype 'Q4'"),
        ({"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}, 4, "is 6 bytes but data_offsets [0, 4] span 4"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [4, 0]}, 4, "end before they begin"),
    ],
)
def test_bad_tensor_entry_is_named(tmp_path, entry, data, needle):
    folder = make_folder(tmp_path)
    raw_safetensors(folder / "model.safetensors", {"w": entry}, b"\0" * data)
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "model.safetensors", needle)


def test_tensor_past_end_of_file_gives_both_numbers(tmp_path):
    folder = make_folder(tmp_path)
    header = json.dumps({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    raw_safetensors(folder / "model.safetensors", header, b"\0" * 2)
    size, end = 8 + len(header) + 2, 8 + len(header) + 4
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "model.safetensors", f"file is {size} bytes but tensor 'w' ends at {end}")


def test_overlapping_offsets_are_out_of_order(tmp_path):
    folder = make_folder(tmp_path)
    header = {
        "a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
        "b": {"dtype": "F16", "shape": [2], "data_offsets": [2, 6]},
    }
    raw_safetensors(folder / "model.safetensors", header, b"\0" * 6)
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "out of order", "overlaps tensor 'a'")


def test_bf16_and_sub_byte_dtypes_count_bytes_from_offsets(tmp_path):
    folder = make_folder(tmp_path, config=llama_config(num_hidden_layers=1))
    header = {
        "__metadata__": {"format": "pt"},
        "model.layers.0.mlp.w": {"dtype": "BF16", "shape": [4, 8], "data_offsets": [0, 64]},
        "model.layers.0.mlp.blocks": {"dtype": "F4", "shape": [64], "data_offsets": [64, 96]},
        "model.embed_tokens.weight": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [96, 104]},
    }
    raw_safetensors(folder / "model.safetensors", header, b"\0" * 104)
    mf = load_model_file(folder)
    assert mf.weights_bytes == 4 * 8 * 2 + 64 // 2 + 2 * 2 * 2 == 104
    assert mf.dtype_bytes == {"BF16": 72, "F4": 32}
    assert mf.layer_bytes == (96,) and mf.non_layer_bytes == 8
    assert mf.quant == "bf16"


def test_unknown_model_type_lists_supported_types(tmp_path):
    folder = make_folder(tmp_path, config=llama_config(model_type="mamba"))
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "config.json", "'mamba' is not supported", "llama", "qwen3_moe", "gemma3")


def test_non_generation_architecture_is_rejected(tmp_path):
    folder = make_folder(tmp_path, config=llama_config(architectures=["LlamaForSequenceClassification"]))
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "LlamaForSequenceClassification", "not a text-generation model")


def test_missing_required_config_key_is_named(tmp_path):
    cfg = llama_config()
    del cfg["hidden_size"]
    folder = make_folder(tmp_path, config=cfg)
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "config.json", "hidden_size", "missing")


def test_folder_without_config(tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    st_numpy.save_file(llama_tensors(), str(folder / "model.safetensors"))
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, f"no config.json in {folder}")


def test_folder_with_config_but_no_safetensors(tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama_config()))
    with pytest.raises(ModelFileError) as ei:
        load_model_file(folder)
    assert_model_error(ei, "no *.safetensors")


def test_hugging_face_cache_snapshot_is_named_after_the_repo(tmp_path):
    snaps = tmp_path / "models--meta-llama--Tiny-Llama" / "snapshots"
    snaps.mkdir(parents=True)
    s = load_model_file(make_folder(snaps, "0123abcd")).spec
    assert (s.key, s.name, s.hf_repo) == ("tiny-llama", "Tiny-Llama", "meta-llama/Tiny-Llama")


def test_single_safetensors_file_uses_its_folders_config(tmp_path):
    folder = make_folder(tmp_path)
    mf = load_model_file(folder / "model.safetensors")
    assert mf.weights_bytes == 181_504 and mf.spec.layers == L


def test_llama3_8b_shaped_headers_give_the_published_parameter_count(tmp_path):
    """Real Llama-3-8B shapes in a sparse file (the data is never read): 8,030,261,248 parameters in BF16."""
    from gpufit.estimator.params import count_params

    hidden, kv, ff, vocab, layers = 4096, 1024, 14336, 128256, 32
    shapes = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden],
              "lm_head.weight": [vocab, hidden]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": [hidden, hidden], p + "self_attn.k_proj.weight": [kv, hidden],
                   p + "self_attn.v_proj.weight": [kv, hidden], p + "self_attn.o_proj.weight": [hidden, hidden],
                   p + "mlp.gate_proj.weight": [ff, hidden], p + "mlp.up_proj.weight": [ff, hidden],
                   p + "mlp.down_proj.weight": [hidden, ff], p + "input_layernorm.weight": [hidden],
                   p + "post_attention_layernorm.weight": [hidden]}
    header, off = {}, 0
    for name, shape in shapes.items():
        n = 2 * np.prod(shape, dtype=np.int64).item()
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    folder = tmp_path / "Meta-Llama-3-8B"
    folder.mkdir()
    cfg = llama_config(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=ff, vocab_size=vocab, max_position_embeddings=8192)
    (folder / "config.json").write_text(json.dumps(cfg))
    f = raw_safetensors(folder / "model.safetensors", header)
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size + off)  # sparse: no 16 GB written
    mf = load_model_file(folder)
    assert mf.spec.params == 8_030_261_248
    assert mf.weights_bytes == 2 * 8_030_261_248 == 16_060_522_496
    assert count_params(mf.spec).computed_total == 8_030_261_248  # spec agrees with the estimator's count
    assert len(mf.layer_bytes) == 32 and set(mf.layer_bytes) == {2 * 218_112_000}
    assert mf.non_layer_bytes == 2 * (2 * vocab * hidden + hidden)


# ---- config.json mapping ------------------------------------------------------------------------


def spec_for(tmp_path, name: str = "m", **cfg):
    return load_model_file(make_folder(tmp_path, name, config=llama_config(**cfg))).spec


def test_mistral_sliding_window_caps_every_layer(tmp_path):
    s = spec_for(tmp_path, model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=4096)
    assert (s.sliding_window, s.sliding_layers) == (4096, L)


def test_mistral_null_sliding_window_is_full_attention(tmp_path):
    s = spec_for(tmp_path, model_type="mistral", sliding_window=None)
    assert (s.sliding_window, s.sliding_layers) == (None, 0)


def test_gemma2_alternates_sliding_layers(tmp_path):
    s = spec_for(tmp_path, model_type="gemma2", num_hidden_layers=42, sliding_window=4096, head_dim=256)
    assert (s.sliding_window, s.sliding_layers, s.head_dim) == (4096, 21, 256)


def test_gemma3_multimodal_reads_nested_text_config(tmp_path):
    cfg = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "torch_dtype": "bfloat16",
        # gemma-3-4b-it leaves heads, kv heads, head_dim, vocab, context to Gemma3TextConfig's defaults
        "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                        "num_hidden_layers": 34, "sliding_window": 1024},
        "vision_config": {"model_type": "siglip_vision_model"},
    }
    t = llama_tensors(layers=2, lm_head=False, prefix="language_model.model.")
    t["vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"] = np.zeros((8, 8), np.float32)
    mf = load_model_file(make_folder(tmp_path, config=cfg, tensors=t))
    s = mf.spec
    assert (s.layers, s.hidden, s.heads, s.kv_heads, s.head_dim, s.vocab) == (34, 2560, 8, 4, 256, 262208)
    assert (s.sliding_window, s.sliding_layers) == (1024, 34 - 34 // 6)
    assert s.family == "gemma3" and s.tie_embeddings is True
    # vision-tower blocks are not language-model layers
    assert mf.layer_bytes[:2] == (LAYER_BYTES, LAYER_BYTES) and sum(mf.layer_bytes) == 2 * LAYER_BYTES
    assert mf.non_layer_bytes == EMBED + FINAL_NORM + 8 * 8 * 4


def test_gemma3_layer_types_list_wins(tmp_path):
    types = ["sliding_attention", "full_attention"]
    s = spec_for(tmp_path, model_type="gemma3_text", sliding_window=512, layer_types=types)
    assert (s.sliding_window, s.sliding_layers) == (512, 1)


def test_qwen2_sliding_window_only_when_enabled(tmp_path):
    base = dict(model_type="qwen2", sliding_window=4096, max_window_layers=28)
    assert spec_for(tmp_path, "off", **base).sliding_layers == 0
    s = spec_for(tmp_path, "on", **base, use_sliding_window=True, num_hidden_layers=32)
    assert (s.sliding_window, s.sliding_layers) == (4096, 32 - 28)


def test_qwen2_attention_bias_from_tensors(tmp_path):
    t = llama_tensors()
    for i in range(L):
        t[f"model.layers.{i}.self_attn.q_proj.bias"] = np.zeros(H, np.float16)
    mf = load_model_file(make_folder(tmp_path, config=llama_config(model_type="qwen2"), tensors=t))
    assert mf.spec.attn_bias is True and mf.spec.family == "qwen2"
    assert mf.layer_bytes == (LAYER_BYTES + H * F16,) * L


def test_mixtral_moe_fields(tmp_path):
    s = spec_for(tmp_path, model_type="mixtral", num_local_experts=8, num_experts_per_tok=2)
    assert (s.experts, s.experts_active, s.moe_intermediate, s.intermediate, s.shared_experts) == (8, 2, FF, FF, 0)


def test_qwen2_moe_wide_shared_expert_counts_as_several(tmp_path):
    s = spec_for(tmp_path, model_type="qwen2_moe", num_experts=60, num_experts_per_tok=4,
                 moe_intermediate_size=1408, shared_expert_intermediate_size=5632)
    assert (s.experts, s.experts_active, s.moe_intermediate, s.shared_experts) == (60, 4, 1408, 4)


def test_deepseek_v3_mla_moe_fp8_and_mtp_layer(tmp_path):
    cfg = llama_config(
        model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"], num_hidden_layers=1,
        num_key_value_heads=HEADS, n_routed_experts=256, num_experts_per_tok=8, moe_intermediate_size=2048,
        n_shared_experts=1, first_k_dense_replace=3, kv_lora_rank=512, q_lora_rank=1536,
        qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
        quantization_config={"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]},
    )
    mf = load_model_file(make_folder(tmp_path, config=cfg))  # tensors for 2 blocks, config says 1
    s = mf.spec
    assert (s.experts, s.experts_active, s.shared_experts, s.dense_layers) == (256, 8, 1, 3)
    mla = (s.kv_lora_rank, s.q_lora_rank, s.qk_rope_head_dim, s.qk_nope_head_dim, s.v_head_dim)
    assert mla == (512, 1536, 64, 128, 128)
    assert s.is_mla and s.head_dim == 192
    assert mf.quant == "fp8" and s.native_dtype == "fp8" and s.params is None
    # block 1 lies past num_hidden_layers (DeepSeek's MTP layer): outside the layers, with a note
    assert mf.layer_bytes == (LAYER_BYTES,)
    assert mf.non_layer_bytes == EMBED + FINAL_NORM + HEAD + LAYER_BYTES
    assert any("block(s) 1" in n for n in mf.notes)


def test_gpt_oss_layer_types_and_mxfp4(tmp_path):
    types = ["sliding_attention", "full_attention"]
    s_mf = load_model_file(make_folder(tmp_path, config=llama_config(
        model_type="gpt_oss", architectures=["GptOssForCausalLM"], num_local_experts=32, experts_per_token=4,
        sliding_window=128, layer_types=types, head_dim=64, quantization_config={"quant_method": "mxfp4"})))
    s = s_mf.spec
    assert (s.sliding_window, s.sliding_layers, s.experts, s.experts_active, s.head_dim) == (128, 1, 32, 4, 64)
    assert s_mf.quant == "mxfp4" and s.native_dtype == "mxfp4"


@pytest.mark.parametrize(
    "qc, quant",
    [
        ({"quant_method": "awq", "bits": 4}, "awq"),
        ({"quant_method": "gptq", "bits": 4}, "gptq"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "nf4"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "int8"),
        ({"quant_method": "compressed-tensors",
          "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}}, "int4"),
        ({"quant_method": "hqq"}, None),
    ],
)
def test_quantization_config_maps_to_quant_key(tmp_path, qc, quant):
    mf = load_model_file(make_folder(tmp_path, config=llama_config(quantization_config=qc, torch_dtype="float16")))
    assert mf.quant == quant
    assert mf.spec.native_dtype == "fp16"
    assert mf.spec.params is None  # packed weights: element counts are not parameter counts
    if quant is None:
        assert any("hqq" in n for n in mf.notes)


# ---- GGUF ---------------------------------------------------------------------------------------

Q8_BLOCK, Q8_BYTES = 32, 34  # ggml Q8_0: 32 weights -> fp16 scale + 32 int8 = 34 bytes


def q8(rows: int, cols: int) -> np.ndarray:
    return gguf.quants.quantize(np.ones((rows, cols), np.float32), gguf.GGMLQuantizationType.Q8_0)


def write_gguf(path: Path, arch: str = "llama", layers: int = L, extra=None, split_max_tensors: int = 0,
               file_type=gguf.LlamaFileType.MOSTLY_Q8_0) -> Path:
    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    w.add_name("Tiny Llama")
    w.add_block_count(layers)
    w.add_context_length(2048)
    w.add_embedding_length(H)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_file_type(file_type)
    w.add_token_list([f"t{i}" for i in range(V)])
    if extra:
        extra(w)
    Q8 = gguf.GGMLQuantizationType.Q8_0
    w.add_tensor("token_embd.weight", np.zeros((V, H), np.float16))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_q.weight", q8(H, H), raw_dtype=Q8)
        w.add_tensor(p + "attn_k.weight", q8(KV * HD, H), raw_dtype=Q8)
        w.add_tensor(p + "attn_v.weight", q8(KV * HD, H), raw_dtype=Q8)
        w.add_tensor(p + "attn_output.weight", q8(H, H), raw_dtype=Q8)
        w.add_tensor(p + "ffn_gate.weight", q8(FF, H), raw_dtype=Q8)
        w.add_tensor(p + "ffn_up.weight", q8(FF, H), raw_dtype=Q8)
        w.add_tensor(p + "ffn_down.weight", q8(H, FF), raw_dtype=Q8)
        w.add_tensor(p + "attn_norm.weight", np.zeros(H, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.zeros(H, np.float32))
    w.add_tensor("output_norm.weight", np.zeros(H, np.float32))
    w.add_tensor("output.weight", q8(V, H), raw_dtype=Q8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


GGUF_LAYER_Q8 = (H * H + 2 * KV * HD * H + H * H + 3 * FF * H) // Q8_BLOCK * Q8_BYTES
GGUF_LAYER = GGUF_LAYER_Q8 + 2 * H * F32
GGUF_HEAD = V * H // Q8_BLOCK * Q8_BYTES


def test_gguf_weights_bytes_from_the_tensor_table(tmp_path):
    mf = load_model_file(write_gguf(tmp_path / "Tiny-Llama.Q8_0.gguf"))
    assert GGUF_LAYER_Q8 == 36864 // 32 * 34 == 39168  # 36,864 weights per block at 34 bytes per 32
    assert mf.weights_bytes == EMBED + L * GGUF_LAYER + FINAL_NORM + GGUF_HEAD
    assert mf.dtype_bytes == {"F16": EMBED, "Q8_0": L * GGUF_LAYER_Q8 + GGUF_HEAD, "F32": FINAL_NORM + L * 2 * H * F32}
    assert mf.layer_bytes == (GGUF_LAYER, GGUF_LAYER)
    assert mf.non_layer_bytes == EMBED + FINAL_NORM + GGUF_HEAD
    assert mf.quant == "q8_0"
    assert mf.weights_source == "gguf tensor table"
    assert mf.tensor_count == 3 + 9 * L


def test_an_f16_gguf_file_defaults_to_llama_cpp_not_vllm(tmp_path):
    """The engine follows the file format: only llama.cpp / Ollama load a .gguf, F16 or not."""
    from gpufit.app import build_request, resolve_model
    from gpufit.estimator.types import devices_from_specs
    from gpufit.catalog import load_catalog

    cat = load_catalog()
    path = write_gguf(tmp_path / "tiny-f16.gguf", file_type=gguf.LlamaFileType.MOSTLY_F16)
    choice = resolve_model(str(path), cat)
    assert choice.file_quant == "fp16" and choice.is_gguf
    req, notes = build_request(choice, devices_from_specs([(cat.gpu("rtx-4090"), 1)]), cat, planning=True)
    assert req.engine == "llama.cpp"
    assert any("engine llama.cpp: the default for a GGUF file" in n for n in notes)


def test_gguf_bytes_agree_with_gguf_reader(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    mf = load_model_file(path)
    reader = gguf.GGUFReader(path)
    assert mf.weights_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    by_type: dict[str, int] = {}
    for t in reader.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    assert mf.dtype_bytes == by_type
    assert mf.spec.params == sum(int(t.n_elements) for t in reader.tensors)


def test_gguf_spec_from_metadata(tmp_path):
    path = write_gguf(tmp_path / "Tiny-Llama.Q8_0.gguf")
    s = load_model_file(path).spec
    assert (s.layers, s.hidden, s.heads, s.kv_heads, s.head_dim) == (L, H, HEADS, KV, HD)
    assert (s.intermediate, s.vocab, s.max_context) == (FF, V, 2048)
    assert s.key == "tiny-llama.q8-0" and s.name == "Tiny Llama" and s.source == str(path)
    assert s.tie_embeddings is False and s.family == "llama"
    assert s.params == V * H * 2 + H + L * (36864 + 2 * H)  # exact: GGUF keeps logical element counts


def test_gguf_gemma3_sliding_pattern(tmp_path):
    def extra(w):
        w.add_sliding_window(1024)
        w.add_key_length(256)

    s = load_model_file(write_gguf(tmp_path / "g.gguf", arch="gemma3", layers=12, extra=extra)).spec
    assert (s.sliding_window, s.sliding_layers, s.head_dim) == (1024, 10, 256)  # 5 of every 6


def test_gguf_moe_metadata(tmp_path):
    def extra(w):
        w.add_expert_count(8)
        w.add_expert_used_count(2)

    s = load_model_file(write_gguf(tmp_path / "mixtral.gguf", extra=extra)).spec
    assert (s.family, s.experts, s.experts_active, s.moe_intermediate) == ("mixtral", 8, 2, FF)


def test_gguf_deepseek2_mla(tmp_path):
    def extra(w):
        a = "deepseek2"
        w.add_uint32(f"{a}.attention.kv_lora_rank", 512)
        w.add_uint32(f"{a}.attention.q_lora_rank", 1536)
        w.add_uint32(f"{a}.rope.dimension_count", 64)
        w.add_uint32(f"{a}.attention.key_length", 576)  # newer converters: latent + rope ...
        w.add_uint32(f"{a}.attention.key_length_mla", 192)  # ... and the per-head q/k width here
        w.add_uint32(f"{a}.attention.value_length_mla", 128)
        w.add_expert_count(64)
        w.add_expert_used_count(6)
        w.add_uint32(f"{a}.expert_shared_count", 2)
        w.add_uint32(f"{a}.expert_feed_forward_length", 1408)
        w.add_uint32(f"{a}.leading_dense_block_count", 1)

    s = load_model_file(write_gguf(tmp_path / "dsv2.gguf", arch="deepseek2", extra=extra)).spec
    mla = (s.kv_lora_rank, s.q_lora_rank, s.qk_rope_head_dim, s.qk_nope_head_dim, s.v_head_dim)
    assert mla == (512, 1536, 64, 128, 128)
    assert (s.head_dim, s.kv_heads) == (192, HEADS)
    assert (s.experts, s.experts_active, s.shared_experts, s.moe_intermediate, s.dense_layers) == (64, 6, 2, 1408, 1)
    assert s.intermediate == FF


def test_gguf_split_files_are_summed(tmp_path):
    write_gguf(tmp_path / "big.gguf", split_max_tensors=10)
    first = sorted(tmp_path.glob("big-*.gguf"))[0]
    assert first.name.endswith("-00001-of-00003.gguf")
    mf = load_model_file(first)
    assert mf.weights_bytes == EMBED + L * GGUF_LAYER + FINAL_NORM + GGUF_HEAD
    assert mf.weights_source == "gguf tensor table (3 split files)" and mf.spec.key == "big"
    with pytest.raises(ModelFileError) as ei:
        load_model_file(tmp_path / "big-00002-of-00003.gguf")
    assert_model_error(ei, "pass the first split file")
    (tmp_path / "big-00003-of-00003.gguf").unlink()
    with pytest.raises(ModelFileError) as ei:
        load_model_file(first)
    assert_model_error(ei, "big-00003-of-00003.gguf", "missing")


def test_gguf_unknown_architecture_lists_supported(tmp_path):
    with pytest.raises(ModelFileError) as ei:
        load_model_file(write_gguf(tmp_path / "x.gguf", arch="rwkv6"))
    assert_model_error(ei, "x.gguf", "'rwkv6' is not supported", "deepseek2", "qwen3moe")


def test_garbage_gguf_is_not_a_gguf_file(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(ModelFileError) as ei:
        load_model_file(path)
    assert_model_error(ei, "junk.gguf", "not a GGUF file", "magic")


def test_empty_gguf(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError) as ei:
        load_model_file(path)
    assert_model_error(ei, "empty.gguf", "not a GGUF file")


def test_truncated_gguf_data_names_the_tensor(tmp_path):
    path = write_gguf(tmp_path / "cut.gguf")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ModelFileError) as ei:
        load_model_file(path)
    assert_model_error(ei, "cut.gguf", f"file is {len(data) - 100} bytes but tensor 'output.weight' ends at")


def test_truncated_gguf_inside_the_metadata(tmp_path):
    path = write_gguf(tmp_path / "cut.gguf")
    path.write_bytes(path.read_bytes()[:700])  # inside the token list
    with pytest.raises(ModelFileError) as ei:
        load_model_file(path)
    assert_model_error(ei, "cut.gguf", "truncated or corrupt GGUF")


def test_gguf_huge_array_count_fails_fast_instead_of_looping(tmp_path):
    # a uint32 array claiming 2**62 elements: the reader would loop over empty reads past the end of file
    key = b"general.junk"
    body = struct.pack("<4sIQQ", b"GGUF", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    body += struct.pack("<IIQ", 9, 4, 2**62) + b"\0" * 64
    path = tmp_path / "huge.gguf"
    path.write_bytes(body)
    with pytest.raises(ModelFileError) as ei:
        load_model_file(path)
    assert_model_error(ei, "huge.gguf", "array of 4611686018427387904 elements cannot fit", "general.junk")


# ---- paths ---------------------------------------------------------------------------------------


def test_is_model_path(tmp_path):
    folder = make_folder(tmp_path)
    g = write_gguf(tmp_path / "m.gguf")
    (tmp_path / "notes.txt").write_text("x")
    assert is_model_path(str(folder)) and is_model_path(str(g)) and is_model_path(str(folder / "model.safetensors"))
    assert not is_model_path("llama3-8b")  # a catalog key
    assert not is_model_path("meta-llama/Meta-Llama-3-8B")  # an HF repo id that is not a local folder
    assert not is_model_path(str(tmp_path / "missing.gguf"))
    assert not is_model_path(str(tmp_path / "notes.txt"))


def test_importing_and_checking_paths_does_not_pull_numpy():
    code = ("import sys, gpufit.modelfile as m; m.is_model_path('llama3-8b'); "
            "assert 'numpy' not in sys.modules and 'gguf' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
