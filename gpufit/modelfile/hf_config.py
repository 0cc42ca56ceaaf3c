"""Hugging Face config.json -> ModelSpec.

Keys follow the transformers configuration classes (`transformers/models/<type>/configuration_<type>.py`);
a key a config leaves out takes that class's default only where the table below names it — otherwise a
missing required key is an error, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..catalog.types import ModelSpec
from ..errors import ModelFileError
from ..units import MIB
from .common import MAX_LAYERS, MAX_SIZE_INT, short as _short


@dataclass(frozen=True)
class HfArch:
    family: str
    # how sliding-window layers are laid out when the config has no `layer_types` list:
    #   none      - full attention everywhere (a `sliding_window` key, if any, is not applied)
    #   all       - every layer is capped at `sliding_window` when it is set (Mistral v0.1, Starcoder2)
    #   qwen      - `use_sliding_window` turns it on for layers >= max_window_layers (Qwen2Config)
    #   every2    - layer i slides iff (i + 1) % 2 != 0 (Gemma2Config / GptOssConfig layer_types default)
    #   pattern   - layer i slides iff (i + 1) % sliding_window_pattern != 0 (Gemma3TextConfig, default 6)
    sliding: str = "none"
    mlp: str = "gated"
    defaults: tuple[tuple[str, object], ...] = ()  # class defaults configs are known to rely on
    # for a config.json without weights: the class defaults of tie_word_embeddings / attention_bias
    tie_default: bool = False
    bias_default: bool = False


# transformers Gemma3TextConfig.__init__ defaults: multimodal gemma-3-4b/12b text_configs omit these.
_GEMMA3_TEXT_DEFAULTS = (
    ("vocab_size", 262208),
    ("num_attention_heads", 8),
    ("num_key_value_heads", 4),
    ("head_dim", 256),
    ("max_position_embeddings", 131072),
    ("sliding_window", 4096),
    ("sliding_window_pattern", 6),
)

# transformers Gemma4TextConfig defaults (configuration_gemma4.py): the class's dataclass fields and the
# global_head_dim its __post_init__ takes (512); sliding_window_pattern 6 is what it lays out without
# layer_types (5 sliding : 1 full)
_GEMMA4_TEXT_DEFAULTS = (
    ("vocab_size", 262144),
    ("num_attention_heads", 8),
    ("num_key_value_heads", 4),
    ("head_dim", 256),
    ("global_head_dim", 512),
    ("max_position_embeddings", 131072),
    ("sliding_window", 512),
    ("sliding_window_pattern", 6),
    ("vocab_size_per_layer_input", 262144),
)

# transformers Gemma3nTextConfig defaults (configuration_gemma3n.py; the E4B shape): layer_types default
# to full attention on every 5th layer
_GEMMA3N_TEXT_DEFAULTS = (
    ("vocab_size", 262400),
    ("num_attention_heads", 8),
    ("num_key_value_heads", 2),
    ("head_dim", 256),
    ("max_position_embeddings", 32768),
    ("sliding_window", 512),
    ("sliding_window_pattern", 5),
    ("vocab_size_per_layer_input", 262144),
    ("hidden_size_per_layer_input", 256),
    ("num_kv_shared_layers", 15),
    ("altup_num_inputs", 4),
    ("laurel_rank", 64),
)

MODEL_TYPES: dict[str, HfArch] = {
    "llama": HfArch("llama"),
    "mistral": HfArch("mistral", "all"),
    "mixtral": HfArch("mixtral", "all"),
    # Mistral3ForConditionalGeneration (Mistral Small 3.1/3.2, Magistral, Devstral, Ministral 3): the text
    # model sits in text_config, model_type mistral or ministral3 (MistralConfig keys; sliding_window null)
    "mistral3": HfArch("mistral", "all"),
    "ministral3": HfArch("ministral3", "all"),
    # Qwen2Attention: q/k/v projections always carry a bias
    "qwen2": HfArch("qwen2", "qwen", bias_default=True),
    "qwen2_moe": HfArch("qwen2-moe", "qwen", bias_default=True),
    "qwen3": HfArch("qwen3", "qwen"),
    "qwen3_moe": HfArch("qwen3-moe", "qwen"),
    "gemma": HfArch("gemma", tie_default=True),
    "gemma2": HfArch("gemma2", "every2", tie_default=True),
    "gemma3": HfArch("gemma3", "pattern", defaults=_GEMMA3_TEXT_DEFAULTS, tie_default=True),  # multimodal: text_config
    "gemma3_text": HfArch("gemma3", "pattern", defaults=_GEMMA3_TEXT_DEFAULTS, tie_default=True),
    # Gemma 4 (transformers gemma4, Gemma4TextConfig): sliding and full-attention layers of different
    # shapes, KV-sharing layers, per-layer embeddings on the E-models, a MoE block beside the MLP on 26B-A4B
    # Gemma 3n (transformers gemma3n): KV-sharing layers, per-layer embeddings, AltUp and LAuReL
    "gemma3n": HfArch("gemma3n", "pattern", defaults=_GEMMA3N_TEXT_DEFAULTS, tie_default=True),  # text_config
    "gemma3n_text": HfArch("gemma3n", "pattern", defaults=_GEMMA3N_TEXT_DEFAULTS, tie_default=True),
    "gemma4": HfArch("gemma4", "pattern", defaults=_GEMMA4_TEXT_DEFAULTS, tie_default=True),  # text_config
    "gemma4_text": HfArch("gemma4", "pattern", defaults=_GEMMA4_TEXT_DEFAULTS, tie_default=True),
    # Phi-3 configs carry sliding_window (2047 on mini-4k) but llama.cpp disables Phi SWA and vLLM's
    # Phi3 kernels attend to the full context: counting the full KV cache is the safe side.
    "phi3": HfArch("phi3"),
    "deepseek_v2": HfArch("deepseek-v2"),
    "deepseek_v3": HfArch("deepseek-v3"),
    "kimi_k2": HfArch("kimi-k2"),
    "deepseek_v32": HfArch("deepseek-v3.2"),  # V3 + the DSA lightning indexer  # DeepseekV3ForCausalLM with Kimi's sizes
    "glm4_moe": HfArch("glm4.5", bias_default=True),  # Glm4MoeConfig attention_bias=True
    "minimax_m2": HfArch("minimax-m2"),
    "gpt_oss": HfArch("gpt-oss", "every2", bias_default=True),  # GptOssConfig attention_bias=True
    "starcoder2": HfArch("starcoder2", "all", mlp="plain", tie_default=True, bias_default=True),
    # hybrids of gated full attention and gated DeltaNet linear attention (transformers qwen3_next;
    # Qwen3.5 / 3.6 keep the layer kinds, multimodal configs nest them in text_config)
    # Llama 4: chunked local attention on RoPE layers, NoPE global layers (transformers llama4)
    "llama4": HfArch("llama4"),
    "llama4_text": HfArch("llama4"),
    # Granite 4.0-H: Mamba2 and attention mixers, every layer with a (MoE or shared) MLP
    "granitemoehybrid": HfArch("granite4-h", tie_default=True),
    # Nemotron-H: one sublayer per layer, hybrid_override_pattern M / * / -; squared-ReLU MLP (up, down)
    "nemotron_h": HfArch("nemotron-h", mlp="plain"),
    "qwen3_vl": HfArch("qwen3-vl"),  # multimodal: text_config
    "qwen3_vl_text": HfArch("qwen3-vl"),
    "qwen3_vl_moe": HfArch("qwen3-vl-moe"),
    "qwen3_vl_moe_text": HfArch("qwen3-vl-moe"),
    "smollm3": HfArch("smollm3", tie_default=True),
    "granite": HfArch("granite3", tie_default=True),
    "olmo2": HfArch("olmo2"),
    "qwen3_next": HfArch("qwen3-next"),
    "qwen3_5": HfArch("qwen3.5"),
    "qwen3_5_text": HfArch("qwen3.5"),
    "qwen3_5_moe": HfArch("qwen3.5-moe"),
    "qwen3_5_moe_text": HfArch("qwen3.5-moe"),
}
# model types whose full-attention q_proj also emits an output gate (Qwen3NextAttention)
GATED_ATTENTION_TYPES = {"qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"}

# the heads gpufit estimates: text generation (Gemma 3 multimodal is *ForConditionalGeneration)
ARCH_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration")

MAX_CONFIG_BYTES = 16 * MIB  # real config.json files are a few kB

_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
                 "float8_e4m3fn": "fp8", "float8_e5m2": "fp8"}


def supported_types() -> str:
    return ", ".join(sorted(MODEL_TYPES))


@dataclass(frozen=True)
class HfConfig:
    """What config.json says, before the tensors are looked at."""

    model_type: str
    arch: HfArch
    text: dict  # the text model's keys (top level, or text_config for multimodal Gemma 3)
    top: dict
    torch_dtype: str | None  # quant key from torch_dtype / dtype, if it maps


def read_config(path: Path) -> HfConfig:
    import json

    from ..fsutil import read_data_file

    raw = read_data_file(path, MAX_CONFIG_BYTES, ModelFileError, "config.json")
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(path, f"not valid JSON: {e}") from None
    except RecursionError:
        raise ModelFileError(path, "not valid JSON: nested too deep for a config.json") from None
    if not isinstance(cfg, dict):
        raise ModelFileError(path, "expected a JSON object")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise ModelFileError(
            path,
            f"model_type {_short(model_type)} is not supported; supported: {supported_types()}",
            "model_type",
        )
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list):
        raise ModelFileError(path, f"architectures {archs!r} is not a list", "architectures")
    bad = [a for a in archs if not (isinstance(a, str) and a.endswith(ARCH_SUFFIXES))]
    if bad:
        raise ModelFileError(
            path,
            f"architecture {bad[0]!r} is not a text-generation model (expected *ForCausalLM or "
            f"*ForConditionalGeneration of a supported model_type: {supported_types()})",
            "architectures",
        )
    text = cfg
    if isinstance(cfg.get("text_config"), dict):
        text = cfg["text_config"]
        inner = text.get("model_type")
        if inner is not None and (not isinstance(inner, str) or inner not in MODEL_TYPES):
            raise ModelFileError(
                path,
                f"text_config.model_type {inner!r} is not supported; supported: {supported_types()}",
                "text_config.model_type",
            )
    elif model_type in ("gemma3", "gemma3n", "gemma4"):
        raise ModelFileError(path, f"model_type {model_type} needs a text_config object", "text_config")
    arch = MODEL_TYPES[text.get("model_type") or model_type]
    raw_dtype = text.get("torch_dtype") or text.get("dtype") or cfg.get("torch_dtype") or cfg.get("dtype")
    torch_dtype = _TORCH_DTYPES.get(str(raw_dtype).removeprefix("torch.")) if raw_dtype else None
    return HfConfig(model_type, arch, text, cfg, torch_dtype)


class _Keys:
    """Typed access to the text config with per-type defaults and errors that name the key."""

    def __init__(self, path: Path, hc: HfConfig):
        self.path = path
        self.d = dict(hc.arch.defaults)
        self.d.update(hc.text)  # an explicit null stays null (e.g. "sliding_window": null)
        self.prefix = "text_config." if hc.text is not hc.top else ""

    def int(self, key: str, default=None, minimum: int = 1):
        v = self.d.get(key)
        if v is None:
            v = default
        if v is None:
            raise ModelFileError(self.path, f"required key {key!r} is missing", self.prefix + key)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise ModelFileError(self.path, f"{key} = {_short(v)}, expected an integer >= {minimum}", self.prefix + key)
        top = MAX_LAYERS if key == "num_hidden_layers" else MAX_SIZE_INT
        if v > top:
            raise ModelFileError(self.path, f"{key} = {_short(v)} is larger than any model has (at most {top})",
                                 self.prefix + key)
        return v

    def opt_int(self, key: str, minimum: int = 0) -> int | None:
        return self.int(key, minimum=minimum) if self.d.get(key) is not None else None

    def first(self, *keys: str, minimum: int = 0) -> int | None:
        for k in keys:
            if self.d.get(k) is not None:
                return self.int(k, minimum=minimum)
        return None


def _sliding(k: _Keys, arch: HfArch, layers: int) -> tuple[int | None, int]:
    window = k.opt_int("sliding_window", minimum=0)
    types = k.d.get("layer_types")
    if arch.sliding == "qwen" and not k.d.get("use_sliding_window", False):
        return None, 0  # Qwen2Config: sliding_window = None unless use_sliding_window
    if not window:
        return None, 0
    if isinstance(types, list) and arch.sliding != "none":
        if len(types) != layers:
            raise ModelFileError(
                k.path, f"layer_types lists {len(types)} layers, num_hidden_layers is {layers}",
                k.prefix + "layer_types",
            )
        n = sum(1 for t in types if t == "sliding_attention")
        return (window, n) if n else (None, 0)
    if arch.sliding == "all":
        n = layers
    elif arch.sliding == "qwen":
        n = max(0, layers - k.int("max_window_layers", 28, minimum=0))
    elif arch.sliding == "every2":
        n = (layers + 1) // 2
    elif arch.sliding == "pattern":
        p = k.int("sliding_window_pattern", 6)
        n = layers - layers // p
    else:
        return None, 0
    return (window, n) if n else (None, 0)


def _moe(k: _Keys, model_type: str, layers: int, intermediate: int | None) -> dict:
    experts = k.first("n_routed_experts", "num_local_experts", "num_experts") or 0
    if not experts or k.d.get("enable_moe_block") is False:  # Gemma4TextConfig: experts only with the flag
        return {}
    active = k.first("num_experts_per_tok", "experts_per_token", "num_experts_per_token", "top_k_experts")
    if not active:
        raise ModelFileError(
            k.path, "MoE config has experts but no num_experts_per_tok", k.prefix + "num_experts_per_tok"
        )
    # Mixtral / gpt-oss: intermediate_size *is* the expert width
    moe_inter = k.first("moe_intermediate_size") or intermediate
    if not moe_inter:
        raise ModelFileError(k.path, "MoE config has no moe_intermediate_size", k.prefix + "moe_intermediate_size")
    shared = k.first("n_shared_experts") or 0
    # Qwen2-MoE: one wide shared expert; Nemotron 3: moe_shared_expert_intermediate_size
    shared_width = k.first("shared_expert_intermediate_size", "moe_shared_expert_intermediate_size")
    if model_type in ("gemma4", "gemma4_text") and intermediate:
        # Gemma4TextDecoderLayer: the dense MLP (intermediate_size) runs beside the routed experts
        shared_width = intermediate
    if shared_width:
        shared = max(1, round(shared_width / moe_inter))
    dense = k.first("first_k_dense_replace") or 0
    mlp_only = k.d.get("mlp_only_layers") or []
    if not isinstance(mlp_only, list):
        raise ModelFileError(k.path, f"mlp_only_layers = {_short(mlp_only)}, expected a list of layer indexes",
                             k.prefix + "mlp_only_layers")
    step = k.first("decoder_sparse_step") or 1
    if model_type in ("qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_vl_moe"):
        # Qwen2MoeDecoderLayer: dense MLP where i in mlp_only_layers or (i + 1) % decoder_sparse_step != 0
        dense = sum(1 for i in range(layers) if i in mlp_only or (i + 1) % step != 0)
    return dict(experts=experts, experts_active=active, shared_experts=shared,
                moe_intermediate=moe_inter, dense_layers=dense)


def _linear(k: _Keys, layers: int, model_type: str) -> dict:
    """Gated-DeltaNet layers: which layers (`layer_types`, else every `full_attention_interval`-th layer is
    full attention, Qwen3NextConfig's default), their shape and the state each keeps per sequence:
    conv state (2 x key heads x key dim + value heads x value dim) x (kernel - 1) plus the recurrent
    state value heads x key dim x value dim (vLLM / transformers Qwen3Next cache shapes)."""
    if k.d.get("linear_num_value_heads") is None:
        return {}
    types = k.d.get("layer_types")
    if isinstance(types, list):
        if len(types) != layers:
            raise ModelFileError(k.path, f"layer_types lists {len(types)} layers, num_hidden_layers is {layers}",
                                 k.prefix + "layer_types")
        n = sum(1 for t in types if t == "linear_attention")
    else:
        interval = k.int("full_attention_interval", 4)
        n = sum(1 for i in range(layers) if (i + 1) % interval != 0)
    kh, vh = k.int("linear_num_key_heads"), k.int("linear_num_value_heads")
    kd, vd, ker = k.int("linear_key_head_dim"), k.int("linear_value_head_dim"), k.int("linear_conv_kernel_dim", 4)
    state = (2 * kh * kd + vh * vd) * (ker - 1) + vh * kd * vd
    return dict(linear_layers=n, linear_state_elems=state, linear_key_heads=kh, linear_value_heads=vh,
                linear_key_head_dim=kd, linear_value_head_dim=vd, linear_conv_kernel=ker,
                attn_output_gate=bool(k.d.get("attn_output_gate", model_type in GATED_ATTENTION_TYPES)))


def _llama4(k: _Keys, layers: int, moe: dict) -> dict:
    """Llama4TextConfig: layer i is MoE iff i is in moe_layers (default: (i + 1) % interleave_moe_layer_step
    == 0), every MoE block has one shared expert, dense layers are intermediate_size_mlp wide; layers with
    RoPE (no_rope_layers[i] == 1, default (i + 1) % 4 != 0) attend within chunks of attention_chunk_size."""
    out: dict = {}
    if moe:
        step = k.int("interleave_moe_layer_step", 1)
        moe_layers = k.d.get("moe_layers")
        if not isinstance(moe_layers, list) or not moe_layers:
            moe_layers = [i for i in range(layers) if (i + 1) % step == 0]
        out.update(shared_experts=1, dense_layers=layers - len(moe_layers))
    if k.d.get("intermediate_size_mlp") is not None:
        out["intermediate"] = k.int("intermediate_size_mlp")
    chunk = k.opt_int("attention_chunk_size", minimum=1)
    if chunk:
        rope = k.d.get("no_rope_layers")
        if not isinstance(rope, list) or not rope:
            rope = [int((i + 1) % 4 != 0) for i in range(layers)]
        if len(rope) != layers:
            raise ModelFileError(k.path, f"no_rope_layers lists {len(rope)} layers, num_hidden_layers is {layers}",
                                 k.prefix + "no_rope_layers")
        n = sum(1 for r in rope if r)
        if n:
            out.update(attention_chunk=chunk, chunked_layers=n)
    return out


def _granite_hybrid(k: _Keys, layers: int, moe: dict) -> dict:
    """GraniteMoeHybridConfig: layer_types 'mamba' / 'attention'; every layer also has a shared MLP of
    shared_intermediate_size (the only MLP when num_local_experts is 0) beside its routed experts. Mamba2
    state per layer per sequence: conv (inner + 2 x groups x state) x (d_conv - 1) + heads x head_dim x
    state (vLLM MambaStateShapeCalculator.mamba2_state_shape)."""
    out: dict = {}
    shared = k.opt_int("shared_intermediate_size", minimum=1)
    if moe and shared:
        out["shared_experts"] = max(1, round(shared / moe["moe_intermediate"]))
    elif shared:
        out["intermediate"] = shared
    types = k.d.get("layer_types")
    if not isinstance(types, list) or len(types) != layers:
        raise ModelFileError(k.path, f"expected layer_types with one 'mamba' / 'attention' entry per layer "
                             f"({layers})", k.prefix + "layer_types")
    n = sum(1 for t in types if t == "mamba")
    if n:
        heads, hd = k.int("mamba_n_heads"), k.int("mamba_d_head")
        state, groups, conv = k.int("mamba_d_state"), k.int("mamba_n_groups", 1), k.int("mamba_d_conv", 4)
        inner = heads * hd
        out.update(linear_layers=n, linear_state_elems=(inner + 2 * groups * state) * (conv - 1) + heads * hd * state,
                   mamba_heads=heads, mamba_head_dim=hd, mamba_state=state, mamba_groups=groups,
                   linear_conv_kernel=conv, mamba_conv_bias=bool(k.d.get("mamba_conv_bias", True)))
    return out


def _nemotron_h(k: _Keys, layers: int, moe: dict) -> dict:
    """NemotronHConfig: hybrid_override_pattern has one character per layer, 'M' a Mamba2 mixer, '*'
    attention, '-' an MLP; each layer is just that sublayer. Mamba2 state per layer per sequence as for
    Granite 4.0-H: conv (inner + 2 x groups x state) x (kernel - 1) + heads x head_dim x state."""
    pattern = k.d.get("hybrid_override_pattern")
    if not isinstance(pattern, str) or len(pattern) != layers or set(pattern) - set("M*-E"):
        raise ModelFileError(k.path, f"expected hybrid_override_pattern of {layers} characters from M * -",
                             k.prefix + "hybrid_override_pattern")
    if "E" in pattern and not moe:
        raise ModelFileError(k.path, "hybrid_override_pattern has MoE layers ('E') but the config names no "
                             "n_routed_experts / num_experts_per_tok", k.prefix + "n_routed_experts")
    if "-" in pattern and "E" in pattern and k.d.get("intermediate_size") is None:
        k.int("intermediate_size")  # raises: the dense '-' layers need their width
    heads, hd = k.int("mamba_num_heads"), k.int("mamba_head_dim")
    state, groups, conv = k.int("ssm_state_size"), k.int("n_groups", 8), k.int("conv_kernel", 4)
    inner = heads * hd
    # 'E' (NemotronHMoE: routed experts, a shared expert, a router) and '-' (a dense MLP) are both MLP-only
    # layers; with experts, the '-' ones are the dense_layers among them
    extra = dict(dense_layers=pattern.count("-")) if moe else {}
    return dict(single_sublayer=True, mlp_only_layers=pattern.count("-") + pattern.count("E"),
                linear_layers=pattern.count("M"), **extra,
                linear_state_elems=(inner + 2 * groups * state) * (conv - 1) + heads * hd * state,
                mamba_heads=heads, mamba_head_dim=hd, mamba_state=state, mamba_groups=groups,
                linear_conv_kernel=conv, mamba_conv_bias=bool(k.d.get("use_conv_bias", True)),
                # vLLM's NemotronH hook reads mamba_ssm_cache_dtype, float32 where the config leaves it out
                mamba_ssm_fp32=str(k.d.get("mamba_ssm_cache_dtype") or "float32") == "float32")


def _gemma4(k: _Keys, layers: int) -> dict:
    """Gemma4TextConfig: full-attention layers of global_head_dim (and num_global_key_value_heads where
    attention_k_eq_v, their K serving as V); KV sharing and per-layer embeddings as Gemma 3n's, with an
    MLP twice as wide in the sharing layers under use_double_wide_mlp."""
    k_eq_v = bool(k.d.get("attention_k_eq_v", False))
    out: dict = dict(global_head_dim=k.int("global_head_dim"), global_k_eq_v=k_eq_v)
    global_kv = k.opt_int("num_global_key_value_heads", minimum=1)
    if global_kv and k_eq_v:  # the override applies where attention_k_eq_v (configuration_gemma4.py)
        out["global_kv_heads"] = global_kv
    out.update(_kv_sharing_and_ple(k, layers))
    if out.get("kv_shared_layers"):
        out["kv_shared_double_mlp"] = bool(k.d.get("use_double_wide_mlp", False))
    return out


def _kv_sharing_and_ple(k: _Keys, layers: int) -> dict:
    """Gemma 3n / 4: the last num_kv_shared_layers layers reuse the KV of the last earlier layer of their
    type (kv_sharing_modes: they hold no cache and load no k/v projection); hidden_size_per_layer_input
    > 0 adds the per-layer embeddings (vocab_size_per_layer_input rows)."""
    types = k.d.get("layer_types")
    if isinstance(types, list):
        if len(types) != layers:
            raise ModelFileError(k.path, f"layer_types lists {len(types)} layers, num_hidden_layers is {layers}",
                                 k.prefix + "layer_types")
        sliding = [t == "sliding_attention" for t in types]
    else:
        p = k.int("sliding_window_pattern", 6)
        sliding = [(i + 1) % p != 0 for i in range(layers)]
    if k.d.get("global_head_dim") is not None:
        sliding[-1] = False  # Gemma4TextConfig forces the last layer to full attention
    out: dict = {}
    shared = k.int("num_kv_shared_layers", 0, minimum=0)
    if shared > layers:
        raise ModelFileError(k.path, f"num_kv_shared_layers = {shared} exceeds num_hidden_layers {layers}",
                             k.prefix + "num_kv_shared_layers")
    if shared:
        out.update(kv_shared_layers=shared, kv_shared_sliding=sum(sliding[layers - shared:]))
    ple = k.int("hidden_size_per_layer_input", 0, minimum=0)
    if ple:
        out.update(per_layer_embed_dim=ple, per_layer_embed_vocab=k.int("vocab_size_per_layer_input"))
    return out


def _mla(k: _Keys) -> dict:
    rank = k.opt_int("kv_lora_rank", minimum=1)
    if rank is None:
        return {}
    out = dict(
        kv_lora_rank=rank,
        q_lora_rank=k.opt_int("q_lora_rank", minimum=1),
        qk_rope_head_dim=k.int("qk_rope_head_dim"),
        qk_nope_head_dim=k.int("qk_nope_head_dim"),
        v_head_dim=k.int("v_head_dim"),
    )
    if k.d.get("index_n_heads") is not None:  # DeepSeek-V3.2 sparse attention
        out.update(indexer_heads=k.int("index_n_heads"), indexer_head_dim=k.int("index_head_dim"),
                   indexer_topk=k.int("index_topk"))
    return out


def build_spec(path: Path, hc: HfConfig, *, key: str, name: str, source: str, tie: bool, attn_bias: bool,
               native_dtype: str, params: int | None, params_source: str | None,
               hf_repo: str | None = None) -> tuple[ModelSpec, list[str]]:
    """ModelSpec from the config plus what the tensors showed (tied head, q/k/v bias, exact params)."""
    k = _Keys(path, hc)
    notes: list[str] = []
    layers = k.int("num_hidden_layers")
    hidden = k.int("hidden_size")
    heads = k.int("num_attention_heads")
    kv_heads = k.int("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ModelFileError(path, f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}",
                             k.prefix + "num_key_value_heads")
    head_dim = k.int("head_dim", hidden // heads)
    widths = k.d.get("intermediate_size")
    if isinstance(widths, list):  # Gemma3nTextConfig: one width per layer
        if len(widths) != layers or len(set(map(repr, widths))) != 1:
            raise ModelFileError(path, f"intermediate_size lists {len(widths)} widths; gpufit reads one width for "
                                 f"all {layers} layers", k.prefix + "intermediate_size")
        k.d["intermediate_size"] = widths[0]
    intermediate = k.opt_int("intermediate_size", minimum=1)
    moe = _moe(k, hc.model_type, layers, intermediate)
    if intermediate is None:
        if not moe:
            k.int("intermediate_size")  # raises: required for a dense model
        intermediate = moe["moe_intermediate"]
    mla = _mla(k)
    if mla:
        head_dim = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
    window, n_sliding = _sliding(k, hc.arch, layers)
    inner_type = hc.text.get("model_type") or hc.model_type
    linear = _linear(k, layers, inner_type)
    if inner_type in ("llama4", "llama4_text"):
        linear.update(_llama4(k, layers, moe))
    elif inner_type == "granitemoehybrid":
        linear.update(_granite_hybrid(k, layers, moe))
    elif inner_type == "nemotron_h":
        linear.update(_nemotron_h(k, layers, moe))
    elif inner_type in ("gemma4", "gemma4_text"):
        linear.update(_gemma4(k, layers))
    elif inner_type in ("gemma3n", "gemma3n_text"):
        linear.update(_kv_sharing_and_ple(k, layers))
        linear.update(altup_inputs=k.int("altup_num_inputs", minimum=1), laurel_rank=k.int("laurel_rank", minimum=1))
    for f in ("intermediate", "shared_experts", "dense_layers"):
        if f in linear:
            v = linear.pop(f)
            if f == "intermediate":
                intermediate = v
            else:
                moe[f] = v
    w = k.d.get("sliding_window")
    mpe = k.d.get("max_position_embeddings")
    limit = mpe if isinstance(mpe, int) else w + 1 if isinstance(w, int) else 0
    if hc.arch.sliding == "none" and isinstance(w, int) and 0 < w < limit:
        notes.append(f"config sliding_window={w} not applied for {hc.model_type}: KV cache counted at full context")
    spec = ModelSpec(
        key=key,
        name=name,
        family=hc.arch.family,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate,
        vocab=k.int("vocab_size"),
        max_context=k.int("max_position_embeddings"),
        source=source,
        hf_repo=hf_repo,
        native_dtype=native_dtype,
        params=params,
        params_source=params_source,
        tie_embeddings=tie,
        mlp=hc.arch.mlp,
        attn_bias=attn_bias,
        sliding_window=window,
        sliding_layers=n_sliding,
        **moe,
        **mla,
        **linear,
    )
    return spec, notes


def quant_from_config(path: Path, qc) -> tuple[str | None, list[str]]:
    """gpufit quant key from a quantization_config block, or None with a note saying why."""
    if not isinstance(qc, dict):
        raise ModelFileError(path, "quantization_config is not an object", "quantization_config")
    method = str(qc.get("quant_method", "")).lower()
    bits = qc.get("bits")
    if method in ("awq", "gptq"):
        if bits in (None, 4):
            return method, []
        if bits == 8:
            return "int8", []
        return None, [f"{method} with bits={bits} has no gpufit quant; weights bytes are exact from the headers"]
    if method in ("fp8", "fbgemm_fp8"):
        return "fp8", []
    if method == "mxfp4":
        return "mxfp4", []
    if method == "bitsandbytes":
        if qc.get("load_in_4bit"):
            return "nf4", []
        if qc.get("load_in_8bit"):
            return "int8", []
    if method == "compressed-tensors":
        groups = qc.get("config_groups") or {}
        for group in (groups.values() if isinstance(groups, dict) else ()):
            w = group.get("weights") if isinstance(group, dict) else None
            if isinstance(w, dict):
                kind, nb = w.get("type"), w.get("num_bits")
                if kind == "float" and nb == 8:
                    return "fp8", []
                if kind == "int" and nb in (4, 8):
                    return f"int{nb}", []
    return None, [f"quantization_config quant_method {method!r} does not map to a gpufit quant; "
                  "weights bytes are exact from the headers"]


def native_from_config(hc: HfConfig, quant: str | None) -> str | None:
    """The dtype the checkpoint was published in: fp8 / mxfp4 checkpoints are native in that format."""
    qc = hc.top.get("quantization_config")
    if isinstance(qc, dict) and quant in ("fp8", "mxfp4") and str(qc.get("quant_method")).lower() in ("fp8", "mxfp4"):
        return quant
    return hc.torch_dtype
