"""Compile the fake libnvidia-ml.so.1 (fakenvml.c) with the system C compiler and run gpufit against it.

`FakeNvmlLibrary.build(folder)` makes two builds: `current` (an R535+ driver) and `old` (-DOLD_DRIVER, an
R470 driver without nvmlDeviceGetMemoryInfo_v2, the _v3 process lists and ClocksEventReasons). `run()` starts
`python -m gpufit ...` with LD_LIBRARY_PATH on one build, so the real, unmodified pynvml dlopens it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("fakenvml.c")
LIBRARY = "libnvidia-ml.so.1"  # the soname pynvml dlopens on Linux
# In the library only where OLD_DRIVER is not defined: an R470 driver lacks them.
NEWER_SYMBOLS = (
    "nvmlDeviceGetMemoryInfo_v2",  # R510
    "nvmlDeviceGetComputeRunningProcesses_v3",  # R510
    "nvmlDeviceGetGraphicsRunningProcesses_v3",  # R510
    "nvmlDeviceGetCurrentClocksEventReasons",  # R535
)


def find_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_library(folder: Path, old_driver: bool = False, compiler: str | None = None) -> Path:
    compiler = compiler or find_compiler()
    if compiler is None:
        raise FileNotFoundError("no C compiler (cc, gcc or clang) on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / LIBRARY
    cmd = [compiler, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-fvisibility=hidden",
           *(["-DOLD_DRIVER"] if old_driver else []), "-o", str(out), str(SOURCE)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or r.stderr.strip():  # a warning is a bug in the fake too
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr}")
    return out


@dataclass
class FakeNvmlLibrary:
    current: Path  # folder holding libnvidia-ml.so.1
    old: Path

    @classmethod
    def build(cls, folder: Path) -> "FakeNvmlLibrary":
        return cls(current=compile_library(folder / "current").parent,
                   old=compile_library(folder / "old", old_driver=True).parent)

    def env(self, table: Path | None, old: bool = False, **faults: str) -> dict[str, str]:
        """The environment of a gpufit process that should see the fake driver serving `table`.

        `faults` become FAKENVML_<NAME> variables (init_error, lost, hang, errors, call_log).
        """
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FAKENVML_") and k not in ("CUDA_VISIBLE_DEVICES", "GPUFIT_DEBUG")}
        folder = str(self.old if old else self.current)
        env["LD_LIBRARY_PATH"] = folder + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        if table is not None:
            env["FAKENVML_TABLE"] = str(table)
        for k, v in faults.items():
            env[f"FAKENVML_{k.upper()}"] = str(v)
        return env

    def run(self, args, table: Path | None, old: bool = False, timeout: float = 60, **faults):
        """`python -m gpufit ARGS` against the fake; returns the CompletedProcess (text)."""
        return subprocess.run([sys.executable, "-m", "gpufit", *args], env=self.env(table, old, **faults),
                              capture_output=True, text=True, timeout=timeout)

    def start(self, args, table: Path | None, old: bool = False, **faults) -> subprocess.Popen:
        """`run` without waiting: `finish(proc)` gives the CompletedProcess."""
        return subprocess.Popen([sys.executable, "-m", "gpufit", *args], env=self.env(table, old, **faults),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = 60) -> subprocess.CompletedProcess:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
