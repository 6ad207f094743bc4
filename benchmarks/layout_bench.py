"""Bare onnxruntime throughput of the benchmark model for each thread layout: one
session using every core, or one one-thread session per core running side by side
(PURIFIER_INSTANCES). No HTTP, no codecs: which layout the hardware prefers per size.

    python -m benchmarks.layout_bench
Writes benchmarks/results/layout_bench.{json,md}. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.serve_bench import CORES, MODEL, REPO, cpu_sessions, in_threads, write_report
from service.engine import cores_per_instance


def images_per_s(sessions: list[ort.InferenceSession], x: np.ndarray, duration: float) -> float:
    """Every session runs `x` over and over in its own thread for `duration` seconds."""
    done = [0] * len(sessions)
    end = time.perf_counter() + duration

    def work(i: int) -> None:
        while time.perf_counter() < end:
            sessions[i].run(None, {"image": x})
            done[i] += len(x)

    elapsed = in_threads(work, len(sessions))  # before reading `done`: the threads fill it
    return sum(done) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", type=int, default=[28, 224])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    layouts = {n: cpu_sessions(n, cores_per_instance(n)) for n in sorted({1, CORES})}
    for size in args.sizes:
        x = np.random.default_rng(0).random((args.batch, 1, size, size), dtype=np.float32)
        rates: dict[int, list[float]] = {n: [] for n in layouts}
        for session in [s for sessions in layouts.values() for s in sessions]:
            session.run(None, {"image": x})  # warm-up
        # The layouts take turns, round after round: this shared machine's speed drifts
        # by tens of percent over minutes, and a drift should hit both alike.
        for _ in range(args.rounds):
            for n, sessions in layouts.items():
                rates[n].append(images_per_s(sessions, x, args.duration))
        for n, measured in rates.items():
            rows.append(
                {
                    "size": size,
                    "instances": n,
                    "threads": cores_per_instance(n),
                    "images_per_s": round(statistics.median(measured), 1),
                    "rounds": [round(r, 1) for r in measured],
                }
            )
            print(rows[-1], flush=True)
    result = {
        "command": "python -m benchmarks.layout_bench " + " ".join(sys.argv[1:]),
        "model": MODEL,
        "cores": CORES,
        "batch": args.batch,
        "rows": rows,
    }
    md = (
        f"Bare onnxruntime, {MODEL}, {CORES} cores, batch {args.batch}; median of "
        f"{args.rounds} interleaved rounds of {args.duration:g} s. "
        f"`{result['command']}`\n\n"
        "| size | instances x threads | images/s (median) | rounds |\n|---|---|---|---|\n"
        + "".join(
            f"| {r['size']} | {r['instances']} x {r['threads']} | {r['images_per_s']} | "
            f"{r['rounds']} |\n"
            for r in rows
        )
    )
    write_report(args.out, "layout_bench", result, md)


if __name__ == "__main__":
    main()
