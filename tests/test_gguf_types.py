"""Block bytes of a GGUF file as llama.cpp's quantizer types each tensor (gpufit/estimator/gguf_types.py,
from src/llama-quant.cpp llama_tensor_get_type). Figures by hand, checked against measured files."""

from gpufit.catalog import load_catalog
from gpufit.estimator import gguf_types as T

CAT = load_catalog()
GIB = 2**30


def test_use_more_bits_marks_the_first_and_last_eighth_and_every_third_layer_between():
    heavy = [i for i in range(32) if T.use_more_bits(i, 32)]
    assert heavy == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_llama3_70b_q4_k_m_averages_the_measured_file():
    """Llama 3 70B Q4_K_M: attn_v in Q6_K (40 layers) or, as a 70B type, Q5_K; ffn_down in Q6_K on the
    40 use_more_bits layers; everything else Q4_K. The catalog's 4.7995 bits a body weight is measured
    from the Meta-Llama-3-70B GGUF file (shared/data/measured/gguf_bpw.csv)."""
    m = CAT.model("llama3-70b")
    q, k, o, gate_up, down = 8192 * 8192, 8192 * 1024, 8192 * 8192, 2 * 8192 * 28672, 28672 * 8192
    heavy = (q + k + o + gate_up) * 4.5 + k * 6.5625 + down * 6.5625 + 2 * 8192 * 32
    light = (q + k + o + gate_up) * 4.5 + k * 5.5 + down * 4.5 + 2 * 8192 * 32
    blocks = T.block_bytes(m, CAT.quant("q4_k_m"))
    assert blocks is not None and blocks[0] == int(heavy / 8) and blocks[10] == int(light / 8)
    assert sum(blocks) == 40 * int(heavy / 8) + 40 * int(light / 8)
    body = 80 * (q + 2 * k + o + gate_up + down)
    assert abs(sum(blocks) * 8 / body - CAT.quant("q4_k_m").bits_per_weight) < 0.01


def test_phi4_fuses_qkv_which_q4_k_m_keeps_in_q5_k():
    """Phi-4 (phi3 architecture: attn_qkv and a fused ffn_up): qkv 5120 x (40 + 2 x 10) x 128 in Q5_K,
    attn_output and ffn_up (2 x 17920) in Q4_K, ffn_down in Q6_K on 20 of the 40 layers. The blocks add
    up to 7.77 GiB: microsoft/phi-4-gguf phi-4-q4.gguf is 8.43 GiB with its Q4_K token_embd (0.27 GiB)
    and Q6_K output (0.39 GiB) (ollama/ollama#9782, jazzwang/snippet phi.md)."""
    m = CAT.model("phi4")
    qkv, o, up, down = 5120 * 7680, 5120 * 5120, 5120 * 35840, 17920 * 5120
    light = qkv * 5.5 + (o + up + down) * 4.5 + 2 * 5120 * 32
    heavy = light + down * (6.5625 - 4.5)
    blocks = T.block_bytes(m, CAT.quant("q4_k_m"))
    assert blocks is not None and blocks[0] == int(heavy / 8) and blocks[5] == int(light / 8)
    assert round(sum(blocks) / GIB, 2) == 7.77


def test_rows_not_a_multiple_of_256_fall_back_to_q5_0():
    """Qwen2-72B's ffn_down rows are 29568 wide (115.5 x 256): Q4_K_S stores them Q5_0 (5.5 bits), Q5_1
    on the first eighth where Q5_K was meant; attn_v in Q5_K (the 70B bump). 39.3 GiB of blocks -- the
    log of ollama/ollama#5913 (dolphin-qwen2:72b q4_k_s, v0.2.x) shows 39.9 GiB less its 0.625 GiB KV, 39.3."""
    m = CAT.model("qwen2.5-72b")
    qko, v, gate_up, down = 2 * 8192 * 8192 + 8192 * 1024 + 80 * 128, 8192 * 1024, 2 * 8192 * 29568, 29568 * 8192
    light = (qko + gate_up) * 4.5 + v * 5.5 + down * 5.5 + 2 * 8192 * 32
    first = light + down * 0.5
    blocks = T.block_bytes(m, CAT.quant("q4_k_s"))
    assert blocks is not None and blocks[0] == int(first / 8) and blocks[10] == int(light / 8)
    assert round(sum(blocks) / GIB, 1) == 39.3


def test_other_formats_have_no_mix():
    assert T.block_bytes(CAT.model("llama3.1-8b"), CAT.quant("q8_0")) is None
    assert T.block_bytes(CAT.model("llama3.1-8b"), CAT.quant("fp16")) is None
