"""Overload: open-loop traffic at a multiple of measured capacity against Purifier.

1. Capacity: closed-loop at concurrency 4 for 10 s (images/s, 200s only; 4 in flight
   stay inside the default PURIFIER_MAX_QUEUE_WAIT_S, so nothing is refused here).
2. Overload: requests sent at FACTOR x capacity (open loop: the send rate does not slow
   down when the server does) for DURATION seconds, then at half capacity for RECOVERY
   seconds. Every second: resident memory of the server (from /proc), queued images
   (/metrics), and the responses by status with their latencies.

    python -m benchmarks.overload_bench --size 224 --factor 4 --duration 120
Writes benchmarks/results/overload_bench.{json,md}. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serve_bench import (
    REPO,
    closed_loop,
    encoded_request,
    start_purifier,
    stop,
    test_image,
    write_report,
)


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def pending(base: str, model: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    match = re.search(rf'^purifier_pending_requests{{model="{model}"}} ([0-9.]+)$', text, re.M)
    return float(match.group(1)) if match else float("nan")


async def open_loop(
    url: str, send: tuple[bytes, dict[str, str]], rate: float, duration: float, log: list
) -> None:
    """Start one request every 1/rate seconds, whatever happens to the earlier ones.
    aiohttp with the body encoded once: the generator shares the 2 cores with the
    server, and httpx, which builds a multipart body per request, spent more CPU per
    request than a refusal costs the server (at 5x the default model's capacity, 92
    requests/s, its own backlog reached minutes and every latency measured it)."""
    import aiohttp

    payload, headers = send
    connector = aiohttp.TCPConnector(limit=0)  # no client-side cap: open loop
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def one(t_start: float) -> None:
            t0 = time.perf_counter()
            try:
                async with client.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    status: int | str = r.status
            except (TimeoutError, aiohttp.ClientError) as err:
                status = type(err).__name__
            log.append({"t": t0 - t_start, "status": status, "latency": time.perf_counter() - t0})

        tasks, t_start = [], time.perf_counter()
        n = int(rate * duration)
        for i in range(n):
            delay = t_start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(t_start)))
        await asyncio.gather(*tasks)


async def sample(pid: int, base: str, model: str, until: float, samples: list) -> None:
    t_start = time.perf_counter()
    while time.perf_counter() < until:
        samples.append(
            {
                "t": round(time.perf_counter() - t_start, 1),
                "rss_mb": round(rss_mb(pid), 1),
                "pending": await asyncio.to_thread(pending, base, model),
            }
        )
        await asyncio.sleep(1.0)


def phase_summary(log: list[dict]) -> dict[str, Any]:
    by_status = Counter(str(e["status"]) for e in log)
    out: dict[str, Any] = {"sent": len(log), "by_status": dict(by_status)}
    for status in ("200", "503", "504"):
        lat = sorted(e["latency"] for e in log if str(e["status"]) == status)
        if lat:
            out[f"{status}_p50_ms"] = round(1000 * lat[len(lat) // 2], 1)
            out[f"{status}_p99_ms"] = round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1)
    return out


async def scenario(
    url: str,
    base: str,
    model: str,
    pid: int,
    send: tuple[bytes, dict[str, str]],
    args,
    capacity: float,
) -> dict:
    overload, recovery, samples = [], [], []
    total = args.duration + args.recovery + 5
    sampler = asyncio.create_task(sample(pid, base, model, time.perf_counter() + total, samples))
    # The recovery phase starts when the burst stops sending, not when its last answer
    # arrives: its latencies show how long the burst's backlog lasts.
    burst = asyncio.create_task(
        open_loop(url, send, args.factor * capacity, args.duration, overload)
    )
    await asyncio.sleep(args.duration)
    await open_loop(url, send, 0.5 * capacity, args.recovery, recovery)
    await burst
    await sampler
    return {
        "overload": phase_summary(overload),
        "recovery": phase_summary(recovery),
        "samples": samples,
        "recovery_log": recovery,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--recovery", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    proc, base = start_purifier(
        {"PURIFIER_INTRA_OP_THREADS": str(args.threads), "PURIFIER_WARMUP_SIZES": f"[{args.size}]"}
    )
    try:
        model = httpx.get(f"{base}/models", timeout=5).json()["default"]
        body = test_image(args.size, channels=3 if model == "photo-guided" else 1)
        send = encoded_request("purifier", body)
        url = f"{base}/purify"
        baseline = asyncio.run(closed_loop(url, send, 4, 10.0))
        capacity = baseline["throughput"]
        rss_start = rss_mb(proc.pid)
        result = asyncio.run(scenario(url, base, model, proc.pid, send, args, capacity))
    finally:
        stop(proc)
    rss = [s["rss_mb"] for s in result["samples"]]
    # Back to normal: every request started after this many seconds past the burst's end
    # had a latency within the capacity phase's p99.
    normal_s = baseline["p99_ms"] / 1000
    slow = [e["t"] for e in result["recovery_log"] if e["latency"] > normal_s]
    recovered_after = round(max(slow), 2) if slow else 0.0
    refused = [e["t"] for e in result["recovery_log"] if str(e["status"]) != "200"]
    refused_until = round(max(refused), 2) if refused else 0.0
    del result["recovery_log"]
    result.update(
        {
            "command": "python -m benchmarks.overload_bench " + " ".join(sys.argv[1:]),
            "model": model,
            "size": args.size,
            "factor": args.factor,
            "capacity_images_per_s": capacity,
            "baseline_p50_ms": baseline["p50_ms"],
            "baseline_p99_ms": baseline["p99_ms"],
            "recovered_after_s": recovered_after,
            "recovery_refused_until_s": refused_until,
            "rss_mb_before": round(rss_start, 1),
            "rss_mb_max": max(rss),
            "rss_mb_end": rss[-1],
            "pending_max": max(s["pending"] for s in result["samples"]),
        }
    )
    rows = "".join(
        f"| {phase} | {p['sent']} | {p['by_status']} | {p.get('200_p50_ms')}/"
        f"{p.get('200_p99_ms')} | {p.get('503_p50_ms')}/{p.get('503_p99_ms')} |\n"
        for phase, p in (("overload", result["overload"]), ("recovery", result["recovery"]))
    )
    md = (
        f"Overload of the default model, {model}, at {args.factor}x its measured capacity "
        f"({capacity} images/s, {args.size}x{args.size} photos) for {args.duration:.0f} s, "
        f"then {args.recovery:.0f} s at half capacity. "
        f"`{result['command']}`\n\n"
        "| phase | sent | by status | 200 p50/p99 ms | 503 p50/p99 ms |\n|---|---|---|---|---|\n"
        f"{rows}\n"
        f"Resident memory: {result['rss_mb_before']} MB before, at most {result['rss_mb_max']} MB, "
        f"{result['rss_mb_end']} MB at the end; queued images at most {result['pending_max']} "
        f"(limits: PURIFIER_MAX_QUEUE_SIZE images, PURIFIER_MAX_QUEUE_WAIT_S of estimated work).\n"
        f"Latency back to normal (within the capacity phase's p99, "
        f"{result['baseline_p99_ms']} ms) for every request started "
        f"{result['recovered_after_s']} s or more after the burst; the last refusal after "
        f"the burst was for a request started {result['recovery_refused_until_s']} s after it.\n"
    )
    write_report(args.out, "overload_bench", result, md)


if __name__ == "__main__":
    main()
