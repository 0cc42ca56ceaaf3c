"""The built-in GPU catalog (gpufit/catalog/data/gpus.toml): coverage, uniqueness of what the probe matches on
(NVML names, PCI device ids), every real capture matching the right card, and figures pinned to datasheets.

Captures are the copies in tests/fixtures/nvidia-smi (origins in its SOURCES.md).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from gpufit.catalog import DATA_DIR, Catalog, load_catalog, normalize_name, pci_device_key
from gpufit.errors import CatalogError, UsageError

CAPTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"

REQUIRED = {
    "datacenter": """t4 v100-pcie-16gb v100-pcie-32gb v100-sxm2-16gb v100-sxm2-32gb v100s-pcie-32gb p100-pcie-16gb
        tesla-p4 tesla-p40 a10 a10g a16 a30 a40 a100-pcie-40gb a100-pcie-80gb a100-sxm4-40gb a100-sxm4-80gb
        l4 l40 l40s h100-pcie h100-sxm h100-nvl h200 h200-nvl gh200 b200""",
    "workstation": """rtx-a2000 rtx-a4000 rtx-a4500 rtx-a5000 rtx-a6000 rtx-2000-ada rtx-4000-ada rtx-4000-sff-ada
        rtx-4500-ada rtx-5000-ada rtx-6000-ada rtx-pro-6000-blackwell rtx-pro-6000-blackwell-max-q
        quadro-p2000 quadro-p400""",
    "geforce": """gtx-1050 gtx-1070-ti gtx-1080-ti gtx-1660-ti gt-1030 rtx-2060 rtx-2070 rtx-2080 rtx-2080-super
        rtx-2080-ti rtx-3060 rtx-3060-ti rtx-3070 rtx-3080 rtx-3080-ti rtx-3090 rtx-3090-ti rtx-4060
        rtx-4060-ti-16gb rtx-4070 rtx-4070-ti-super rtx-4080 rtx-4080-super rtx-4090 rtx-5060-ti-16gb rtx-5070
        rtx-5070-ti rtx-5080 rtx-5090""",
    "embedded": "jetson-agx-orin-64gb jetson-agx-orin-32gb jetson-orin-nx-16gb jetson-orin-nano-8gb",
}
REQUIRED_KEYS = [(k, cls) for cls, keys in REQUIRED.items() for k in keys.split()]

# Every `nvidia-smi -q -x` capture and the card each of its GPUs must match. Hard-coded so a wrong match fails.
XML_EXPECTED = {
    "GuanceCloud_datakit__gtx-1050-1.xml": "gtx-1050",
    "GuanceCloud_datakit__gtx-1card.xml": "v100-pcie-32gb",
    "GuanceCloud_datakit__gtx-8card.xml": "v100s-pcie-32gb",
    "influxdata_telegraf__3090-v13.xml": "rtx-3090",
    "influxdata_telegraf__a100-sxm4-v12.xml": "a100-sxm4-80gb",
    "influxdata_telegraf__a10g.xml": "a10g",  # PCI id virtualised to 000000DE: matches by NVML name
    "influxdata_telegraf__dual_2070-v13.xml": "rtx-2070",
    "influxdata_telegraf__dual_2080-v13.xml": "rtx-2080",
    "influxdata_telegraf__dual_a5000-v13.xml": "rtx-a5000",
    "influxdata_telegraf__gt-1030.xml": "gt-1030",
    "influxdata_telegraf__gtx-1070-ti.xml": "gtx-1070-ti",  # no PCI id in the file: matches by name
    # Named gtx-1660-ti by telegraf, but "Graphics Device" with PCI id 2184 is the GTX 1660 (pci.ids and
    # NVIDIA's driver table; 2182 is the Ti), and its 4001 MHz max memory clock is GDDR5, which only the 1660 has.
    "influxdata_telegraf__gtx-1660-ti.xml": "gtx-1660",
    "influxdata_telegraf__pro-6000-maxq-blackwell-v13.xml": "rtx-pro-6000-blackwell-max-q",
    "influxdata_telegraf__quadro-p2000-v12.xml": "quadro-p2000",
    "influxdata_telegraf__quadro-p400.xml": "quadro-p400",
    "influxdata_telegraf__rtx-3060-v12.xml": "rtx-3060",  # name shared with the 8 GB card: matches by PCI 2487
    "influxdata_telegraf__rtx-3080-v12.xml": "rtx-3080",  # name shared with the 12 GB card: matches by PCI 2216
    "influxdata_telegraf__rtx-3080-v13.xml": "rtx-3080",
    "influxdata_telegraf__rtx-3090-v12.xml": "rtx-3090",  # PCI id [REDACTED]
    "influxdata_telegraf__rtx-4000-sff-ada-v13.xml": "rtx-4000-sff-ada",
    "influxdata_telegraf__tesla-t4.xml": "t4",
    "influxdata_telegraf__tesla_p4.xml": "tesla-p4",  # vGPU guest "GRID P4-1Q": matches by PCI 1BB3
}
# Captures whose framebuffer total is not the card's (see each entry's notes): notebook GTX 1050 (4 GB) under the
# desktop name, a 4096 MiB GTX 1070 Ti fixture, an old driver's 5912 MiB for a 6 GB GTX 1660, a 1 GB vGPU profile.
MEMORY_NOT_THE_CARDS = {
    "GuanceCloud_datakit__gtx-1050-1.xml",
    "influxdata_telegraf__gtx-1070-ti.xml",
    "influxdata_telegraf__gtx-1660-ti.xml",
    "influxdata_telegraf__tesla_p4.xml",
}

# utkuozdemir nvidia_gpu_exporter text bundles (`nvidia-smi -q` text): Product Name + Device Id.
TEXT_EXPECTED = {
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-geforce-rtx-2080-super__595.71.05.txt": "rtx-2080-super",
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.txt": "rtx-2080-super",
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt": "rtx-4080-super",
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt": "h100-sxm",
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h100-mig__590.48.01.txt": "h100-sxm",
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h200-mig__590.48.01.txt": "h200",
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-h200__590.48.01.txt": "h200",
    "utkuozdemir_nvidia_gpu_exporter__linux-x86_64__nvidia-l40s__595.80.txt": "l40s",
    "utkuozdemir_nvidia_gpu_exporter__windows-x86_64__nvidia-geforce-rtx-2080-super__591.86.txt": "rtx-2080-super",
    "utkuozdemir_nvidia_gpu_exporter__windows-x86_64__nvidia-geforce-rtx-2080-super__610.62.txt": "rtx-2080-super",
}

# The compute capabilities each architecture name may carry.
ARCH_CC = {
    "Pascal": {"6.0", "6.1"},
    "Volta": {"7.0"},
    "Turing": {"7.5"},
    "Ampere": {"8.0", "8.6", "8.7"},
    "Ada Lovelace": {"8.9"},
    "Hopper": {"9.0"},
    "Blackwell": {"10.0", "10.3", "11.0", "12.0", "12.1"},
}
OPTIONAL_NUMBERS = ("fp32_tflops", "fp16_tflops", "bf16_tflops", "fp8_tflops", "int8_tops", "int4_tops", "fp4_tflops",
                    "cuda_cores", "tensor_cores", "tdp_w", "memory_bus_bits", "nvlink_gbps", "pcie_gen")

GPU_TOML = """
[[gpu]]
key = "{key}"
name = "{name}"
vendor_class = "geforce"
architecture = "Ampere"
compute_capability = "8.6"
memory_bytes = 25769803776
memory_type = "GDDR6X"
bandwidth_gbps = 936
source = "test"
nvml_names = ["{nvml}"]
pci_device_ids = ["{pci}"]
"""


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _xml_gpus(path: Path):
    root = ET.parse(path).getroot()
    return [(g.findtext("product_name"), g.findtext("pci/pci_device_id"), g.findtext("fb_memory_usage/total"))
            for g in root.findall("gpu")]


def _text_gpus(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    names = re.findall(r"^\s*Product Name\s*:\s*(.+?)\s*$", text, re.M)
    ids = re.findall(r"^\s*Device Id\s*:\s*(\S+)\s*$", text, re.M)
    assert names and len(names) == len(ids), f"{path.name}: cannot pair Product Name / Device Id"
    return list(zip(names, ids))


# ---- coverage --------------------------------------------------------------------------------------------------
def test_catalog_has_at_least_65_gpus(cat):
    assert len(cat.gpus) >= 65


@pytest.mark.parametrize("key,vendor_class", REQUIRED_KEYS)
def test_required_gpu_present_with_its_class(cat, key, vendor_class):
    assert key in cat.gpus, f"missing required GPU {key!r}"
    assert cat.gpus[key].vendor_class == vendor_class


# ---- what the probe matches on is unique ------------------------------------------------------------------------
def test_no_nvml_name_in_two_entries(cat):
    seen = Counter(n for g in cat.gpus.values() for n in g.nvml_names)
    assert [n for n, c in seen.items() if c > 1] == []


def test_no_pci_id_in_two_entries(cat):
    seen = Counter(p for g in cat.gpus.values() for p in g.pci_device_ids)
    assert [p for p, c in seen.items() if c > 1] == []


def test_no_lookup_name_points_at_two_entries(cat):
    """Keys, folded marketing names and aliases all land in one lookup table, where a clash silently wins."""
    owner: dict[str, str] = {}
    clashes = []
    for g in cat.gpus.values():
        for alias in {normalize_name(a) for a in (g.key, g.name, *g.aliases)}:
            if owner.setdefault(alias, g.key) != g.key:
                clashes.append((alias, owner[alias], g.key))
    assert clashes == []


def test_every_nvml_name_also_works_as_a_gpu_argument(cat):
    """`--gpu "NVIDIA H100 80GB HBM3"` (what nvidia-smi prints) must name the same card the probe matches."""
    wrong = []
    for g in cat.gpus.values():
        for n in g.nvml_names:
            try:
                got = cat.gpu(n).key
            except UsageError:
                got = None
            if got != g.key:
                wrong.append((n, g.key, got))
    assert wrong == []


def test_loader_rejects_an_nvml_name_claimed_twice(tmp_path):
    text = GPU_TOML.format(key="a", name="A", nvml="NVIDIA Card", pci="AAAA") + GPU_TOML.format(
        key="b", name="B", nvml="NVIDIA Card", pci="BBBB")
    with pytest.raises(CatalogError, match="NVML name 'NVIDIA Card' is claimed by both 'a' and 'b'"):
        Catalog().add_file(tmp_path / "dup.toml", text=text)


def test_loader_rejects_a_pci_id_claimed_twice(tmp_path):
    text = GPU_TOML.format(key="a", name="A", nvml="NVIDIA A", pci="2204") + GPU_TOML.format(
        key="b", name="B", nvml="NVIDIA B", pci="2204")
    with pytest.raises(CatalogError, match="PCI device id '2204' is claimed by both"):
        Catalog().add_file(tmp_path / "dup.toml", text=text)


def test_a_second_file_cannot_claim_a_builtin_pci_id(tmp_path):
    cat = Catalog()
    cat.add_file(DATA_DIR / "gpus.toml")
    extra = GPU_TOML.format(key="my-3090", name="My 3090", nvml="My 3090", pci="2204")
    with pytest.raises(CatalogError, match="'2204' is claimed by both 'rtx-3090' and 'my-3090'"):
        cat.add_file(tmp_path / "extra.toml", text=extra)


# ---- real captures match the right card --------------------------------------------------------------------------
def test_every_xml_capture_is_listed():
    assert sorted(p.name for p in CAPTURES.glob("*.xml")) == sorted(XML_EXPECTED)


@pytest.mark.parametrize("fname,key", sorted(XML_EXPECTED.items()))
def test_xml_capture_matches_expected_gpu(cat, fname, key):
    gpus = _xml_gpus(CAPTURES / fname)
    assert gpus
    for product_name, pci_device_id, _ in gpus:
        spec = cat.match_gpu(product_name, pci_device_id)
        assert spec is not None, f"{fname}: {product_name!r} / {pci_device_id!r} matched nothing"
        assert spec.key == key


@pytest.mark.parametrize("fname,key", sorted(XML_EXPECTED.items()))
def test_catalog_memory_is_the_captured_framebuffer_total(cat, fname, key):
    # MEMORY_NOT_THE_CARDS: the capture's framebuffer is not the card's (see the entries' notes): it must differ
    for _, _, total in _xml_gpus(CAPTURES / fname):
        mib = int(total.split()[0])
        assert (cat.gpus[key].memory_bytes == mib * 2**20) is (fname not in MEMORY_NOT_THE_CARDS), (fname, mib)


def test_every_text_capture_is_listed():
    listed = set(TEXT_EXPECTED) | {"utkuozdemir_nvidia_gpu_exporter__exporter_testdata_query.txt"}
    assert sorted(p.name for p in CAPTURES.glob("*.txt")) == sorted(listed)


@pytest.mark.parametrize("fname,key", sorted(TEXT_EXPECTED.items()))
def test_text_capture_matches_expected_gpu(cat, fname, key):
    for name, device_id in _text_gpus(CAPTURES / fname):
        spec = cat.match_gpu(name, device_id)
        assert spec is not None and spec.key == key, (name, device_id)


def test_query_csv_capture_matches_by_name_and_leaves_the_made_up_gpu_unmatched(cat):
    lines = (CAPTURES / "utkuozdemir_nvidia_gpu_exporter__exporter_testdata_query.txt").read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    rows = [dict(zip(header, (c.strip() for c in line.split(",")))) for line in lines[1:] if line.strip()]
    got = {r["name"]: cat.match_gpu(r["name"]) for r in rows}
    assert got["NVIDIA GeForce RTX 2080 SUPER"].key == "rtx-2080-super"
    assert got["Some Other GPU"] is None


def test_virtualised_a10g_pci_id_is_ignored_and_the_name_matches(cat):
    assert pci_device_key("000000DE") is None
    assert cat.match_gpu("NVIDIA A10G", "000000DE").key == "a10g"


def test_graphics_device_matches_by_pci_id(cat):
    assert cat.match_gpu("Graphics Device", "218410DE").key == "gtx-1660"
    assert cat.match_gpu("Graphics Device", "218210DE").key == "gtx-1660-ti"


def test_vgpu_guest_matches_tesla_p4_by_pci_id(cat):
    assert cat.match_gpu("GRID P4-1Q", "1BB310DE").key == "tesla-p4"


def test_shared_nvml_name_is_told_apart_by_pci_id(cat):
    assert cat.match_gpu("NVIDIA GeForce RTX 3060", "24C710DE").key == "rtx-3060-8gb"
    assert cat.match_gpu("NVIDIA GeForce RTX 3060", "250310DE").key == "rtx-3060"
    assert cat.match_gpu("NVIDIA GeForce RTX 4060 Ti", "280510DE").key == "rtx-4060-ti-16gb"
    assert cat.match_gpu("NVIDIA GeForce RTX 4060 Ti", "280310DE").key == "rtx-4060-ti"
    assert cat.match_gpu("NVIDIA GeForce RTX 3080", "220A10DE").key == "rtx-3080-12gb"


def test_old_driver_names_match(cat):
    assert cat.match_gpu("GeForce RTX 3090").key == "rtx-3090"
    assert cat.match_gpu("A100-SXM4-40GB").key == "a100-sxm4-40gb"
    assert cat.match_gpu("NVIDIA A100-SXM4-40GB").key == "a100-sxm4-40gb"
    assert cat.match_gpu("Tesla V100-PCIE-32GB").key == "v100-pcie-32gb"


def test_unknown_card_matches_nothing(cat):
    assert cat.match_gpu("Some Other GPU", "FFFF10DE") is None


# ---- figures pinned to datasheets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key,memory_bytes,bandwidth", [
    ("rtx-3090", 25769803776, 936),
    ("a100-sxm4-40gb", 42949672960, 1555),
    ("h100-sxm", None, 3350),
    ("h200", None, 4800),
    ("t4", None, 320),
    ("rtx-4090", None, 1008),
    ("a100-sxm4-80gb", 81920 * 2**20, 2039),
    ("rtx-5090", 32 * 2**30, 1792),
])
def test_datasheet_spot_checks(cat, key, memory_bytes, bandwidth):
    g = cat.gpus[key]
    assert g.bandwidth_gbps == bandwidth
    if memory_bytes is not None:
        assert g.memory_bytes == memory_bytes


def test_dense_tensor_figures_not_sparse(cat):
    # datasheets quote 2:4-sparse numbers; the catalog holds dense ones
    assert cat.gpus["h100-sxm"].bf16_tflops == pytest.approx(989.5)
    assert cat.gpus["a100-sxm4-80gb"].bf16_tflops == 312
    assert cat.gpus["l40s"].fp8_tflops == 733
    assert cat.gpus["rtx-3090"].fp16_tflops == 71  # FP32 accumulate (142 with FP16 accumulate)
    assert cat.gpus["rtx-4090"].fp16_tflops == pytest.approx(165.2)
    assert cat.gpus["b200"].fp4_tflops == 9000


def test_memory_and_bandwidth_positive_everywhere(cat):
    for g in cat.gpus.values():
        assert g.memory_bytes > 0 and g.bandwidth_gbps > 0, g.key
        assert g.memory_bytes % 2**20 == 0, g.key  # whole MiB, as NVML reports


def test_absent_means_none_never_zero(cat):
    for g in cat.gpus.values():
        for f in OPTIONAL_NUMBERS:
            v = getattr(g, f)
            assert v is None or v > 0, (g.key, f, v)


def test_bandwidth_agrees_with_bus_width(cat):
    """Per-pin data rate = GB/s * 8 / bus bits must be a real memory speed (catches TB/s typed as GB/s)."""
    for g in cat.gpus.values():
        if g.memory_bus_bits:
            gbps_per_pin = g.bandwidth_gbps * 8 / g.memory_bus_bits
            assert 0.5 <= gbps_per_pin <= 32, (g.key, gbps_per_pin)


def test_compute_capability_fits_architecture(cat):
    for g in cat.gpus.values():
        assert g.compute_capability in ARCH_CC[g.architecture], (g.key, g.architecture, g.compute_capability)


def test_tensor_ratios_are_consistent(cat):
    for g in cat.gpus.values():
        if g.fp16_tflops and g.bf16_tflops:
            assert g.bf16_tflops == g.fp16_tflops, g.key
        if g.fp16_tflops and g.fp8_tflops:
            assert 1.9 <= g.fp8_tflops / g.fp16_tflops <= 2.1, g.key
        if g.fp8_tflops and g.fp4_tflops:
            # GeForce fp8 is the FP32-accumulate rate, half the FP16-accumulate one; FP4 always accumulates in FP32
            # Blackwell Ultra (B300, CC 10.3) runs dense FP4 at 3x its FP8 rate (HGX B300 datasheet)
            ratio = 4 if g.vendor_class == "geforce" else 3 if g.compute_capability == "10.3" else 2
            assert 0.95 * ratio <= g.fp4_tflops / g.fp8_tflops <= 1.05 * ratio, g.key
        if g.fp32_tflops and g.fp16_tflops and g.tensor_cores:
            assert g.fp16_tflops > g.fp32_tflops, g.key


def test_mig_capable_cards(cat):
    for key in ("a30", "a100-pcie-40gb", "a100-pcie-80gb", "a100-sxm4-40gb", "a100-sxm4-80gb", "h100-pcie",
                "h100-sxm", "h100-nvl", "h200", "h200-nvl", "gh200", "b200", "rtx-pro-6000-blackwell",
                "rtx-pro-6000-blackwell-max-q"):
        assert cat.gpus[key].mig, key
    for key in ("t4", "l40s", "rtx-4090", "rtx-a6000"):
        assert not cat.gpus[key].mig, key


def test_unified_memory_only_where_the_gpu_uses_host_memory(cat):
    unified = {k for k, g in cat.gpus.items() if g.unified_memory}
    assert {"jetson-agx-orin-64gb", "jetson-agx-orin-32gb", "jetson-orin-nx-16gb", "jetson-orin-nano-8gb"} <= unified
    assert all(cat.gpus[k].vendor_class == "embedded" for k in unified)
    gh = cat.gpus["gh200"]
    assert not gh.unified_memory and gh.memory_bytes == 96 * 2**30 and "NVLink-C2C" in gh.notes


def test_every_entry_names_a_source(cat):
    for g in cat.gpus.values():
        assert len(g.source) > 20, g.key


# ---- lookups -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("typed", ["RTX 3090", "NVIDIA GeForce RTX 3090", "rtx-3090", "3090", "GeForce RTX 3090"])
def test_gpu_lookup_forms(cat, typed):
    assert cat.gpu(typed).key == "rtx-3090"


def test_unknown_gpu_is_a_usage_error_with_suggestions(cat):
    with pytest.raises(UsageError, match="did you mean"):
        cat.gpu("rtx-3095")


# ---- issue 12: reported totals, datasheet sizes apart, cards told apart by memory ----------------------------------
def test_rtx_5060_ti_8gb_and_16gb_are_told_apart_by_the_reported_memory_total(cat):
    # same NVML name and PCI id 2D04; the 16 GB card reports ~15.5 GiB, the 8 GB card ~7.5 GiB
    name = "NVIDIA GeForce RTX 5060 Ti"
    assert cat.match_gpu(name, "0x2D0410DE", 16311 * 2**20).key == "rtx-5060-ti-16gb"
    assert cat.match_gpu(name, "0x2D0410DE", 8151 * 2**20).key == "rtx-5060-ti-8gb"
    assert cat.match_gpu(None, "2D04", 8151 * 2**20).key == "rtx-5060-ti-8gb"
    assert cat.match_gpu(name, "2D04") is None  # no memory total: never guess between the two
    assert cat.match_gpu(name, "2D04", 4 * 2**30) is None  # nowhere near either card


def test_ambiguous_gpu_name_lists_both_cards(cat):
    with pytest.raises(UsageError) as e:
        cat.gpu("rtx-5060-ti")
    assert "rtx-5060-ti-8gb" in str(e.value) and "rtx-5060-ti-16gb" in str(e.value)


@pytest.mark.parametrize("key,reported_mib,datasheet", [
    ("a10", 23028, 24 * 2**30),  # 22.49 GiB
    ("l4", 23034, 24 * 2**30),  # 22.49 GiB
    ("l40", 46068, 48 * 2**30),
    ("b200", 183359, 180 * 2**30),  # 179.06 GiB
    ("dgx-spark", 122548, 128 * 2**30),  # 119.68 GiB
])
def test_memory_is_the_reported_total_and_the_datasheet_size_is_kept_apart(cat, key, reported_mib, datasheet):
    g = cat.gpus[key]
    assert g.memory_bytes == reported_mib * 2**20 and g.datasheet_memory_bytes == datasheet


def test_plan_counts_the_reported_total_as_free(cat):
    from gpufit.estimator.types import devices_from_specs

    (d,) = devices_from_specs([(cat.gpu("a10"), 1)])
    assert d.total_bytes == d.free_bytes == 23028 * 2**20


def test_jetson_agx_orin_and_dgx_spark_have_tensor_throughput(cat):
    assert cat.gpus["jetson-agx-orin-64gb"].fp16_tflops == 42.5
    assert cat.gpus["jetson-agx-orin-32gb"].fp16_tflops == 27
    assert cat.gpus["dgx-spark"].bf16_tflops == 125


def test_loader_rejects_a_reported_total_above_the_datasheet_size(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(GPU_TOML.format(key="x", name="X", nvml="X", pci="FFF0").replace(
        "memory_bytes = 25769803776", "memory_bytes = 25769803776\ndatasheet_memory_bytes = 17179869184"))
    from gpufit.catalog.loader import load_file

    with pytest.raises(CatalogError) as e:
        load_file(p, cache=False)
    assert "exceeds datasheet_memory_bytes" in str(e.value)
