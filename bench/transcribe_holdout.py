#!/usr/bin/env python3
"""Transcribe the llama-bench tables of the XiongjieDai/GPU-Benchmarks-on-LLM-Inference notebooks whose
cards bench/data/tokens_per_s.csv does not hold, into bench/data/tokens_per_s_holdout.csv.

    python bench/transcribe_holdout.py PATH/TO/GPU-Benchmarks-on-LLM-Inference   # a git checkout or bare dir

The rows are the notebooks' printed results, one per `| model | size | params | backend | ngl | test | t/s |`
line, with the notebook and cell as `source`; nothing is computed. calibrate.py never reads this file:
bench/accuracy.py compares against it as cards no fitted constant saw.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

COMMIT = "aa72e0ec86c356c41f8281c9733e9a13c3675800"
NOTEBOOKS = [
    "LLaMA 3/Gaming GPUs/3070_v3.ipynb", "LLaMA 3/Gaming GPUs/3080_v3.ipynb", "LLaMA 3/Gaming GPUs/3080Ti_v3.ipynb",
    "LLaMA 3/Gaming GPUs/4070Ti_v3.ipynb", "LLaMA 3/Gaming GPUs/4080_v3.ipynb",
    "LLaMA 3/Professional GPUs/5000_Ada_v3.ipynb", "LLaMA 3/Professional GPUs/5000_Ada_4_v3.ipynb",
    "LLaMA 3/Professional GPUs/A40_v3.ipynb", "LLaMA 3/Professional GPUs/A40_4_v3.ipynb",
    "LLaMA 3/Professional GPUs/L40S_v3.ipynb", "LLaMA 3/Professional GPUs/L40S_4_v3.ipynb",
]
MODELS = {"8B": "Llama 3 8B", "70B": "Llama 3 70B"}
QUANTS = {"Q4_K - Medium": "Q4_K_M", "F16": "F16"}
ROW = re.compile(r"^\| llama (8B|70B) (Q4_K - Medium|F16)\s*\|\s*([\d.]+ GiB)\s*\|\s*([\d.]+ B)\s*\|\s*CUDA\s*\|"
                 r"\s*(\d+)\s*\|\s*((?:pp|tg) \d+)\s*\|\s*([\d.]+) ± ([\d.]+)\s*\|$")
FIELDS = ["gpu", "gpu_count", "model", "quant", "model_file_size", "params", "engine", "backend", "test", "n_prompt",
          "n_gen", "context", "tokens_per_s", "stddev", "driver", "notes", "source"]


def show(repo: Path, path: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", f"{COMMIT}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def rows(repo: Path):
    for path in NOTEBOOKS:
        nb = json.loads(show(repo, path))
        count = len(set(re.findall(r"Device (\d+): NVIDIA", json.dumps(nb)))) or 1
        for i, cell in enumerate(nb["cells"]):
            text = "".join("".join(o.get("text", [])) for o in cell.get("outputs", []))
            gpu = re.search(r"Device 0: (NVIDIA [^,]+), compute capability", text)
            build = re.search(r"build: (\w+) \((\d+)\)", text)
            for line in text.splitlines():
                m = ROW.match(line.strip())
                if not m or not gpu:
                    continue
                size, quant, fsize, params, ngl, test, tps, sd = m.groups()
                n = int(test.split()[1])
                yield {"gpu": gpu.group(1), "gpu_count": count, "model": MODELS[size], "quant": QUANTS[quant],
                       "model_file_size": fsize, "params": params,
                       "engine": "llama.cpp llama-bench (build of May 2024)", "backend": "CUDA", "test": test,
                       "n_prompt": n if test.startswith("pp") else 0, "n_gen": n if test.startswith("tg") else 0,
                       "context": "", "tokens_per_s": tps, "stddev": sd, "driver": "",
                       "notes": f"llama-bench ngl={ngl}" + (f", build {build.group(1)} ({build.group(2)})" if build else ""),
                       "source": f"github:XiongjieDai/GPU-Benchmarks-on-LLM-Inference@{COMMIT}:{path} (cell {i})"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(__file__).resolve().parent / "data" / "tokens_per_s_holdout.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        n = 0
        for r in rows(Path(argv[0])):
            w.writerow(r)
            n += 1
    print(f"{n} rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
