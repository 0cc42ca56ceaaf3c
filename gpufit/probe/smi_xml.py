"""Read an `nvidia-smi -q -x` capture into a Snapshot, so another box can be planned from here.

The XML differs across driver generations (DTD v10 .. v13): power lives in <power_readings> (power_draw,
enforced_power_limit) or <gpu_power_readings> (power_draw / average_power_draw / instant_power_draw,
current_power_limit); ECC counts are single_bit/double_bit totals (v10/v11) or sram_/dram_ (un)correctable
(v12), with SRAM uncorrectable split into parity and SEC-DED in v13; throttle reasons are
<clocks_throttle_reasons> before 535 and <clocks_event_reasons> after. Values such as "N/A",
"[Not Supported]" or "Requested functionality has been deprecated" become None with the text in `errors`.
The XML carries no compute capability and no MIG device UUIDs or profile names: those stay None.
"""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET

from ..errors import SnapshotError
from ..units import GB, GIB, KIB, MIB
from .snapshot import (
    Clocks,
    Ecc,
    EccCounts,
    GpuState,
    HostInfo,
    Memory,
    Mig,
    MigDevice,
    Pcie,
    Process,
    Snapshot,
    Utilization,
)

_UNITS = {"b": 1, "kib": KIB, "mib": MIB, "gib": GIB, "kb": 10**3, "mb": 10**6, "gb": GB}
_NUM_RE = re.compile(r"^\s*([-+]?[0-9]+(?:\.[0-9]+)?)\s*([A-Za-z%]*)\s*$", re.ASCII)
_IMPORTANT_ABSENT = "not in this nvidia-smi capture"


_MAX_VALUE = 2.0**64  # NVML reports at most unsigned 64-bit values


def _shown(raw: str) -> str:
    v = raw.strip()
    return repr(v) if len(v) <= 40 else repr(v[:37] + "...")


class Reader:
    """Turns nvidia-smi value strings into numbers, recording in `errors` why a value is None."""

    def __init__(self):
        self.errors: dict[str, str] = {}

    def _missing(self, field, raw):
        self.errors[field] = _IMPORTANT_ABSENT if raw is None else f"nvidia-smi reported {raw.strip()!r}"

    def number(self, field, raw, kind=float):
        """'27 C' / '67.03 W' / '1275 MHz' / '16x' / '30 %' -> number; 'N/A' -> None."""
        v = (raw or "").strip()
        if re.fullmatch(r"\d+x", v):  # PCIe link width "16x"
            v = v[:-1]
        m = _NUM_RE.match(v)
        if raw is None or not m:
            self._missing(field, raw)
            return None
        value = float(m.group(1))
        if not abs(value) < _MAX_VALUE:  # a 400-digit "number" is no reading (and float() made it inf)
            self.errors[field] = f"nvidia-smi value {_shown(raw)} is out of range"
            return None
        return int(value) if kind is int else value

    def bytes(self, field, raw):
        """'24576 MiB' -> 25769803776; 'N/A' -> None."""
        m = _NUM_RE.match(raw or "")
        unit = (m.group(2) if m else "").lower() or "mib"  # nvidia-smi prints MiB; CSV headers say [MiB]
        if raw is None or not m or unit not in _UNITS:
            self._missing(field, raw)
            return None
        value = float(m.group(1)) * _UNITS[unit]
        if not abs(value) < _MAX_VALUE:
            self.errors[field] = f"nvidia-smi value {_shown(raw)} is out of range"
            return None
        return int(round(value))

    def text(self, field, raw):
        v = (raw or "").strip()
        if not v or _is_na(v):
            self._missing(field, raw)
            return None
        return v

    def flag(self, field, raw):
        """'Enabled'/'Yes'/'Active' -> True, 'Disabled'/'No'/'Not Active' -> False, else None."""
        v = (raw or "").strip().lower()
        if v in ("enabled", "yes", "active", "true"):
            return True
        if v in ("disabled", "no", "not active", "false"):
            return False
        self._missing(field, raw)
        return None


# nvidia-smi's words for "no value" (nvidia-smi(1) and its -q output: "N/A", "[Not Supported]",
# "[Unknown Error]", "[Insufficient Permissions]", "[GPU is lost]", "Not Found", "Requested functionality has
# been deprecated"); it brackets every placeholder, so anything in square brackets is one too.
_NA_WORDS = ("n/a", "na", "not supported", "unknown error", "unknown", "none", "redacted", "insufficient permissions",
             "not found", "not available", "not applicable", "gpu is lost", "error", "unavailable")
_NA_PREFIXES = ("requested functionality has been deprecated", "gpu requires reset", "gpu is lost",
                "unable to determine")
# the device is gone: nvidia-smi prints these in place of values of a GPU that fell off the bus (Xid 79)
LOST_WORDS = ("gpu is lost", "gpu requires reset")


def _is_na(v: str) -> bool:
    s = v.strip()
    if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
        return True
    s = s.lower()
    return s in _NA_WORDS or s.startswith(_NA_PREFIXES)


def lost_text(v: str | None) -> bool:
    """True if an nvidia-smi value says the GPU is lost (needs a reset or reboot)."""
    return v is not None and any(w in v.lower() for w in LOST_WORDS)


def pci_device_id(r: Reader, raw) -> str | None:
    """'20B210DE' / '0x233010DE' -> '0x20B210DE'; '[REDACTED]' -> None."""
    v = (raw or "").strip()
    v = v[2:] if v.lower().startswith("0x") else v
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", v):
        r._missing("pci_device_id", raw)
        return None
    return "0x" + v.upper()


def smi_timestamp(raw) -> str | None:
    """'Fri Aug  4 11:44:30 2023' -> '2023-08-04T11:44:30' (local time of the captured box: no zone)."""
    if not raw:
        return None
    try:
        return datetime.datetime.strptime(" ".join(raw.split()), "%a %b %d %H:%M:%S %Y").isoformat()
    except ValueError:
        return raw.strip()


def parse_xml(text: str | bytes, path: str = "<xml>") -> Snapshot:
    """Parse `nvidia-smi -q -x` output. Invalid XML or another document -> SnapshotError naming `path`."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise SnapshotError(path, f"not valid XML ({e})") from None
    if root.tag != "nvidia_smi_log":
        raise SnapshotError(path, f"root element is <{root.tag}>, expected <nvidia_smi_log> (nvidia-smi -q -x)")
    gpus = tuple(_gpu(i, el, path) for i, el in enumerate(root.findall("gpu")))
    host = HostInfo(
        hostname=None,  # nvidia-smi -q -x does not name the host
        driver_version=_clean(root.findtext("driver_version")),
        cuda_driver_version=_clean(root.findtext("cuda_version")),
        taken_at=smi_timestamp(root.findtext("timestamp")),
    )
    return Snapshot(host=host, gpus=gpus, source=f"nvidia-smi-xml:{path}")


def _clean(v):
    return None if v is None or _is_na(v) else v.strip()


def _lost_gpu(index: int, g: ET.Element, lost: str) -> GpuState:
    """A GPU whose values read "GPU is lost": reported, never used; only what still identifies it is kept."""
    r = Reader()
    t = g.findtext
    why = (f"nvidia-smi reported {lost.strip()!r} for this GPU: it fell off the bus or needs a reset "
           "(check dmesg for Xid 79; reset it or reboot)")
    return GpuState(
        index=index,
        name=r.text("name", t("product_name")),
        uuid=r.text("uuid", t("uuid")),
        serial=r.text("serial", t("serial")),
        # the <gpu id="..."> attribute still names the bus slot when every value is gone
        pci_bus_id=r.text("pci_bus_id", t("pci/pci_bus_id")) or g.get("id"),
        pci_device_id=pci_device_id(r, t("pci/pci_device_id")),
        available=False,
        errors={**r.errors, "gpu": why},
    )


def _gpu(index: int, g: ET.Element, path: str) -> GpuState:
    # a value that says the device is lost: the whole GPU is unavailable, not a GPU with odd fields
    lost = next((el.text for el in g.iter() if lost_text(el.text)), None)
    if lost is not None:
        return _lost_gpu(index, g, lost)
    r = Reader()
    t = g.findtext
    link = "pci/pci_gpu_link_info/"
    memory = _memory(r, g.find("fb_memory_usage"), "memory")
    unified = memory.total in (None, 0) and g.find("fb_memory_usage") is not None
    if unified:
        r.errors["memory"] = ("no framebuffer reported: unified-memory part? host RAM is not in an nvidia-smi "
                              "capture, so memory is unknown")
    power = g.find("gpu_power_readings")
    if power is None:
        power = g.find("power_readings")
    pt = power.findtext if power is not None else (lambda _k: None)
    draw = next((v for v in (pt("average_power_draw"), pt("power_draw"), pt("instant_power_draw"))
                 if v is not None and not _is_na(v)), pt("power_draw") or pt("average_power_draw"))
    limit = next((v for v in (pt("current_power_limit"), pt("enforced_power_limit"), pt("power_limit"))
                  if v is not None and not _is_na(v)), pt("current_power_limit") or pt("enforced_power_limit"))
    r.errors["compute_capability"] = "not in nvidia-smi -q -x output"
    return GpuState(
        index=index,
        name=r.text("name", t("product_name")),
        uuid=r.text("uuid", t("uuid")),
        serial=r.text("serial", t("serial")),
        pci_bus_id=r.text("pci_bus_id", t("pci/pci_bus_id") or g.get("id")),
        pci_device_id=pci_device_id(r, t("pci/pci_device_id")),
        memory=memory,
        clocks_mhz=Clocks(
            sm=r.number("clocks_mhz.sm", t("clocks/sm_clock"), int),
            mem=r.number("clocks_mhz.mem", t("clocks/mem_clock"), int),
            sm_max=r.number("clocks_mhz.sm_max", t("max_clocks/sm_clock"), int),
            mem_max=r.number("clocks_mhz.mem_max", t("max_clocks/mem_clock"), int),
        ),
        temperature_c=r.number("temperature_c", t("temperature/gpu_temp"), int),
        power_w=r.number("power_w", draw),
        power_limit_w=r.number("power_limit_w", limit),
        utilization=Utilization(
            gpu=r.number("utilization.gpu", t("utilization/gpu_util"), int),
            memory=r.number("utilization.memory", t("utilization/memory_util"), int),
        ),
        pcie=Pcie(
            gen=r.number("pcie.gen", t(link + "pcie_gen/current_link_gen"), int),
            width=r.number("pcie.width", t(link + "link_widths/current_link_width"), int),
            gen_max=r.number("pcie.gen_max", t(link + "pcie_gen/max_link_gen"), int),
            width_max=r.number("pcie.width_max", t(link + "link_widths/max_link_width"), int),
        ),
        mig=_mig(r, g),
        processes=_processes(r, g),
        ecc=_ecc(r, g),
        throttle_reasons=_throttle(g),
        fan_percent=r.number("fan_percent", t("fan_speed"), int),
        performance_state=r.text("performance_state", t("performance_state")),
        unified_memory=unified,
        errors=r.errors,
    )


def _memory(r: Reader, el, field) -> Memory:
    if el is None:
        r.errors[field] = _IMPORTANT_ABSENT
        return Memory()
    t = el.findtext
    reserved = t("reserved")
    mem = Memory(
        total=r.bytes(f"{field}.total", t("total")),
        free=r.bytes(f"{field}.free", t("free")),
        used=r.bytes(f"{field}.used", t("used")),
        reserved=r.bytes(f"{field}.reserved", reserved) if reserved is not None else None,
    )
    if reserved is None:
        r.errors[f"{field}.reserved"] = "not in this nvidia-smi version's output"
    return mem


def _mig(r: Reader, g) -> Mig:
    mode = g.findtext("mig_mode/current_mig")
    if mode is None or _is_na(mode):
        if mode is not None:
            r.errors["mig"] = f"nvidia-smi reported {mode.strip()!r}"
        return Mig()
    enabled = r.flag("mig", mode)
    devices = []
    for el in g.findall("mig_devices/mig_device"):
        sub = Reader()
        i = sub.number("index", el.findtext("index"), int)
        devices.append(MigDevice(
            index=i if i is not None else len(devices),
            gpu_instance_id=sub.number("gpu_instance_id", el.findtext("gpu_instance_id"), int),
            compute_instance_id=sub.number("compute_instance_id", el.findtext("compute_instance_id"), int),
            multiprocessor_count=sub.number(
                "multiprocessor_count", el.findtext("device_attributes/shared/multiprocessor_count"), int),
            memory=_memory(sub, el.find("fb_memory_usage"), "memory"),
        ))
    if devices:
        r.errors["mig.devices"] = "nvidia-smi -q -x carries no MIG device UUID or profile name"
    return Mig(enabled=enabled, devices=tuple(devices))


_PROCESS_KIND = {"C": "compute", "G": "graphics", "C+G": "compute", "M": "compute", "M+C": "compute"}


def _processes(r: Reader, g) -> tuple[Process, ...]:
    out = []
    for p in g.findall("processes/process_info"):
        sub = Reader()
        pid = sub.number("pid", p.findtext("pid"), int)
        if pid is None:
            continue
        used = p.findtext("used_memory")
        out.append(Process(
            pid=pid,
            name=sub.text("name", p.findtext("process_name")),
            used_bytes=sub.bytes("used_bytes", used),
            kind=_PROCESS_KIND.get((p.findtext("type") or "C").strip(), "compute"),
        ))
    return tuple(out)


def _sum(values) -> int | None:
    nums = [int(v) for v in values if v is not None and re.fullmatch(r"\s*\d+\s*", v)]
    return sum(nums) if nums else None


def _ecc_counts(el) -> EccCounts:
    """One <volatile> or <aggregate> block in any of the three layouts."""
    if el is None:
        return EccCounts()
    t = el.findtext
    if el.find("single_bit") is not None:  # v10 / v11: Tesla-era per-unit counters with totals
        return EccCounts(corrected=_sum([t("single_bit/total")]), uncorrected=_sum([t("double_bit/total")]))
    return EccCounts(
        corrected=_sum([t("sram_correctable"), t("dram_correctable")]),
        uncorrected=_sum([t("sram_uncorrectable"), t("sram_uncorrectable_parity"),
                          t("sram_uncorrectable_secded"), t("dram_uncorrectable")]),
    )


def _ecc(r: Reader, g) -> Ecc:
    mode = g.findtext("ecc_mode/current_ecc")
    enabled = r.flag("ecc", mode) if mode is not None else None
    if mode is None:
        r.errors["ecc"] = _IMPORTANT_ABSENT
    vol = _ecc_counts(g.find("ecc_errors/volatile"))
    agg = _ecc_counts(g.find("ecc_errors/aggregate"))
    if vol.corrected is None and vol.uncorrected is None:
        r.errors["ecc.volatile"] = "no ECC counts in the capture (ECC off or not supported)"
    if agg.corrected is None and agg.uncorrected is None:
        r.errors["ecc.aggregate"] = "no ECC counts in the capture (ECC off or not supported)"
    rp = Reader()
    rr = Reader()
    t = g.findtext
    return Ecc(
        enabled=enabled,
        volatile=vol,
        aggregate=agg,
        retired_pages_single=rp.number("s", t("retired_pages/multiple_single_bit_retirement/retired_count"), int),
        retired_pages_double=rp.number("d", t("retired_pages/double_bit_retirement/retired_count"), int),
        retired_pages_pending=rp.flag("p", t("retired_pages/pending_retirement")),
        remapped_rows_correctable=rr.number("c", t("remapped_rows/remapped_row_corr"), int),
        remapped_rows_uncorrectable=rr.number("u", t("remapped_rows/remapped_row_unc"), int),
        remapped_rows_pending=rr.flag("p", t("remapped_rows/remapped_row_pending")),
        remapped_rows_failure=rr.flag("f", t("remapped_rows/remapped_row_failure")),
    )


def _throttle(g) -> tuple[str, ...]:
    for block, prefix in (("clocks_event_reasons", "clocks_event_reason_"),
                          ("clocks_throttle_reasons", "clocks_throttle_reason_")):
        el = g.find(block)
        if el is not None:
            return tuple(c.tag[len(prefix):] for c in el
                         if c.tag.startswith(prefix) and (c.text or "").strip() == "Active")
    return ()
