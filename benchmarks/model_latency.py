"""Per-image latency of each exported purifier in onnxruntime on this machine's CPU, with
no HTTP in front: what a model costs before the service adds anything (issue 27's
"<= 60 ms per 224x224 image on the 2 cores").

    python -m benchmarks.model_latency [--models photo-guided] [--sizes 224 512]

One session per model (all cores, ORT_ENABLE_ALL), batch 1, `--warmup` runs, then
`--runs` timed runs of a real photograph crop; median and p90. Run it alone on the
machine. Results: benchmarks/results/model_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def photo(size: int, channels: int) -> np.ndarray:
    """scikit-image's astronaut, resized to size x size, as NCHW float32 in [0, 1]."""
    from PIL import Image

    from training.data.photos import source_dir

    img = Image.open(source_dir("scikit-image") / "astronaut.png").convert("RGB")
    img = img.resize((size, size), Image.Resampling.BICUBIC)
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
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every exported model")
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512])
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
        for size in args.sizes:
            x = photo(size, int(card["channels"]))
            result = measure(
                repo / name / "1" / "model.onnx", x, args.threads, args.warmup, args.runs
            )
            rows.append(
                {"model": name, "size": size, "gflops_at_224": card["gflops_at_224"], **result}
            )
            print(rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "command": "python -m benchmarks.model_latency",
    }
    (args.out / "model_latency.json").write_text(
        json.dumps({**meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"Per-image latency in onnxruntime (CPU, {args.threads} threads, batch 1, "
        f"{args.runs} runs after {args.warmup} warm-up): `python -m benchmarks.model_latency`.",
        "",
        "| model | GFLOPs at 224 | image | median ms | p90 ms |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['size']}x{r['size']}"
        lines.append(
            f"| {r['model']} | {r['gflops_at_224']} | {size} | {r['median_ms']} | {r['p90_ms']} |"
        )
    (args.out / "model_latency.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
