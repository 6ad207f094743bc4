"""What proxy mode costs (issue 39): Purifier in front of a real model server (the KServe
classifier of examples/kserve_classifier) against the two ways a client could do without
it, on one 224x224 photo (a crop of scikit-image's coffee, UINT8 NHWC, binary tensors),
closed loop at the same concurrency:

- direct: the client calls the upstream alone (no purification at all);
- sequence: the client calls Purifier's own v2 infer (photo-guided), then the upstream
  with the purified tensor - what users had to write before proxy mode;
- proxy: the client calls Purifier, which purifies and forwards;
- hop: for scale, the client's GET of Purifier's liveness route: what one HTTP round trip
  to a Python server costs on this machine, before any work.

Overhead of the proxy, the purifier's own work excluded: per request, the proxy's
latency minus its `purifier_ms` (reading the request and purifying) minus its
`purifier_upstream_ms` (the upstream's round trip as the proxy saw it): what the proxy
adds around the two (forwarding, rewriting, the answer's parameters, its own HTTP hop);
and, from the client's side, p50(proxy - purifier_ms) - p50(direct). Targets: overhead
<= 2 ms p50 at concurrency 8; proxy throughput >= 0.9x sequence.

    python -m benchmarks.proxy_bench --concurrency 1 8 --requests 160
Writes benchmarks/results/proxy_bench.{json,md}. Loopback, both servers and the client on
this machine: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.serve_bench import REPO, start_purifier, stop, write_report
from benchmarks.upstream import UPSTREAM_MODEL, start_upstream

PURIFIER = "photo-guided"
HEADER = "inference-header-content-length"


def photo(size: int = 224) -> np.ndarray:
    from PIL import Image

    from training.data.photos import source_dir

    img = Image.open(source_dir("scikit-image") / "coffee.png").convert("RGB")
    return np.asarray(img.crop((100, 50, 100 + size, 50 + size)), np.uint8)[None]


def binary_request(name: str, datatype: str, array: np.ndarray) -> tuple[bytes, dict]:
    raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
    spec = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    spec["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps({"inputs": [spec], "parameters": {"binary_data_output": True}}).encode()
    return header + raw, {HEADER: str(len(header)), "content-type": "application/octet-stream"}


def answer_parameters(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    split = int(response.headers.get(HEADER, len(response.content)))
    return json.loads(response.content[:split]).get("parameters") or {}


def purified_tensor(response: httpx.Response, shape: tuple[int, ...]) -> np.ndarray:
    response.raise_for_status()
    split = int(response.headers[HEADER])
    return np.frombuffer(response.content[split:], np.uint8).reshape(shape)


async def closed_loop(call, concurrency: int, requests: int) -> tuple[float, list[dict]]:
    """`requests` calls by `concurrency` workers; (seconds, per-call records)."""
    records: list[dict] = []
    todo = iter(range(requests))

    async def worker() -> None:
        for _ in todo:
            started = time.perf_counter()
            extra = await call()
            records.append({"ms": (time.perf_counter() - started) * 1000, **extra})

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, records


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 2)


async def measure(purifier: str, upstream: str, concurrency: int, requests: int) -> list[dict]:
    image = photo()
    body, headers = binary_request("image", "UINT8", image)
    own = f"{purifier}/v2/models/{PURIFIER}/infer"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def direct() -> dict:
            url = f"{upstream}/v2/models/{UPSTREAM_MODEL}/infer"
            (await client.post(url, content=body, headers=headers)).raise_for_status()
            return {}

        async def sequence() -> dict:
            purified = purified_tensor(
                await client.post(own, content=body, headers=headers), image.shape
            )
            again, again_headers = binary_request("image", "UINT8", purified)
            url = f"{upstream}/v2/models/{UPSTREAM_MODEL}/infer"
            (await client.post(url, content=again, headers=again_headers)).raise_for_status()
            return {}

        async def proxy() -> dict:
            url = f"{purifier}/v2/models/{UPSTREAM_MODEL}/infer"
            params = answer_parameters(await client.post(url, content=body, headers=headers))
            return {
                "purify_ms": float(params["purifier_ms"]),
                "upstream_ms": float(params["purifier_upstream_ms"]),
            }

        async def hop() -> dict:
            (await client.get(f"{purifier}/v2/health/live")).raise_for_status()
            return {}

        rows = []
        systems = (("hop", hop), ("direct", direct), ("sequence", sequence), ("proxy", proxy))
        for system, call in systems:
            await closed_loop(call, concurrency, max(concurrency, requests // 10))  # warm
            seconds, records = await closed_loop(call, concurrency, requests)
            latencies = [r["ms"] for r in records]
            row = {
                "system": system,
                "concurrency": concurrency,
                "requests": requests,
                "requests_per_s": round(requests / seconds, 2),
                "p50_ms": p50(latencies),
                "p95_ms": round(float(np.percentile(latencies, 95)), 2),
            }
            if system == "proxy":
                row["purify_p50_ms"] = p50([r["purify_ms"] for r in records])
                row["upstream_p50_ms"] = p50([r["upstream_ms"] for r in records])
                row["around_p50_ms"] = p50(
                    [r["ms"] - r["purify_ms"] - r["upstream_ms"] for r in records]
                )
                row["proxy_minus_purify_p50_ms"] = p50([r["ms"] - r["purify_ms"] for r in records])
            rows.append(row)
        by = {r["system"]: r for r in rows}
        by["proxy"]["overhead_vs_direct_p50_ms"] = round(
            by["proxy"]["proxy_minus_purify_p50_ms"] - by["direct"]["p50_ms"], 2
        )
        by["proxy"]["throughput_vs_sequence"] = round(
            by["proxy"]["requests_per_s"] / by["sequence"]["requests_per_s"], 3
        )
        return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Proxy mode: overhead and throughput",
        "",
        f"{result['note']} `{result['command']}`",
        "",
        "| concurrency | system | requests/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['concurrency']} | {r['system']} | {r['requests_per_s']} | {r['p50_ms']} "
            f"| {r['p95_ms']} |"
        )
    lines += [
        "",
        "| concurrency | proxy p50 ms | purify p50 ms | upstream p50 ms (seen by proxy) "
        "| around both, p50 ms | proxy - purify - direct, p50 ms | throughput vs sequence |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["system"] == "proxy":
            lines.append(
                f"| {r['concurrency']} | {r['p50_ms']} | {r['purify_p50_ms']} "
                f"| {r['upstream_p50_ms']} | {r['around_p50_ms']} "
                f"| {r['overhead_vs_direct_p50_ms']} | {r['throughput_vs_sequence']}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upstream_proc, upstream = start_upstream(Path(tmp), threads=1)
        env = {
            "PURIFIER_MODELS": json.dumps([PURIFIER]),
            "PURIFIER_UPSTREAM_URL": upstream,
            "PURIFIER_INTRA_OP_THREADS": "1",
            "PURIFIER_WARMUP_SIZES": "[224]",
            "OMP_NUM_THREADS": "1",
        }
        purifier_proc, purifier = start_purifier(env)
        try:
            rows = []
            for concurrency in args.concurrency:
                rows += asyncio.run(measure(purifier, upstream, concurrency, args.requests))
        finally:
            stop(purifier_proc)
            stop(upstream_proc)
    cores = os.cpu_count()
    result = {
        "command": "python -m benchmarks.proxy_bench "
        f"--concurrency {' '.join(map(str, args.concurrency))} --requests {args.requests}",
        "note": f"Closed loop, one 224x224 photo (UINT8, binary tensors); Purifier "
        f"({PURIFIER}, 1 onnxruntime thread) and the KServe classifier ({UPSTREAM_MODEL}, 1 "
        f"thread) and the client on one machine: cpu {platform.machine()}, {cores} cores.",
        "rows": rows,
    }
    write_report(args.out, "proxy_bench", result, markdown(result))


if __name__ == "__main__":
    main()
