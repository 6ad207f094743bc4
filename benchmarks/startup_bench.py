"""Start-up and a burst at an idle server, as `make run` serves (issue 25).

1. Start-up: `purifier serve` with the default settings and model set; seconds from the
   process start to the default model's ready route (/v2/models/photo-guided/ready: it
   serves) and to every loaded model ready (/v2/health/ready; the others warm up after
   it, one at a time).
2. Burst: once every model is ready and nothing has been served, BURST photographs
   (224x224 crops of scikit-image's coffee, PNG) posted at once to the default model;
   the answers by status, and the latency of the served and of the refused ones. The
   target: no 504 and no dropped connection, refusals answered within 50 ms.

    python -m benchmarks.startup_bench --burst 200
Writes benchmarks/results/startup_bench.{json,md}. Loopback only; run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from benchmarks.serve_bench import REPO, free_port, start, stop, write_report


def coffee_png(size: int = 224) -> bytes:
    from training.data.photos import source_dir

    img = Image.open(source_dir("scikit-image") / "coffee.png").convert("RGB")
    out = io.BytesIO()
    img.crop((100, 50, 100 + size, 50 + size)).save(out, "PNG")
    return out.getvalue()


def start_and_time(timeout: float = 300) -> tuple[Any, str, float, float]:
    """(process, base URL, seconds to ready, seconds to every model ready)."""
    import sys

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "purifier.cli", "serve", "--port", str(port)]
    started = time.perf_counter()
    from service.config import PREFERRED_DEFAULT_MODELS

    default = PREFERRED_DEFAULT_MODELS[0]  # `make run`'s default with every model exported
    proc = start(cmd, {}, f"{base}/v2/models/{default}/ready", timeout)
    ready = time.perf_counter() - started
    while time.perf_counter() - started < timeout:
        try:
            models = httpx.get(f"{base}/models", timeout=1).json()["models"]
            if all(m["ready"] for m in models if "error" not in m):
                return proc, base, ready, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise TimeoutError(f"not every model ready within {timeout} s")


async def burst(base: str, body: bytes, count: int) -> list[tuple[int | str, float]]:
    """`count` requests at once: (status or the connection error's name, seconds) each."""
    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> tuple[int | str, float]:
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    f"{base}/purify", content=body, headers={"Content-Type": "image/png"}
                )
                return r.status_code, time.perf_counter() - t0
            except httpx.HTTPError as err:
                return type(err).__name__, time.perf_counter() - t0

        return await asyncio.gather(*(one() for _ in range(count)))


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    proc, base, ready_s, all_ready_s = start_and_time()
    try:
        models = httpx.get(f"{base}/models", timeout=5).json()
        answers = asyncio.run(burst(base, coffee_png(), args.burst))
    finally:
        stop(proc)
    statuses = Counter(str(s) for s, _ in answers)
    result = {
        "default_model": models["default"],
        "models": [m["name"] for m in models["models"]],
        "ready_s": round(ready_s, 2),
        "all_models_ready_s": round(all_ready_s, 2),
        "burst": args.burst,
        "statuses": dict(statuses),
        "served": summary([t for s, t in answers if s == 200]),
        "refused": summary([t for s, t in answers if s == 503]),
    }
    md = (
        "# Start-up and a burst at an idle server (`python -m benchmarks.startup_bench`)\n\n"
        f"Default settings, models {', '.join(result['models'])}; default "
        f"{result['default_model']}.\n\n"
        f"- Ready (default model serving): {result['ready_s']} s after the process "
        f"started; every model ready: {result['all_models_ready_s']} s.\n"
        f"- Burst of {args.burst} 224x224 PNG photos at once: "
        + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        + f"; served {result['served']}, refused {result['refused'] or 'none'}.\n"
    )
    write_report(args.out, "startup_bench", result, md)


if __name__ == "__main__":
    main()
