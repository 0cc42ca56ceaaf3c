"""A local .gguf file (llama.cpp): architecture from its metadata, exact bytes from its tensor table.

`gguf_parse` reads the header (see there for why not GGUFReader); the `gguf` package (imported lazily:
it pulls numpy, and `gpufit plan` must stay fast) supplies ggml block sizes and type / file-type names.
Split files (`name-00001-of-00003.gguf`) are read together. Metadata keys: gguf-py/gguf/constants.py
`Keys`; which archs llama.cpp runs with a sliding-window KV cache: src/llama-model.cpp `set_swa_pattern`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..catalog.types import ModelSpec
from ..errors import ModelFileError
from . import ModelFile
from .common import MAX_LAYERS, MAX_SIZE_INT, group_layers, model_key, short
from .gguf_parse import GgufArray, GgufHeader, read_gguf_header

# general.architecture -> family. Mistral and Mixtral GGUFs use the llama arch (Mixtral with expert_count).
GGUF_ARCHS = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen2moe": "qwen2-moe",
    "qwen3moe": "qwen3-moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    # per-layer attention shapes, KV-sharing layers, per-layer embeddings (src/llama-model.cpp
    # LLM_ARCH_GEMMA3N / LLM_ARCH_GEMMA4)
    "gemma3n": "gemma3n",
    "gemma4": "gemma4",
    "phi3": "phi3",
    "deepseek2": "deepseek",
    "gpt-oss": "gpt-oss",
    "starcoder2": "starcoder2",
    # standard layer kinds (llama.cpp src/llama-arch.cpp names); their MoE / bias keys are the generic ones
    "glm4moe": "glm4.5",
    "minimax-m2": "minimax-m2",
    "qwen3vl": "qwen3-vl",
    "qwen3vlmoe": "qwen3-vl-moe",
    "smollm3": "smollm3",
    "granite": "granite3",
    "olmo2": "olmo2",
    # hybrids with a fixed state per sequence (llama.cpp hparams: ssm.* keys; per-layer head_count_kv /
    # feed_forward_length arrays with 0 where a layer has no attention / no MLP)
    "qwen3next": "qwen3-next",
    "granitehybrid": "granite4-h",
    "nemotron_h": "nemotron-h",
    # Nemotron 3 (LLM_ARCH_NEMOTRON_H_MOE): Nemotron-H whose MLP sublayers are MoE blocks
    "nemotron_h_moe": "nemotron-h",
}
PLAIN_MLP_ARCHS = {"starcoder2", "nemotron_h", "nemotron_h_moe"}  # up/down only, no gate (squared ReLU)
# llama.cpp set_swa_pattern(n): layer il uses the sliding window iff il % n < n - 1
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "gpt-oss": 2}
# llama.cpp LLM_ARCH_GEMMA3N: hparams.n_layer_kv_from_start = 20 (the layers after it reuse the KV)
GEMMA3N_KV_FROM_START = 20

# LlamaFileType members whose lowercased name is not the gpufit quant key
_FILE_TYPE_QUANT = {"ALL_F32": "fp32", "MOSTLY_F16": "fp16", "MOSTLY_BF16": "bf16", "MOSTLY_MXFP4_MOE": "mxfp4",
                    "GUESSED": None}
_NATIVE = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "mxfp4": "mxfp4"}

SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
BLOCK_RE = re.compile(r"^blk\.(\d+)\.")
VISION_PREFIXES = ("v.", "mm.", "resampler.", "a.")  # gguf-py TENSOR_NAMES: V_* vision, V_MMPROJ* projector, A_* audio


def _import_gguf(path: Path):
    try:
        import gguf
    except ImportError:
        raise ModelFileError(
            path, "reading .gguf files needs the 'gguf' package, a dependency of gpufit: reinstall gpufit (pip install --force-reinstall gpufit) or pip install gguf"
        ) from None
    return gguf


def _read(path: Path, gguf) -> GgufHeader:
    sizes = {int(t): (int(b), int(s)) for t, (b, s) in gguf.GGML_QUANT_SIZES.items()}
    return read_gguf_header(path, sizes)


class _Meta:
    """Typed metadata access with errors that name the key."""

    def __init__(self, path: Path, header: GgufHeader):
        self.path, self.d = path, header.metadata

    def str(self, key: str, required: bool = False) -> str | None:
        v = self.d.get(key)
        if v is None and not required:
            return None
        if not isinstance(v, str):
            raise ModelFileError(self.path, "missing" if v is None else f"expected a string, got {v!r}", key)
        return v

    def int(self, key: str, required: bool = False, notes: list[str] | None = None) -> int | None:
        v = self.d.get(key)
        if v is None:
            if required:
                raise ModelFileError(self.path, "required metadata key is missing", key)
            return None
        if isinstance(v, GgufArray):  # per-layer values (a few archs): take the largest, say so
            vals = v.values
            if not vals or not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
                raise ModelFileError(self.path, f"expected integers, got an array of {v.count}", key)
            if len(set(vals)) > 1 and notes is not None:
                notes.append(f"{key} varies per layer ({min(vals)}..{max(vals)}); the largest is used")
            v = max(vals)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ModelFileError(self.path, f"expected a non-negative integer, got {short(v)}", key)
        top = MAX_LAYERS if key.endswith(".block_count") else MAX_SIZE_INT
        if v > top:
            raise ModelFileError(self.path, f"{short(v)} is larger than any model has (at most {top})", key)
        return v


def _split_files(path: Path, count: int) -> list[Path]:
    m = SPLIT_RE.match(path.name)
    if count <= 1:
        return [path]
    if count > 99999:  # split names carry five digits: NAME-00001-of-NNNNN.gguf
        raise ModelFileError(path, f"split.count is {count}, more than a split name can number (99999)",
                             "split.count")
    if m is None or int(m["no"]) != 1:
        raise ModelFileError(path, f"split.count is {count}: pass the first split file "
                             "(NAME-00001-of-NNNNN.gguf)", "split.count")
    files = [path.with_name(f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    for f in files:
        if not f.is_file():
            raise ModelFileError(path, f"split file {f.name} is missing from {path.parent}", "split.count")
    return files


def _per_layer(header: GgufHeader, name: str, layers: int) -> list[int] | None:
    v = header.metadata.get(name)
    if isinstance(v, GgufArray) and len(v.values) == layers and all(isinstance(x, int) for x in v.values):
        return list(v.values)
    return None


def _hybrid(path: Path, arch: str, header: GgufHeader, meta, key, layers: int, notes: list[str]) -> dict:
    """Linear-attention / Mamba2 layers of a hybrid GGUF. llama.cpp keys: ssm.conv_kernel, ssm.inner_size,
    ssm.state_size, ssm.group_count, ssm.time_step_rank. qwen3next (gated DeltaNet): state_size = key head
    dim, group_count = key heads, time_step_rank = value heads, inner_size = value heads x value dim, every
    full_attention_interval-th layer attention. granitehybrid / nemotron_h (Mamba2): time_step_rank = heads,
    inner_size = heads x head dim; a layer whose head_count_kv entry is 0 has no attention (and, for
    nemotron_h, one whose feed_forward_length entry is also 0 is the Mamba2 mixer, else an MLP)."""
    if arch not in ("qwen3next", "granitehybrid", "nemotron_h", "nemotron_h_moe"):
        return {}
    conv = meta.int(key("ssm.conv_kernel"), required=True)
    inner = meta.int(key("ssm.inner_size"), required=True)
    state = meta.int(key("ssm.state_size"), required=True)
    groups = meta.int(key("ssm.group_count"), required=True)
    rank = meta.int(key("ssm.time_step_rank"), required=True)
    if not (conv and inner and state and groups and rank) or inner % rank:
        raise ModelFileError(path, f"ssm.inner_size {inner} must be a positive multiple of ssm.time_step_rank "
                             f"{rank}, and the ssm.* sizes positive", key("ssm.inner_size"))
    if arch == "qwen3next":
        interval = meta.int(key("full_attention_interval")) or 4
        n = sum(1 for i in range(layers) if (i + 1) % interval != 0)
        vd = inner // rank
        return dict(linear_layers=n, linear_state_elems=(2 * groups * state + inner) * (conv - 1) + rank * state * vd,
                    linear_key_heads=groups, linear_value_heads=rank, linear_key_head_dim=state,
                    linear_value_head_dim=vd, linear_conv_kernel=conv, attn_output_gate=True)
    kv = _per_layer(header, key("attention.head_count_kv"), layers)
    if kv is None:
        raise ModelFileError(path, f"expected a per-layer array of {layers} entries (0 on Mamba2 layers)",
                             key("attention.head_count_kv"))
    out = dict(mamba_heads=rank, mamba_head_dim=inner // rank, mamba_state=state, mamba_groups=groups,
               linear_conv_kernel=conv, linear_state_elems=(inner + 2 * groups * state) * (conv - 1) + inner * state)
    if arch == "granitehybrid":
        return dict(out, linear_layers=sum(1 for x in kv if x == 0))
    ff = _per_layer(header, key("feed_forward_length"), layers)
    if ff is None:
        raise ModelFileError(path, f"expected a per-layer array of {layers} entries (0 off the MLP layers)",
                             key("feed_forward_length"))
    return dict(out, single_sublayer=True, linear_layers=sum(1 for a, f in zip(kv, ff) if a == 0 and f == 0),
                mlp_only_layers=sum(1 for a, f in zip(kv, ff) if a == 0 and f > 0))


def _gemma_n(path: Path, arch: str, header: GgufHeader, meta, key, layers: int,
             dims: dict[str, tuple[int, ...]]) -> dict:
    """Gemma 3n / 4 GGUF metadata (llama.cpp src/llama-model.cpp): attention.sliding_window_pattern (one
    bool per layer, true = sliding; gemma3n: every 5th layer full), attention.shared_kv_layers (the last
    layers reuse the KV; gemma3n: all past n_layer_kv_from_start 20), embedding_length_per_layer_input
    (per_layer_token_embd.weight holds its rows), gemma3n's altup.num_inputs and laurel_l rank; gemma4's
    per-layer head_count_kv with key_length (full layers) and key_length_swa (sliding ones), and full
    layers without attn_v (attention_k_eq_v: K serves as V)."""
    if arch not in ("gemma3n", "gemma4"):
        return {}
    pattern = header.metadata.get(key("attention.sliding_window_pattern"))
    if isinstance(pattern, GgufArray) and len(pattern.values) >= layers and all(isinstance(x, bool) for x in pattern.values):
        sliding = [bool(x) for x in pattern.values[:layers]]
    else:
        n = SWA_PATTERN.get(arch, 6)
        sliding = [il % n < n - 1 for il in range(layers)]
    shared = meta.int(key("attention.shared_kv_layers"))
    if shared is None:
        shared = max(0, layers - GEMMA3N_KV_FROM_START) if arch == "gemma3n" else 0
    if shared > layers:
        raise ModelFileError(path, f"shared_kv_layers {shared} exceeds block_count {layers}",
                             key("attention.shared_kv_layers"))
    out: dict = {}
    if shared:
        out.update(kv_shared_layers=shared, kv_shared_sliding=sum(sliding[layers - shared:]))
    ple = meta.int(key("embedding_length_per_layer_input"))
    table = dims.get("per_layer_token_embd.weight")
    if ple and table and len(table) == 2:
        out.update(per_layer_embed_dim=ple, per_layer_embed_vocab=table[1])  # ggml order: ne[1] = rows
    if arch == "gemma3n":
        laurel = dims.get("blk.0.laurel_l.weight")
        out.update(altup_inputs=meta.int(key("altup.num_inputs")) or 0,
                   laurel_rank=laurel[1] if laurel and len(laurel) == 2 else 0)
        return out
    kv = _per_layer(header, key("attention.head_count_kv"), layers)
    full = [i for i in range(layers) if not sliding[i]]
    swa = [i for i in range(layers) if sliding[i]]
    if kv is not None and full and swa:
        out.update(kv_heads=kv[swa[0]], global_kv_heads=kv[full[0]])
    swa_dim = meta.int(key("attention.key_length_swa"))
    full_dim = meta.int(key("attention.key_length"))
    if swa_dim and full_dim:
        out.update(head_dim=swa_dim, global_head_dim=full_dim)
    own = [i for i in full if i < layers - shared]
    if own and f"blk.{own[0]}.attn_v.weight" not in dims:
        out["global_k_eq_v"] = True
    return out


def _quant(gguf, ft: int | None) -> tuple[str | None, list[str]]:
    if ft is None:
        return None, ["general.file_type is missing: no quant key; weights bytes are exact from the tensor table"]
    try:
        name = gguf.LlamaFileType(ft).name
    except ValueError:
        return None, [f"general.file_type {ft} is not a known llama.cpp file type"]
    if name in _FILE_TYPE_QUANT:
        return _FILE_TYPE_QUANT[name], []
    return name.removeprefix("MOSTLY_").lower(), []


def load_gguf(path: Path) -> ModelFile:
    gguf = _import_gguf(path)
    header = _read(path, gguf)
    meta = _Meta(path, header)
    notes: list[str] = []
    files = _split_files(path, meta.int("split.count") or 1)  # before the arch: later splits carry none
    arch = meta.str("general.architecture", required=True)
    if arch not in GGUF_ARCHS:
        raise ModelFileError(path, f"architecture {arch!r} is not supported; supported: "
                             f"{', '.join(sorted(GGUF_ARCHS))}", "general.architecture")

    infos = list(header.tensors)
    seen = {t.name: path for t in infos}
    for f in files[1:]:
        for t in _read(f, gguf).tensors:
            if t.name in seen:
                raise ModelFileError(f, f"tensor {t.name!r} is also in {seen[t.name].name}")
            seen[t.name] = f
            infos.append(t)
    if not infos:
        raise ModelFileError(path, "the GGUF tensor table is empty")
    type_name = {int(t): t.name for t in gguf.GGMLQuantizationType}
    tensors = [(t.name, t.n_bytes, t.n_elements, type_name[t.ggml_type], t.dims) for t in infos]
    names = [t[0] for t in tensors]

    def key(k: str) -> str:
        return f"{arch}.{k}"

    layers = meta.int(key("block_count"), required=True)
    hidden = meta.int(key("embedding_length"), required=True)
    heads = meta.int(key("attention.head_count"), required=True, notes=notes)
    if not (layers and hidden and heads):
        raise ModelFileError(
            path, "block_count, embedding_length and attention.head_count must be > 0", key("block_count")
        )
    kv_heads = meta.int(key("attention.head_count_kv"), notes=notes) or heads
    head_dim = meta.int(key("attention.key_length")) or hidden // heads
    ff = meta.int(key("feed_forward_length"), notes=notes)
    by_name = {t[0]: t for t in tensors}
    vocab = meta.int(key("vocab_size"))
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if vocab is None and isinstance(tokens, GgufArray):
        vocab = tokens.count
    if vocab is None and "token_embd.weight" in by_name and len(by_name["token_embd.weight"][4]) == 2:
        vocab = by_name["token_embd.weight"][4][1]  # ggml order: ne[0] = hidden, ne[1] = vocab
    if not vocab:
        raise ModelFileError(path, "no vocab size: no tokenizer.ggml.tokens, vocab_size or token_embd.weight")

    moe: dict = {}
    experts = meta.int(key("expert_count")) or 0
    if experts:
        moe_inter = meta.int(key("expert_feed_forward_length")) or ff
        if not moe_inter:
            raise ModelFileError(path, "MoE without expert_feed_forward_length or feed_forward_length",
                                 key("expert_feed_forward_length"))
        shared = meta.int(key("expert_shared_count")) or 0
        shared_ff = meta.int(key("expert_shared_feed_forward_length"))
        if shared_ff and (not shared or arch == "nemotron_h_moe"):
            # Qwen2-MoE: one wide shared expert; Nemotron 3: one shared expert of 2 x the routed width
            shared = max(1, round(shared_ff / moe_inter))
        moe = dict(experts=experts, experts_active=meta.int(key("expert_used_count"), required=True),
                   shared_experts=shared, moe_intermediate=moe_inter,
                   dense_layers=meta.int(key("leading_dense_block_count")) or 0)
    if not ff:
        if not moe:
            raise ModelFileError(path, "required metadata key is missing", key("feed_forward_length"))
        ff = moe["moe_intermediate"]

    mla: dict = {}
    rank = meta.int(key("attention.kv_lora_rank"))
    if rank:
        rope = meta.int(key("rope.dimension_count"), required=True)
        qk = meta.int(key("attention.key_length_mla")) or head_dim
        v = meta.int(key("attention.value_length_mla")) or meta.int(key("attention.value_length")) or head_dim
        mla = dict(kv_lora_rank=rank, q_lora_rank=meta.int(key("attention.q_lora_rank")) or None,
                   qk_rope_head_dim=rope, qk_nope_head_dim=qk - rope, v_head_dim=v)
        head_dim, kv_heads = qk, heads  # MLA: every head has its own K/V up-projection
    elif heads % kv_heads:
        raise ModelFileError(path, f"head_count {heads} is not a multiple of head_count_kv {kv_heads}",
                             key("attention.head_count_kv"))

    hybrid = _hybrid(path, arch, header, meta, key, layers, notes)
    hybrid.update(_gemma_n(path, arch, header, meta, key, layers, {t[0]: tuple(t[4]) for t in tensors}))
    head_dim = hybrid.pop("head_dim", head_dim)
    kv_heads = hybrid.pop("kv_heads", kv_heads)
    if "global_kv_heads" in hybrid:  # the per-layer head_count_kv is read per layer kind, not as its largest
        notes = [n for n in notes if not n.startswith(key("attention.head_count_kv"))]
    if arch == "gemma4":
        widths = _per_layer(header, key("feed_forward_length"), layers)
        if widths and len(set(widths)) == 2 and max(widths) == 2 * min(widths) and hybrid.get("kv_shared_layers"):
            ff = min(widths)  # use_double_wide_mlp: the KV-sharing layers' MLP is twice as wide
            hybrid["kv_shared_double_mlp"] = True
        if experts and ff and not moe.get("shared_experts"):
            # Gemma4TextDecoderLayer: a dense MLP of feed_forward_length beside the routed experts
            moe["shared_experts"] = max(1, round(ff / moe["moe_intermediate"]))

    window = meta.int(key("attention.sliding_window")) or None
    n_sliding = 0
    if window:
        pattern = header.metadata.get(key("attention.sliding_window_pattern"))
        if isinstance(pattern, GgufArray) and pattern.values and all(isinstance(x, bool) for x in pattern.values):
            n_sliding = sum(pattern.values[:layers])
        else:
            n = pattern if isinstance(pattern, int) and pattern > 0 else SWA_PATTERN.get(arch)
            if n:
                n_sliding = sum(1 for il in range(layers) if il % n < n - 1)
            else:
                notes.append(f"sliding_window={window} is not applied by llama.cpp for {arch}: "
                             "KV cache counted at full context")
        if not n_sliding:
            window = None

    quant, qnotes = _quant(gguf, meta.int("general.file_type"))
    notes += qnotes
    family = GGUF_ARCHS[arch]
    if arch == "llama" and experts:
        family = "mixtral"
    m = SPLIT_RE.match(path.name)
    stem = m["prefix"] if m else path.stem
    dtype_bytes: dict[str, int] = {}
    for _, nb, _, tname, _ in tensors:
        dtype_bytes[tname] = dtype_bytes.get(tname, 0) + nb
    name_set = set(names)
    spec = ModelSpec(
        key=model_key(stem),
        name=meta.str("general.name") or stem,
        family=family,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=ff,
        vocab=vocab,
        max_context=meta.int(key("context_length"), required=True),
        source=str(path),
        native_dtype=_NATIVE.get(quant or "", "bf16"),
        params=sum(t[2] for t in tensors),
        params_source="element count of the GGUF tensor table",
        tie_embeddings="output.weight" not in name_set,
        mlp="plain" if arch in PLAIN_MLP_ARCHS else "gated",
        **hybrid,
        attn_bias=any(n.endswith(("attn_q.bias", "attn_qkv.bias")) for n in name_set),
        sliding_window=window,
        sliding_layers=n_sliding,
        **moe,
        **mla,
    )
    layer_bytes, rest, lnotes = group_layers(((t[0], t[1]) for t in tensors), BLOCK_RE, layers)
    notes += lnotes
    vision = sum(t[1] for t in tensors if t[0].startswith(VISION_PREFIXES))
    if vision:  # Ollama's Gemma 3 / Mistral 3 GGUFs carry the vision tower in the model file itself
        notes.append(f"{vision} bytes of vision-tower / projector tensors (v.*, mm.*, resampler.*, a.*) are in this file and "
                     "counted in the weights: the engine loads them with the text model")
    source = "gguf tensor table" + (f" ({len(files)} split files)" if len(files) > 1 else "")
    return ModelFile(
        spec=spec,
        weights_bytes=sum(dtype_bytes.values()),
        weights_source=source,
        dtype_bytes=dtype_bytes,
        quant=quant,
        tensor_count=len(tensors),
        layer_bytes=layer_bytes,
        non_layer_bytes=rest,
        notes=tuple(notes),
        files=tuple(str(f) for f in files),
    )
