"""Build a ModelSpec from a config.json dict the way `gpufit plan path/config.json` reads one."""

from __future__ import annotations

import json


def spec_from_config(tmp_path, cfg: dict, tie: bool = False):
    from gpufit.modelfile.hf_config import build_spec, read_config

    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    spec, _ = build_spec(p, read_config(p), key="x", name="x", source=str(p), tie=tie, attn_bias=False,
                         native_dtype="bf16", params=None, params_source=None)
    return spec
