"""The estimator is pure arithmetic: it imports no driver, host probe, CLI, TOML parser or I/O."""

import ast
import subprocess
import sys
from pathlib import Path

EST = Path(__file__).resolve().parent.parent / "gpufit" / "estimator"
FORBIDDEN = {"pynvml", "psutil", "click", "tomllib", "tomli", "os", "io", "pathlib", "subprocess", "socket",
             "shutil", "tempfile", "urllib", "http", "json", "csv", "sqlite3", "requests"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_estimator_module_imports_io_or_the_driver():
    files = sorted(EST.rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(EST)): sorted(_imports(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_importing_the_estimator_loads_none_of_them():
    code = ("import sys; import gpufit.estimator.fit, gpufit.estimator.alternatives, gpufit.estimator.engines; "
            "print(' '.join(sorted(m for m in ('pynvml', 'psutil', 'click', 'tomllib', 'tomli') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
