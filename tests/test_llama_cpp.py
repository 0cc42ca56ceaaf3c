"""llama.cpp as it really places a model: per-layer KV cells, flash attention, cache types, slots,
host-side KV and experts. Every figure is worked out by hand from the model's shape."""

import pytest

from gpufit.catalog import load_catalog
from gpufit.estimator import speed
from gpufit.estimator.engines import llama_cpp
from gpufit.estimator.fit import estimate
from gpufit.estimator.placement import Sizer, choose
from gpufit.estimator.types import Device, FitRequest

CAT = load_catalog()
GIB = 2**30


def req(model, context, quant="q4_k_m", gpu="rtx-4090", batch=1, kv="fp16", engine="llama.cpp", **settings):
    return FitRequest(model=CAT.model(model), quant=CAT.quant(quant), kv_dtype=CAT.kv_dtype(kv), context=context,
                      batch=batch, engine=engine, devices=(Device.from_spec(CAT.gpu(gpu), 0),),
                      engine_settings=settings)


def kv(r):
    return Sizer(r).kv(r.model.layers)


def test_mistral_7b_v01_window_is_not_applied_so_32k_caches_4_gib():
    # 32 layers x 32,768 cells x (K + V: 2 x 8 heads x 128) x 2 bytes
    r = req("mistral-7b", 32768)
    assert kv(r) == 32 * 32768 * 2 * 8 * 128 * 2 == 4 * GIB
    assert any("does not apply Mistral 7B v0.1's sliding window" in n for n in Sizer(r).engine.notes(r))
    # the case: it no longer 'fits, tight' on an 8 GB card at 32k
    res = estimate(req("mistral-7b", 32768, gpu="rtx-4060", engine="ollama"))
    # short on the card, and a plan does not know the host RAM offloading would need
    assert res.verdict == "no_fit"
    assert [w.code for w in res.warnings] == ["gpu_short", "offload_ram_unknown"]


def test_gemma3_27b_sliding_layers_keep_window_plus_ubatch_cells():
    # 62 layers, 10 global + 52 sliding (window 1024); 16 KV heads x 128 x 2 (K, V) x 2 bytes = 8 KiB a cell
    cell = 2 * 16 * 128 * 2
    assert kv(req("gemma3-27b", 4096)) == (10 * 4096 + 52 * (1024 + 512)) * cell == 989855744
    assert kv(req("gemma3-27b", 32768)) == (10 * 32768 + 52 * (1024 + 512)) * cell == 3338665984
    # --swa-full: every layer holds the whole context
    assert kv(req("gemma3-27b", 4096, swa_full=True)) == 62 * 4096 * cell
    # four slots share -c 16384: the sliding cache holds 4 windows + one ubatch
    assert kv(req("gemma3-27b", 4096, batch=4)) == (10 * 16384 + 52 * (4 * 1024 + 512)) * cell


def test_gemma3_1b_and_gpt_oss_pad_the_sliding_cache_to_256_cells():
    # gemma3-1b: 4 global + 22 sliding of 512 (+ 512 ubatch), 1 KV head x 256 -> 1 KiB a cell
    assert kv(req("gemma3-1b", 4096)) == (4 * 4096 + 22 * 1024) * 1024
    # gpt-oss-20b: 12 full + 12 sliding of 128 + 512 = 640 -> padded to 768; 8 x 64 x 2 x 2 = 2 KiB a cell
    assert kv(req("gpt-oss-20b", 4096, quant="mxfp4")) == (12 * 4096 + 12 * 768) * 2048


def test_cache_type_k_and_v_are_counted_apart():
    # Llama 3 8B, 8192 cells x 32 layers x 1024 elements for K and for V: q8_0 8.5 bits, q4_0 4.5 bits
    r = req("llama3-8b", 8192, cache_type_k="q8_0", cache_type_v="q4_0")
    assert kv(r) == 32 * 8192 * 1024 * (8.5 + 4.5) / 8


def test_mla_cache_as_llama_cpp_stores_it():
    # DeepSeek-V2-Lite: 27 layers, K = kv_lora_rank 512 + rope 64, V = 512, one head, f16
    assert kv(req("deepseek-v2-lite", 4096)) == 27 * 4096 * (576 + 512) * 2


def test_no_kv_offload_keeps_the_cache_in_host_ram():
    r = req("llama3-8b", 8192, no_kv_offload=True)
    s = Sizer(r)
    assert s.kv(32) == 0
    assert s.host_embed == s.ws.embed + 32 * 8192 * 2048 * 2


def test_flash_attention_and_ubatch_size_the_compute_buffer():
    on = Sizer(req("llama3-8b", 8192)).activation()
    off = Sizer(req("llama3-8b", 8192, flash_attn=False)).activation()
    assert on == 512 * 4 * (128256 + 4096)  # logits of one ubatch
    assert off == 512 * 4 * (8192 * 32 + 8192 + 4 * 4096) == 560 * 2**20  # the f32 scores
    assert Sizer(req("llama3-8b", 8192, n_ubatch=2048)).activation() == 4 * on


def test_qwen3_30b_a3b_with_every_expert_on_the_host_fits_a_12_gb_card():
    """--n-cpu-moe 48: the routed experts of all 48 layers stay in host RAM; the GPU keeps attention,
    router, norms and the head. Each layer's 128 experts hold 3 x 2,048 x 768 weights at Q4_K_M."""
    bits = CAT.quant("q4_k_m").bits_per_weight
    experts = 48 * 128 * 3 * 2048 * 768 * bits / 8
    full = req("qwen3-30b-a3b", 4096, gpu="rtx-3060")
    off = req("qwen3-30b-a3b", 4096, gpu="rtx-3060", cpu_moe_layers=tuple(range(48)))
    sf, so = Sizer(full), Sizer(off)
    assert so.weights(48) == pytest.approx(sf.weights(48) - experts, abs=2)
    assert so.host_embed == pytest.approx(sf.host_embed + experts, abs=2)
    assert estimate(full).verdict not in ("fits", "tight")
    res = estimate(off, alternatives=False)
    assert res.verdict in ("fits", "tight"), res.warnings
    # a decoded token reads its 8 active experts per layer from host RAM
    _, _, basis = speed.estimate_speed(so, choose(off), 1)
    assert basis["host_expert_bytes_per_token"] == int(48 * 8 * 3 * 2048 * 768 * bits / 8)


def test_a_tied_head_is_duplicated_onto_the_gpu():
    s = Sizer(req("llama3.2-1b", 4096, quant="q8_0"))
    assert s.ws.output == s.ws.embed > 0
    assert s.weights(16) == pytest.approx(s.ws.output + s.ws.per_layer * 16, abs=1)


# ---- llama-server / llama-cli command lines ---------------------------------------------------------
from gpufit.errors import UsageError  # noqa: E402

parse = llama_cpp.parse_command


def test_memory_flags_by_every_spelling():
    c = parse(["-m", "/models/qwen3-8b.gguf", "--ctx-size=16384", "--parallel", "2", "--n-gpu-layers", "20",
               "-ts", "3,1", "-sm", "layer", "-fa", "off", "--cache-type-k", "q8_0", "-ctv", "q4_0", "-b", "1024",
               "-ub", "256", "--no-kv-offload", "--swa-full", "--n-cpu-moe", "3"], {})
    assert (c.model, c.context, c.batch, c.kv_dtype) == ("/models/qwen3-8b.gguf", 8192, 2, "q8_0")
    s = c.settings
    assert s["n_gpu_layers"] == 20 and s["tensor_split"] == (3.0, 1.0) and s["flash_attn"] is False
    assert (s["cache_type_k"], s["cache_type_v"], s["n_batch"], s["n_ubatch"]) == ("q8_0", "q4_0", 1024, 256)
    assert s["no_kv_offload"] and s["swa_full"] and s["cpu_moe_layers"] == (0, 1, 2)


def test_environment_is_read_and_the_command_line_wins():
    c = parse(["-m", "m.gguf", "-c", "8192"], {"LLAMA_ARG_CTX_SIZE": "2048", "LLAMA_ARG_N_PARALLEL": "4",
                                                "CUDA_VISIBLE_DEVICES": "2,3"})
    assert (c.context, c.batch, c.gpus) == (2048, 4, "2,3")


def test_no_ctx_flag_is_the_training_context_left_to_fit_and_said():
    """common/common.h: n_ctx 0 (the model's training context) and fit_params on by default."""
    c = parse(["-m", "m.gguf"], {})
    assert c.context is None and c.default_context == 0 and c.settings["ctx_auto"] is True
    assert "the model's training context, which --fit shrinks" in c.notes[0]
    assert parse(["-m", "m.gguf", "-c", "0"], {}).settings["ctx_auto"] is True
    assert "ctx_auto" not in parse(["-m", "m.gguf", "-c", "8192"], {}).settings
    off = parse(["-m", "m.gguf", "--fit", "off", "-fitt", "2048", "--fit-ctx", "8192"], {})
    assert (off.settings["fit"], off.settings["fit_target_mib"], off.settings["fit_min_ctx"]) == (False, (2048,), 8192)
    with pytest.raises(UsageError, match="--fit 'maybe': expected on or off"):
        parse(["-m", "m.gguf", "--fit", "maybe"], {})


def test_override_tensor_patterns_pick_the_expert_layers():
    c = parse(["-m", "m.gguf", "-ot", r"blk\.(1[0-9])\.ffn_.*_exps=CPU", "-ot", "exps=CPU0,attn_q=CUDA0"], {})
    assert len(c.settings["cpu_moe_layers"]) == llama_cpp.ALL_LAYERS  # 'exps=CPU0' matches every layer
    c = parse(["-m", "m.gguf", "-ot", r"blk\.(1[0-9])\.ffn_.*_exps=CPU"], {})
    assert c.settings["cpu_moe_layers"] == tuple(range(10, 20))
    c = parse(["-m", "m.gguf", "-ot", "attn_q=CPU"], {})
    assert "cpu_moe_layers" not in c.settings and any("-ot attn_q=CPU" in u for u in c.unknown)


def test_any_tensor_override_turns_pipeline_parallelism_off():
    """src/llama-context.cpp: !model.has_tensor_overrides(), whatever the pattern sends where."""
    engine = llama_cpp.for_version(None)
    m = CAT.model("llama3-8b")
    for flags, depth in (([], 4), (["-ot", "attn_q=CUDA1"], 1), (["--n-cpu-moe", "2"], 1), (["-nkvo"], 1)):
        c = parse(["-m", "m.gguf", *flags], {})
        req = FitRequest(model=m, quant=CAT.quant("q4_k_m"), kv_dtype=CAT.kv_dtype("fp16"), context=4096,
                         batch=1, engine="llama.cpp", devices=(), engine_settings=c.settings)
        assert engine.pipeline_depth(req, full_offload=True) == depth, flags
        assert engine.pipeline_depth(req, full_offload=False) == 1


def test_unknown_flags_are_collected_not_fatal():
    c = parse(["-m", "m.gguf", "--frobnicate", "3", "--port", "8080", "--jinja"], {})
    assert c.unknown == ("--frobnicate 3",) and c.ignored == ("--port", "--jinja")


@pytest.mark.parametrize("argv,words", [
    (["-m", "m.gguf", "-ngl", "lots"], "-ngl 'lots'"),
    (["-m", "m.gguf", "-c", "-5"], "-c '-5'"),
    (["-m", "m.gguf", "-ctk", "q9_0"], "cache type 'q9_0'"),
    (["-m", "m.gguf", "-sm", "diagonal"], "mode 'diagonal'"),
    (["-m", "m.gguf", "-ts", "a,b"], "-ts 'a,b'"),
    (["-m", "m.gguf", "-ot", "blk.(=CPU"], "-ot"),
    (["-m", "m.gguf", "--flash-attn=maybe"], "--flash-attn 'maybe'"),
    (["-c", "4096"], "names no model"),
])
def test_a_bad_value_of_a_known_flag_names_it(argv, words):
    with pytest.raises(UsageError) as e:
        parse(argv, {})
    assert words in str(e.value)


def test_ngl_keeps_the_rest_on_the_cpu_and_ts_sets_the_split():
    r = req("llama3-8b", 4096, n_gpu_layers=20)
    r = FitRequest(**{**r.__dict__, "host_ram_available_bytes": 64 * GIB})
    p = choose(r)
    assert (p.strategy, p.gpu_layers, p.cpu_layers) == ("cpu_offload", 20, 12)
    two = (Device.from_spec(CAT.gpu("rtx-4090"), 0), Device.from_spec(CAT.gpu("rtx-4090"), 1))
    r = FitRequest(**{**req("llama3-8b", 4096, tensor_split=(3.0, 1.0)).__dict__, "devices": two})
    # 33 parts (32 layers + output) at 3:1: layer il goes to GPU 0 while il / 33 < 0.75
    assert [d.layers for d in choose(r).used] == [25, 7]


def test_check_reads_a_llama_server_command_line():
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from gpufit.cli import cli

    snap = Path(__file__).parent / "fixtures" / "nvidia-smi" / "influxdata_telegraf__dual_a5000-v13.xml"
    r = CliRunner().invoke(cli, ["check", "--snapshot", str(snap), "--json", "--", "llama-server", "-m",
                                 "Llama-3.1-8B-Instruct-Q4_K_M.gguf", "-c", "8192", "-np", "2", "-ngl", "99",
                                 "--frobnicate"])
    assert "Traceback" not in r.output
    d = json.loads(r.stdout)
    assert (d["engine"], d["quant"], d["context"], d["batch"]) == ("llama.cpp", "q4_k_m", 4096, 2)
    assert any("--frobnicate" in n for n in (x["message"] for x in d["notes"]))
    bad = CliRunner().invoke(cli, ["check", "--snapshot", str(snap), "--", "llama-server", "-m", "x.gguf",
                                   "-ngl", "many"])
    assert bad.exit_code == 2 and "-ngl 'many'" in bad.output


def test_the_printed_llama_server_line_reproduces_the_plan():
    """Paste the line back in: the same file, the same split, the same expert offload."""
    two = (Device.from_spec(CAT.gpu("rtx-3090"), 0), Device.from_spec(CAT.gpu("rtx-4090"), 1))
    base = req("llama3-8b", 8192, model_file="/m/Llama-3-8B-Q4_K_M.gguf")
    res = estimate(FitRequest(**{**base.__dict__, "devices": two}), alternatives=False)
    line = res.engine_args["llama.cpp"]
    # not planning: the GPUs it uses are named
    assert line.startswith("CUDA_VISIBLE_DEVICES=0,1 llama-server -m /m/Llama-3-8B-Q4_K_M.gguf -c 8192")
    back = parse(line.split()[2:], {})
    again = FitRequest(**{**base.__dict__, "devices": two, "engine_settings": back.settings})
    assert [d.layers for d in choose(again).used] == [d.layers for d in res.devices if d.layers]
    moe = req("qwen3-30b-a3b", 4096, gpu="rtx-3060", model_file="q.gguf", cpu_moe_layers=tuple(range(20)))
    assert "--n-cpu-moe 20" in estimate(moe, alternatives=False).engine_args["llama.cpp"]


def test_no_llama_cpp_line_without_a_file_to_name():
    r = estimate(req("qwen3-4b", 4096, engine="ollama"), alternatives=False)
    assert "llama.cpp" not in r.engine_args


def test_split_mode_row_is_planned_as_the_layer_split_and_printed_as_row():
    """src/llama-model.cpp: row mode assigns layers and their KV as layer mode does and spreads each matrix's
    rows by the same proportions, so the memory per GPU is the layer split's; the line keeps -sm row."""
    import dataclasses

    from gpufit.estimator.engines.llama_cpp import parse_command

    cmd = parse_command(["llama-server", "-m", "llama3-70b.Q4_K_M.gguf", "-sm", "row"], {})
    assert cmd.settings["split_mode"] == "row"
    assert any("--split-mode row: memory per GPU planned as the layer split" in n for n in cmd.notes)
    two = tuple(Device.from_spec(CAT.gpu("rtx-4090"), i) for i in range(2))
    layer = dataclasses.replace(req("llama3-70b", 8192), devices=two)
    row = dataclasses.replace(layer, engine_settings={"split_mode": "row"})
    a, b = estimate(layer), estimate(row)
    assert [d.needed_bytes for d in a.devices] == [d.needed_bytes for d in b.devices]
    assert sum(1 for d in b.devices if d.layers) == 2  # 42 GB of weights need both cards
    assert "--split-mode row -ts " in b.engine_args["llama.cpp"]
    assert "--split-mode layer -ts " in a.engine_args["llama.cpp"]


@pytest.mark.parametrize("ngl,verdict,head_on_host", [(32, "offload", True), (33, "fits", False), (999, "fits", False)])
def test_ngl_counts_the_output_layer_as_llama_cpp_does(ngl, verdict, head_on_host):
    """src/llama-model.cpp: the output layer is layer n_layer + 1, on a GPU only when -ngl > n_layer. Llama 3
    8B has 32 blocks: -ngl 32 keeps its Q6_K head (128,256 x 4,096 x 6.5625 bits / 8 = 430,940,160 bytes) in
    host RAM, which the CPU then computes: an offload, exit 4. The token embeddings (x 4.5 bits / 8 =
    295,501,824 bytes) stay in host RAM either way."""
    import dataclasses

    r = estimate(dataclasses.replace(req("llama3-8b", 8192, n_gpu_layers=ngl), host_ram_available_bytes=64 * GIB))
    assert r.verdict == verdict
    head, embed = 430_940_160, 295_501_824
    assert r.placement.cpu_bytes == embed + (head if head_on_host else 0) and r.placement.gpu_layers == 32
    if head_on_host:
        assert "-ngl 32" in r.engine_args["llama.cpp"]
        assert r.performance.basis["cpu_bytes_per_token"] == head  # the head is read from host RAM


def test_a_pinned_ngl_that_leaves_the_head_on_the_cpu_offers_every_layer_on_the_gpu():
    import dataclasses

    from gpufit.estimator.alternatives import Candidates

    r = estimate(dataclasses.replace(req("llama3-8b", 8192, n_gpu_layers=32), host_ram_available_bytes=64 * GIB),
                 candidates=Candidates())
    alt = next(a for a in r.alternatives if a.kind == "engine_setting")
    assert alt.summary.startswith("-ngl 33 (every layer, the output layer too, on the GPUs): fits")
    assert alt.changes["engine_settings"]["n_gpu_layers"] == 33


def test_no_kv_offload_reads_the_cache_from_host_ram_when_decoding():
    """-nkvo: the CPU attends over a cache in host RAM. Llama 3 8B's f16 cache is 32 layers x 2 x 8 heads x
    128 x 2 bytes = 131,072 bytes a token; at the 64 tokens decode is timed at that is 8,388,608 bytes a
    token read from host RAM instead of from the card."""
    on, off = estimate(req("llama3-8b", 8192)), estimate(req("llama3-8b", 8192, no_kv_offload=True))
    assert off.performance.basis["host_kv_bytes_per_token"] == 32 * 2 * 8 * 128 * 2 * 64 == 8_388_608
    assert "host_kv_bytes_per_token" not in on.performance.basis
    assert off.performance.decode_tokens_per_s < on.performance.decode_tokens_per_s



def _fit_req(gpu, **settings):
    import dataclasses

    r = req("llama3.1-8b", CAT.model("llama3.1-8b").max_context, gpu=gpu, ctx_auto=True, **settings)
    return dataclasses.replace(r, host_ram_available_bytes=64 * GIB)


def test_fit_cuts_an_unset_context_to_what_leaves_the_margin_free():
    """common/fit.cpp step 2 on one 16 GiB card: Llama 3.1 8B Q4_K_M at its 131,072-token training context
    needs more than 16 GiB - 1024 MiB, so the context is interpolated between 4,096 and 131,072 where the
    use meets that target, then rounded down to 256 cells. The use at a context is the weights on the
    card, 131,072 bytes of f16 KV a token (2 x 8 heads x 128 x 2 bytes x 32 layers), the flash-attention
    compute buffer for a 512-token ubatch, and the per-GPU overhead."""
    from gpufit.estimator import memory

    r = _fit_req("rtx-4080")
    m, eng = r.model, llama_cpp.for_version(None)
    ws = eng.weight_split(m, r.quant, None)
    weights = ws.per_layer * m.layers + ws.output  # the token embeddings stay in host RAM

    def use(c):
        return weights + 131_072 * c + llama_cpp.compute_bytes(m, c, 512, True, False) + eng.overhead_bytes(r)

    target = 16 * GIB - 1024 * 2**20
    assert use(131_072) > target > use(4096)
    want = 4096 + (131_072 - 4096) * int(target - use(4096)) // int(use(131_072) - use(4096))
    want -= want % 256
    ctx, why = eng.fitted_context(r)
    assert ctx == want and 4096 < ctx < 131_072
    assert "llama.cpp --fit cut the model's 131072-token context" in why
    assert memory.kv_bytes_per_token_layer(m, r.kv_dtype) * m.layers == 131_072


def test_fit_keeps_the_context_where_it_fits_or_where_told_not_to():
    import dataclasses

    assert llama_cpp.for_version(None).fitted_context(_fit_req("rtx-4090")) is None  # 21 GiB + 1 GiB fit in 24
    assert llama_cpp.for_version(None).fitted_context(_fit_req("rtx-4080", fit=False)) is None
    r = _fit_req("rtx-2060")  # 6 GiB: not even 4,096 tokens (5.6 GiB) meet 5 GiB, so the minimum is kept
    assert llama_cpp.for_version(None).fitted_context(r)[0] == 4096
    assert estimate(dataclasses.replace(r, context=4096)).verdict != "fits"  # and llama.cpp offloads from there


def test_fit_refills_a_card_that_would_keep_less_than_its_margin():
    """common/fit.cpp steps 1 and 3: llama-server with no -ngl loads the default layout only where every GPU
    keeps 1024 MiB free; a card left with 512 MiB gets as many layers as fit under that margin, the rest in
    host RAM: an offload, where -ngl 999 or --fit off would load all 32 layers and fit."""
    import dataclasses

    from gpufit.estimator.placement import Sizer

    base = dataclasses.replace(req("llama3-8b", 8192), host_ram_available_bytes=64 * GIB)
    s = Sizer(base)
    full = s.overhead + s.activation(multi_gpu=False) + s.ws.output + s.layer_cost() * 32
    dev = dataclasses.replace(base.devices[0], free_bytes=int(full) + 512 * 2**20)
    r = dataclasses.replace(base, devices=(dev,), engine_settings={"fit_layout": True})
    cap = int((dev.free_bytes - 1024 * 2**20 - (s.overhead + s.activation(multi_gpu=False) + s.ws.output))
              // s.layer_cost())
    res = estimate(r)
    assert res.verdict == "offload" and res.placement.gpu_layers == cap < 32
    assert res.devices[0].headroom_bytes >= 1024 * 2**20
    for pinned in ({"fit_layout": True, "fit": False}, {"n_gpu_layers": 999}):
        other = estimate(dataclasses.replace(r, engine_settings=pinned))
        assert other.verdict in ("fits", "tight") and other.placement.gpu_layers == 32
    assert parse(["-m", "m.gguf"], {}).settings["fit_layout"] is True
    for pins in (["-ngl", "99"], ["-ngl", "all"], ["-ts", "1,1"], ["--n-cpu-moe", "4"], ["-sm", "row"]):
        assert "fit_layout" not in parse(["-m", "m.gguf", *pins], {}).settings, pins


def test_fit_moves_the_first_layers_experts_to_host_ram_for_a_moe_model():
    """common/fit.cpp step 3 for MoE: Qwen3 30B-A3B Q4_K_M on a 12 GiB card does not fit whole; --fit keeps
    every layer's dense part on the card and the routed experts of as few leading layers in host RAM as
    leave 1024 MiB free: k = ceil((need with every expert on the card - (12 GiB - 1024 MiB)) / one layer's
    experts), one layer's 128 experts being 3 x 2,048 x 768 weights at Q4_K_M."""
    import dataclasses
    import math

    from gpufit.estimator.placement import Sizer

    r = dataclasses.replace(req("qwen3-30b-a3b", 4096, gpu="rtx-3060"), host_ram_available_bytes=64 * GIB,
                            engine_settings={"fit_layout": True})
    s = Sizer(r)
    need = s.overhead + s.activation(multi_gpu=False) + s.ws.output + s.layer_cost() * 48
    experts = 128 * 3 * 2048 * 768 * CAT.quant("q4_k_m").bits_per_weight / 8
    assert llama_cpp.expert_layer_bytes(r) == pytest.approx(experts, rel=1e-9)
    k = math.ceil((need - (r.devices[0].free_bytes - 1024 * 2**20)) / experts)
    new, said = llama_cpp.for_version(None).refit(r)
    assert new.engine_settings["cpu_moe_layers"] == tuple(range(k)) and 0 < k < 48
    assert f"as --n-cpu-moe {k}" in said[0]
    res = estimate(new, alternatives=False)
    assert res.verdict in ("fits", "tight") and res.placement.gpu_layers == 48
    assert res.devices[0].headroom_bytes >= 1024 * 2**20
    # a dense model is refilled by whole layers instead; a model that fits whole is left alone
    assert llama_cpp.for_version(None).fitted_experts(dataclasses.replace(r, devices=(
        Device.from_spec(CAT.gpu("h100-sxm"), 0),))) is None


# ---- --split-mode tensor (docs/multi-gpu.md; src/llama-arch.cpp llm_arch_supports_sm_tensor) ------------
def _two_4090(model, context, **settings):
    two = tuple(Device.from_spec(CAT.gpu("rtx-4090"), i) for i in range(2))
    return FitRequest(**{**req(model, context, **settings).__dict__, "devices": two})


def test_split_mode_tensor_is_read_and_turns_fit_off():
    c = parse(["-m", "m.gguf", "-sm", "tensor"], {})
    assert c.settings["split_mode"] == "tensor" and "fit_layout" not in c.settings
    assert any("--split-mode tensor (experimental)" in n for n in c.notes)
    assert any("kept whole" in n for n in c.notes)  # no -c: the training context, which --fit cannot cut here
    with pytest.raises(UsageError, match="tensor"):  # the did-you-mean lists it
        parse(["-m", "m.gguf", "-sm", "tensr"], {})


def test_split_mode_tensor_splits_every_layer_and_its_kv_over_the_gpus():
    """Llama 3 70B Q4_K_M at 8192 on 2 x RTX 4090: both GPUs hold all 80 layers' shares. KV by hand:
    80 layers x 8192 cells x (K + V: 2 x 8 heads x 128) x 2 bytes = 2,684,354,560, half on each; the
    weights on each GPU are half of what the layer split puts on the two together."""
    r = _two_4090("llama3-70b", 8192, split_mode="tensor")
    plan = choose(r)
    assert (plan.strategy, plan.tp, [d.layers for d in plan.used]) == ("tensor_parallel", 2, [80, 80])
    assert [d.kv for d in plan.used] == [2_684_354_560 // 2] * 2
    layer = choose(_two_4090("llama3-70b", 8192))
    assert layer.strategy == "layer_split"
    assert sum(d.weights for d in plan.used) == pytest.approx(sum(d.weights for d in layer.used), rel=1e-6)
    res = estimate(r, alternatives=False)
    assert res.verdict == "fits" and res.placement.tensor_parallel == 2
    line = res.engine_args["llama.cpp"]
    assert "--split-mode tensor" in line and "-ts" not in line
    # no measured rows calibrate its speed: none is claimed, and the basis says why
    assert res.performance.decode_tokens_per_s is None and "experimental" in res.performance.basis["note"]


@pytest.mark.parametrize("model, settings, code, words", [
    ("llama3-8b", {"flash_attn": False}, "sm_tensor_flash_attn", "SPLIT_MODE_TENSOR requires flash_attn to be enabled"),
    ("llama3-8b", {"cache_type_k": "q8_0", "cache_type_v": "q8_0"}, "sm_tensor_kv_quantized",
     "simultaneous use of SPLIT_MODE_TENSOR and KV cache quantization not implemented"),
    ("deepseek-v2-lite", {}, "sm_tensor_arch", "LLAMA_SPLIT_MODE_TENSOR not implemented for architecture 'deepseek2'"),
    ("gemma3n-e4b", {}, "sm_tensor_arch", "architecture 'gemma3n'"),
])
def test_split_mode_tensor_start_up_checks_refuse_as_llama_cpp_does(model, settings, code, words):
    from test_placement import _cands

    res = estimate(_two_4090(model, 4096, split_mode="tensor", **settings), candidates=_cands())
    assert res.verdict == "no_fit" and res.refusal.code == code and words in res.refusal.message
    fixes = [a.summary for a in res.alternatives if a.kind == "engine_setting"]
    assert any(f.startswith("--split-mode layer") for f in fixes), fixes
    if code == "sm_tensor_flash_attn":
        assert any(f.startswith("-fa on") for f in fixes)
    if code == "sm_tensor_kv_quantized":
        assert any(f.startswith("-ctk f16 -ctv f16") for f in fixes)


def test_check_with_split_mode_tensor_and_flash_attention_off_exits_3():
    from pathlib import Path

    from click.testing import CliRunner

    from gpufit.cli import cli

    snap = Path(__file__).parent / "fixtures" / "nvidia-smi" / "influxdata_telegraf__dual_a5000-v13.xml"
    r = CliRunner().invoke(cli, ["check", "--snapshot", str(snap), "--", "llama-server", "-m",
                                 "llama3-8b.Q4_K_M.gguf", "-sm", "tensor", "-c", "4096", "-fa", "off"])
    assert r.exit_code == 3 and "SPLIT_MODE_TENSOR requires flash_attn to be enabled" in r.output
    assert "Traceback" not in r.output


def test_device_none_keeps_every_layer_in_host_ram_and_tensor_mode_refuses_it():
    c = parse(["-m", "m.gguf", "-dev", "none"], {})
    assert c.settings["n_gpu_layers"] == 0 and c.gpus is None
    assert any("--device none" in n for n in c.notes)
    t = parse(["-m", "m.gguf", "-dev", "none", "-sm", "tensor"], {})
    res = estimate(_two_4090("llama3-8b", 4096, **t.settings), alternatives=False)
    assert res.verdict == "no_fit" and res.refusal.code == "sm_tensor_no_device"


def test_split_mode_tensor_on_mig_devices_is_one_device():
    """A CUDA process sees one MIG device: tensor mode there is a one-device plan, not a request for
    every MIG slice of the card (the H100 capture has 4 slices)."""
    from pathlib import Path

    from gpufit.app.devices import select_devices
    from gpufit.probe import load_snapshot

    snap = load_snapshot(Path(__file__).parent / "fixtures" / "nvidia-smi" /
                         "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-mig__590.48.01.txt")
    devs = select_devices(snap, CAT)
    assert len(devs) > 1 and all(d.mig_profile for d in devs)
    r = FitRequest(**{**req("llama3-8b", 4096, split_mode="tensor").__dict__, "devices": tuple(devs)})
    res = estimate(r, alternatives=False)
    assert res.refusal is None and res.verdict in ("fits", "tight") and res.placement.tensor_parallel == 1
