"""Soak: steady load against Purifier for a long time; resident memory must not grow.

Closed-loop clients (28x28 and 224x224 grey and 64x48 RGB PNGs, and a share of bad
requests; sized so that a 2-core CPU purifies them rather than shedding them) for
DURATION seconds; the server's resident memory is sampled every 5 s.
Growth = mean RSS over the last minute vs mean RSS over the first minute after warm-up.

    python -m benchmarks.soak_bench --duration 600
Writes benchmarks/results/soak_bench.{json,md}. Loopback only; run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.overload_bench import rss_mb
from benchmarks.serve_bench import REPO, start_purifier, stop, test_image, write_report


def rgb_png(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


async def clients(url: str, concurrency: int, until: float, statuses: Counter) -> None:
    bodies = [test_image(28), test_image(224), rgb_png(64, 48), b"not an image"]

    async def worker(i: int, client: httpx.AsyncClient) -> None:
        n = i
        while time.perf_counter() < until:
            body = bodies[n % len(bodies)]
            n += 1
            r = await client.post(url, content=body, headers={"Content-Type": "image/png"})
            statuses[str(r.status_code)] += 1

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(i, client) for i in range(concurrency)))


async def soak(url: str, pid: int, duration: float, concurrency: int) -> tuple[list, Counter]:
    statuses: Counter = Counter()
    samples: list[dict] = []
    t0 = time.perf_counter()
    load = asyncio.create_task(clients(url, concurrency, t0 + duration, statuses))
    while not load.done():
        samples.append({"t": round(time.perf_counter() - t0, 1), "rss_mb": round(rss_mb(pid), 1)})
        await asyncio.sleep(5.0)
    await load
    return samples, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    proc, base = start_purifier(
        {"PURIFIER_INTRA_OP_THREADS": str(args.threads), "PURIFIER_WARMUP_SIZES": "[28, 224]"}
    )
    try:
        samples, statuses = asyncio.run(
            soak(f"{base}/purify", proc.pid, args.duration, args.concurrency)
        )
    finally:
        stop(proc)
    first = [s["rss_mb"] for s in samples if 10 <= s["t"] < 70]
    last = [s["rss_mb"] for s in samples if s["t"] >= samples[-1]["t"] - 60]
    growth = (np.mean(last) - np.mean(first)) / np.mean(first)
    result = {
        "command": "python -m benchmarks.soak_bench " + " ".join(sys.argv[1:]),
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "requests": sum(statuses.values()),
        "by_status": dict(statuses),
        "rss_first_minute_mb": round(float(np.mean(first)), 1),
        "rss_last_minute_mb": round(float(np.mean(last)), 1),
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "rss_growth": round(float(growth), 4),
        "samples": samples,
    }
    md = (
        f"Soak: {args.duration:.0f} s of closed-loop load at concurrency {args.concurrency} "
        f"(28x28 and 224x224 grey, 64x48 RGB PNGs and bad bodies in turn). "
        f"`{result['command']}`\n\n"
        f"- requests: {result['requests']} {result['by_status']}\n"
        f"- resident memory: {result['rss_first_minute_mb']} MB over the first minute, "
        f"{result['rss_last_minute_mb']} MB over the last, at most {result['rss_max_mb']} MB; "
        f"growth {100 * growth:.1f}% (target <= 10%)\n"
    )
    write_report(args.out, "soak_bench", result, md)


if __name__ == "__main__":
    main()
