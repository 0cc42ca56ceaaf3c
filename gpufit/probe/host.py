"""The host half of a snapshot: name, OS, CPU, RAM (psutil, imported lazily) and the time it was taken."""

from __future__ import annotations

import datetime
import os
import platform
import socket

from .snapshot import HostInfo


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def cpu_model() -> str | None:
    """The CPU's marketing name: /proc/cpuinfo on Linux, platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                # x86: "model name"; arm64 kernels: "Model" or nothing (then platform below)
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def host_info() -> HostInfo:
    """Hostname, OS, CPU count/model, RAM total/available. Driver fields are filled by the NVML probe."""
    total = available = None
    try:
        import psutil

        vm = psutil.virtual_memory()
        total, available = int(vm.total), int(vm.available)
    except Exception:  # psutil missing or unable to read memory: leave the RAM fields null
        pass
    return HostInfo(
        hostname=socket.gethostname() or None,
        os=f"{platform.system()} {platform.release()}".strip() or None,
        cpu_count=os.cpu_count(),
        cpu_model=cpu_model(),
        ram_total_bytes=total,
        ram_available_bytes=available,
        taken_at=utc_now_iso(),
    )


def process_name(pid: int) -> str | None:
    """Best effort: None when the process is gone, hidden (another PID namespace) or not ours to read."""
    try:
        import psutil

        return psutil.Process(pid).name() or None
    except Exception:
        return None
