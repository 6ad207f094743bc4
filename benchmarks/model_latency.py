"""Per-image latency of each exported purifier in onnxruntime on this machine's CPU, with
no HTTP in front: what a model costs before the service adds anything (issue 27's
"<= 60 ms per 224x224 image on the 2 cores").

    python -m benchmarks.model_latency [--models photo-guided] [--sizes 224 640x480]

One session per model file (all cores, ORT_ENABLE_ALL): model.onnx and each variant the
card lists that runs on a CPU (model.cpu.onnx, onnxruntime's optimised graph; and
model.int8.onnx); the seconds to open it, then batch 1, `--warmup` runs and `--runs`
timed runs of a real photograph resized to the size; median and p90. Run it alone on the
machine. Results: benchmarks/results/model_latency.{json,md}.

A stochastic model (a `noise` input) is fed standard-normal noise; the service's own cost
for it - HMAC-SHA256 of the pixels and the keyed Philox draw (purifier/noise.py) - is
timed separately per image and reported beside the inference (issue 38's "<= 5% of
inference time").
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
from purifier.noise import feed, is_stochastic, keyed_noise

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
    inputs = dict(feed(session, x))
    for _ in range(warmup):
        session.run(["purified"], inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(["purified"], inputs)
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    result = {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
        "runs": runs,
        "open_s": round(open_s, 3),
    }
    if is_stochastic(session):
        noise_ms = keyed_noise_ms(x, runs)
        result["keyed_noise_ms"] = noise_ms
        result["keyed_noise_share"] = round(noise_ms / result["median_ms"], 4)
    return result


def keyed_noise_ms(x: np.ndarray, runs: int) -> float:
    """Median ms of what the service adds per image of a stochastic model: the HMAC of
    the decoded pixels and the keyed noise field of the image's shape."""
    key = b"benchmark-key-of-thirty-two-byte"
    pixels = np.ascontiguousarray(x[0])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        keyed_noise(key, pixels, x.shape)
        times.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(times), 3)


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
        "| model | file | GFLOPs at 224 | image | median ms | p90 ms | open s | "
        "keyed noise ms (share) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        noise = (
            f"{r['keyed_noise_ms']} ({100 * r['keyed_noise_share']:.1f}%)"
            if "keyed_noise_ms" in r
            else "-"
        )
        lines.append(
            f"| {r['model']} | {r['file']} | {r['gflops_at_224']} | {label(r['size'])} | "
            f"{r['median_ms']} | "
            f"{r['p90_ms']} | {r['open_s']} | {noise} |"
        )
    (args.out / "model_latency.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
