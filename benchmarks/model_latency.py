"""Per-image latency of each exported purifier in onnxruntime on this machine's CPU, with
no HTTP in front: what a model costs before the service adds anything (issue 27's
"<= 60 ms per 224x224 image on the 2 cores").

    python -m benchmarks.model_latency [--models photo-guided] [--sizes 224 640x480]

One session per model file (all cores, ORT_ENABLE_ALL): model.onnx and each variant the
card lists that runs on a CPU (model.cpu.onnx, onnxruntime's optimised graph; and
model.int8.onnx); the seconds to open it, then batch 1, `--warmup` runs and `--runs`
timed runs of a real photograph resized to the size; median and p90. Run it alone on the
machine. Results: benchmarks/results/model_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.sizes import dims, label

REPO = Path(__file__).resolve().parents[1]


# The card's variants timed beside model.onnx (fp16 is for GPUs).
CPU_VARIANTS = ("cpu_graph", "int8")


def photo(size: str, channels: int) -> np.ndarray:
    """scikit-image's astronaut, resized to the size ("224" or "640x480"), as NCHW
    float32 in [0, 1]."""
    from PIL import Image

    from training.data.photos import source_dir

    img = Image.open(source_dir("scikit-image") / "astronaut.png").convert("RGB")
    img = img.resize(dims(size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    if channels == 1:
        arr = arr.mean(axis=0, keepdims=True)
    return arr[None]


def measure(onnx_path: Path, x: np.ndarray, threads: int, warmup: int, runs: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    open_s = time.perf_counter() - t0
    for _ in range(warmup):
        session.run(["purified"], {"image": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(["purified"], {"image": x})
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "runs": runs,
        "open_s": round(open_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every exported model")
    parser.add_argument("--sizes", nargs="+", default=["224", "512", "640x480"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    repo = REPO / "exported_models"
    names = args.models or sorted(
        p.name for p in repo.iterdir() if (p / "1" / "card.json").exists()
    )
    rows = []
    for name in names:
        card = json.loads((repo / name / "1" / "card.json").read_text())
        files = ["model.onnx"] + [
            card[k]["file"] for k in CPU_VARIANTS if isinstance(card.get(k), dict)
        ]
        for size in args.sizes:
            x = photo(size, int(card["channels"]))
            for file in files:
                result = measure(repo / name / "1" / file, x, args.threads, args.warmup, args.runs)
                rows.append(
                    {
                        "model": name,
                        "file": file,
                        "size": size,
                        "gflops_at_224": card["gflops_at_224"],
                        **result,
                    }
                )
                print(rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "benchmarks.model_latency", *sys.argv[1:]])
    meta = {
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "command": command,
    }
    (args.out / "model_latency.json").write_text(
        json.dumps({**meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"Per-image latency in onnxruntime (CPU, {args.threads} threads, batch 1, "
        f"{args.runs} runs after {args.warmup} warm-up): `{command}`.",
        "",
        "| model | file | GFLOPs at 224 | image | median ms | p90 ms | open s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['file']} | {r['gflops_at_224']} | {label(r['size'])} | "
            f"{r['median_ms']} | "
            f"{r['p90_ms']} | {r['open_s']} |"
        )
    (args.out / "model_latency.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
