"""Serving benchmark: closed-loop load at several concurrencies against
(a) the in-process ceiling (decode + batched onnxruntime + encode, same threads, no HTTP),
(b) Purifier, (c) a naive FastAPI endpoint (one onnxruntime call per request),
(d) LitServe with the same batch size and delay. All get the same model, image and
thread layout: `--instances` model instances (Purifier's PURIFIER_INSTANCES, LitServe's
workers, the ceiling's worker threads) of `--threads` onnxruntime threads each.
Purifier and the naive server get multipart uploads (field `image`); LitServe gets the
same PNG as base64 JSON (its process queue cannot carry uploaded files).

The load generator shares the machine with the server, so it must cost little: aiohttp
sending a body encoded once (httpx, which built multipart bodies per request, spent
6.9 ms of CPU per request on 2 cores, a third of what the server spent).

    python -m benchmarks.serve_bench            # or: make bench
Writes benchmarks/results/serve_bench.{json,md,png}. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from benchmarks.servers.codec import decode, encode, input_channels
from benchmarks.sizes import dims, label, pixels
from service.engine import cores_per_instance, usable_cores

REPO = Path(__file__).resolve().parents[1]
MODEL = "fmnist-nrp"
ONNX = REPO / "exported_models" / MODEL / "1" / "model.onnx"
CORES = usable_cores()
PHOTO_QUALITY = 90  # the test photo's own JPEG quality (a camera's)


def test_image(size: str | int, channels: int = 1) -> bytes:
    """For a grey model, a grey PNG: a Fashion-MNIST image at 28, scikit-image's camera
    otherwise. For an RGB model, a photo as cameras send them: scikit-image's coffee
    resized to the size, as a JPEG."""
    width, height = dims(size)
    if channels == 3:
        from skimage import data

        img = Image.fromarray(data.coffee()).resize((width, height), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=PHOTO_QUALITY)
        return out.getvalue()
    if (width, height) == (28, 28):
        from training.data import load_fashion_mnist

        arr = np.round(load_fashion_mnist("test", limit=1)[0][0, 0].numpy() * 255).astype(np.uint8)
        img = Image.fromarray(arr)
    else:
        from skimage import data

        img = Image.fromarray(data.camera()).resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def batch_size_for(size: str | int, max_batch: int) -> int:
    """The batch Purifier's default pixel budget allows for images of this size."""
    from service.config import Settings

    budget = Settings.model_fields["max_batch_pixels"].default
    return max(1, min(max_batch, budget // pixels(size)))


def served_file(model: str, device: str) -> Path:
    """The file Purifier serves for this model in float32 on the device (the CPU-optimised
    graph where the card has one): every contender runs the same file."""
    from service.engine import model_file
    from service.registry import load_entry

    entry = load_entry(REPO / "exported_models" / model)
    return model_file(entry, "fp32", on_gpu=device == "gpu")[0]


def summarise(latencies: list[float], errors: int, elapsed: float, images: int) -> dict[str, Any]:
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else float("nan")

    return {
        "throughput": round(images / elapsed, 2),
        "requests": len(lat),
        "errors": errors,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(lat), 2) if lat else float("nan"),
    }


def request_kwargs(system: str, body: bytes) -> dict[str, Any]:
    """Multipart for Purifier and the naive server; base64 JSON for LitServe, whose
    process queue cannot carry uploaded files."""
    if system == "litserve":
        return {"json": {"image": base64.b64encode(body).decode()}}
    return {"files": {"image": ("x.png", body, "image/png")}}


def encoded_request(system: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The request body and Content-Type each request of a run sends, encoded once."""
    request = httpx.Request("POST", "http://bench/purify", **request_kwargs(system, body))
    return request.read(), {"content-type": request.headers["content-type"]}


async def closed_loop(
    url: str, send: tuple[bytes, dict[str, str]], concurrency: int, duration: float
) -> dict:
    import aiohttp  # the bench extra; the report helpers above are tested without it

    latencies: list[float] = []
    errors = 0
    payload, headers = send
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        end = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                async with client.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return summarise(latencies, errors, elapsed, len(latencies))


def in_process(
    body: bytes,
    concurrency: int,
    duration: float,
    threads: int,
    max_batch: int,
    instances: int = 1,
    device: str = "cpu",
    onnx: Path = ONNX,
) -> dict:
    """The ceiling: `concurrency` images in flight, shared among `instances` worker
    threads (a session each, `threads` onnxruntime threads), each serving its share in
    batches of up to max_batch: decode, run, encode, with nothing in between."""
    instances = min(instances, concurrency)  # one image in flight keeps one worker busy
    sessions = cpu_sessions(instances, threads, device, onnx)
    channels = input_channels(sessions[0])
    share = -(-concurrency // instances)
    batch = min(share, max_batch)
    # Every image of a batch waited for the whole batch; with more in flight than one
    # batch holds, an image also waits for the batches ahead of it.
    waves = -(-share // batch)
    latencies: list[float] = []
    images = [0] * instances
    end = time.perf_counter() + duration

    def worker(i: int) -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            decoded = [decode(body, channels) for _ in range(batch)]
            x = np.stack([planes for planes, _ in decoded])
            y = sessions[i].run(["purified"], {"image": x})[0]
            for planes, (_, fmt) in zip(y, decoded, strict=True):
                encode(planes, fmt)
            latencies.extend([(time.perf_counter() - t0) * waves] * batch)
            images[i] += batch

    elapsed = in_threads(worker, instances)
    return summarise(latencies, 0, elapsed, sum(images))


def cpu_sessions(count: int, threads: int, device: str = "cpu", onnx: Path = ONNX) -> list[Any]:
    """`count` onnxruntime sessions of the benchmark model, `threads` threads each, on the
    CPU (or on the GPU: device "gpu")."""
    from benchmarks.servers.sessions import open_session

    return [open_session(str(onnx), threads, device) for _ in range(count)]


def in_threads(work: Callable[[int], None], count: int) -> float:
    """work(0) ... work(count - 1), each in its own thread; seconds until all returned."""
    workers = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    cmd: list[str], env: dict[str, str], ready_url: str, timeout: float = 120
) -> subprocess.Popen:
    # A process group of its own: LitServe's workers are child processes that keep
    # polling (0.36 of a core each while idle), so pausing and stopping go to the group.
    # Its output goes to an unnamed temporary file (a pipe nobody drains would block a
    # server that logs every request), read back if it fails to start.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - open as long as the server runs
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"{cmd} exited with {proc.returncode}:\n{tail}")
        time.sleep(0.05)  # the start-up benchmark times readiness by this loop
    stop(proc)
    raise TimeoutError(f"{cmd} not ready")


def pause(proc: subprocess.Popen) -> None:
    """Freeze the server and its workers: a server not under test takes no CPU."""
    os.killpg(proc.pid, signal.SIGSTOP)


def resume(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGCONT)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the whole group (a paused one is woken to receive it), SIGKILL to
    whatever is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        resume(proc)
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def start_purifier(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`purifier serve` on a free loopback port, once ready: (process, base URL)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "purifier.cli", "serve", "--port", str(port)]
    return start(cmd, env, f"{base}/v2/health/ready"), base


def write_report(out: Path, stem: str, result: dict[str, Any], md: str) -> None:
    """results/<stem>.json and .md, and the markdown on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(md)
    print(md)


# Purifier's GPU variants: the same server with one setting changed.
PURIFIER_VARIANTS = {
    "purifier": {},
    "purifier_fp16": {"PURIFIER_PRECISION": "fp16"},
    "purifier_io_binding": {"PURIFIER_IO_BINDING": "true"},
}
GPU_SYSTEMS = ["in_process", *PURIFIER_VARIANTS, "naive_fastapi", "litserve"]
PEERS = {"in_process": "ceiling", "litserve": "litserve", "naive_fastapi": "naive"}


def server_command(system: str, port: int, args: argparse.Namespace) -> tuple[list[str], dict, str]:
    base = f"http://127.0.0.1:{port}"
    threads = str(args.threads)
    device = getattr(args, "device", "cpu")
    model = getattr(args, "model", MODEL)
    onnx = str(getattr(args, "onnx", ONNX))
    if system in PURIFIER_VARIANTS:
        placement = (
            {"PURIFIER_PROVIDERS": '["cuda"]', "PURIFIER_REQUIRE_GPU": "true"}
            if device == "gpu"
            else {"PURIFIER_PROVIDERS": '["cpu"]', "PURIFIER_PRECISION": "fp32"}
        )
        env = {
            **placement,
            **PURIFIER_VARIANTS[system],
            "PURIFIER_INSTANCES": str(args.instances),
            "PURIFIER_INTRA_OP_THREADS": threads,
            # The ceiling and the peers run a 28x28 image as it is; the default bucket
            # multiple (32) would pad it to 32x32, 31% more pixels to purify.
            "PURIFIER_BUCKET_MULTIPLE": "4",
            "PURIFIER_MAX_BATCH_SIZE": str(args.max_batch),
            "PURIFIER_MAX_QUEUE_DELAY_MS": str(args.delay_ms),
            # Closed-loop load measures capacity: no admission limits (the overload
            # benchmark measures those).
            "PURIFIER_MAX_QUEUE_SIZE": "4096",
            "PURIFIER_MAX_QUEUE_WAIT_S": "600",
            "PURIFIER_WARMUP_SIZES": "[28, 224]",
            "PURIFIER_DEFAULT_MODEL": model,
            "PURIFIER_MODELS": f'["{model}"]',  # every instance of every model holds memory
        }
        cmd = [sys.executable, "-m", "purifier.cli", "serve", "--port", str(port)]
        return cmd, env, f"{base}/v2/health/ready"
    if system == "naive_fastapi":
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.servers.naive_server",
            onnx,
            str(port),
            threads,
            device,
        ]
        return cmd, {}, f"{base}/ready"
    if system == "litserve":
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.servers.litserve_server",
            onnx,
            str(port),
            threads,
            str(args.max_batch),
            str(args.delay_ms / 1000),
            str(args.instances),
            device,
        ]
        return cmd, {}, f"{base}/health"
    raise ValueError(system)


def device_name(device: str) -> str:
    """What the results were measured on, GPU named (nvidia-smi) when it was one."""
    cpu = f"cpu: {platform.processor() or platform.machine()}, {CORES} cores"
    if device != "gpu":
        return cpu
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        gpu = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        gpu = "unnamed (nvidia-smi not found)"
    return f"gpu: {gpu}; host {cpu}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every server starts once per size and is paused while another is measured; the
    systems take turns at each concurrency, so a slow spell of a shared machine hits
    them alike instead of whichever ran then."""
    results: dict[str, Any] = {
        "command": "python -m benchmarks.serve_bench " + " ".join(sys.argv[1:]),
        "device": device_name(args.device),
        "model": args.model,
        "file": str(args.onnx.relative_to(REPO)),
        "max_batch_size": args.max_batch,
        "max_queue_delay_ms": args.delay_ms,
        "layouts": {},
        "runs": [],
    }
    for size, instances in zip(args.sizes, args.instances, strict=True):
        threads = cores_per_instance(instances)  # as Purifier shares them out
        # Every system batches as many images as Purifier would: max_batch, within its
        # default pixel budget per batch (PURIFIER_MAX_BATCH_PIXELS).
        batch = batch_size_for(size, args.max_batch)
        layout = argparse.Namespace(
            **{**vars(args), "instances": instances, "threads": threads, "max_batch": batch}
        )
        results["layouts"][label(size)] = {
            "max_batch": batch,
            "instances": instances,
            "threads": layout.threads,
            "purifier_env": server_command("purifier", 0, layout)[1],
        }
        body = test_image(size, args.channels)
        duration = args.duration_224 if pixels(size) >= 224 * 224 else args.duration_28
        servers: dict[str, tuple[subprocess.Popen, str, tuple[bytes, dict[str, str]]]] = {}
        try:
            for system in args.systems:
                if system == "in_process":
                    continue
                port = free_port()
                cmd, env, ready = server_command(system, port, layout)
                proc = start(cmd, env, ready)
                url = f"http://127.0.0.1:{port}/purify"
                send = encoded_request(system, body)
                servers[system] = (proc, url, send)
                asyncio.run(closed_loop(url, send, 4, args.warmup_s))  # warm-up
                pause(proc)
            for c in args.concurrency:
                for system in args.systems:
                    if system == "in_process":
                        row = in_process(
                            body,
                            c,
                            duration,
                            layout.threads,
                            batch,
                            instances,
                            args.device,
                            args.onnx,
                        )
                    else:
                        proc, url, send = servers[system]
                        resume(proc)
                        row = asyncio.run(closed_loop(url, send, c, duration))
                        pause(proc)
                    row.update({"system": system, "size": label(size), "concurrency": c})
                    results["runs"].append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for proc, _, _ in servers.values():
                stop(proc)
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Closed-loop load, {results['device']}; model {results['model']} "
        f"({results.get('file', 'model.onnx')} for every system); "
        f"batch {results['max_batch_size']}, "
        f"delay {results['max_queue_delay_ms']} ms. `{results['command']}`",
        "",
    ]
    for size, layout in results.get("layouts", {}).items():
        lines.append(
            f"- {size}: every system runs {layout['instances']} model instance(s) x "
            f"{layout['threads']} onnxruntime thread(s), batches of at most "
            f"{layout.get('max_batch', results['max_batch_size'])}"
        )
    lines.append("")
    lines += [
        "| size | system | concurrency | images/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    systems = dict.fromkeys(r["system"] for r in results["runs"])
    order = {system: i for i, system in enumerate(systems)}
    rows = sorted(
        results["runs"], key=lambda r: (pixels(r["size"]), order[r["system"]], r["concurrency"])
    )
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['system']} | {r['concurrency']} | {r['throughput']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} |"
        )
    lines += [
        "",
        "Ratios at concurrency 32 (targets: >= 0.85 of the ceiling, >= 1.3 x LitServe, "
        "p99 <= 2.5 x p50):",
        "",
    ]
    for size in sorted({r["size"] for r in results["runs"]}, key=pixels):
        at = {
            r["system"]: r for r in results["runs"] if r["size"] == size and r["concurrency"] == 32
        }
        for variant in (v for v in PURIFIER_VARIANTS if v in at):
            p = at[variant]
            parts = [
                f"{variant} / {label} = {p['throughput'] / at[peer]['throughput']:.2f}"
                for peer, label in PEERS.items()
                if peer in at
            ]
            parts.append(f"{variant} p99 / p50 = {p['p99_ms'] / p['p50_ms']:.2f}")
            lines.append(f"- size {size}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in results["runs"]}, key=pixels)
    fig, axes = plt.subplots(2, len(sizes), figsize=(6 * len(sizes), 8), squeeze=False)
    for col, size in enumerate(sizes):
        for system in dict.fromkeys(r["system"] for r in results["runs"]):
            rows = [r for r in results["runs"] if r["size"] == size and r["system"] == system]
            cs = [r["concurrency"] for r in rows]
            axes[0, col].plot(cs, [r["throughput"] for r in rows], marker="o", label=system)
            axes[1, col].plot(cs, [r["p99_ms"] for r in rows], marker="o", label=system)
        axes[0, col].set_title(f"{size}: throughput (images/s)")
        axes[1, col].set_title(f"{size}: p99 latency (ms)")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        default="cpu",
        help="gpu: every system runs the model with onnxruntime's CUDA provider (and fails "
        "if it cannot), Purifier also with the FP16 model and with IO binding; results go "
        "to serve_bench_gpu.*",
    )
    parser.add_argument("--systems", nargs="+", default=None)
    parser.add_argument(
        "--model", default=MODEL, help="an exported model; photo-guided: 640x480 JPEG photos"
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help='"224" (square) or "640x480" (default: '
        "28 224 for a grey model, 640x480 for an RGB one)",
    )
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--stem", default=None, help="results file name (default by device)")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--duration-28", type=float, default=10.0)
    parser.add_argument("--duration-224", type=float, default=20.0)
    parser.add_argument(
        "--instances",
        nargs="+",
        type=int,
        default=None,
        help="model instances for each size, in the order of --sizes (default: one per "
        "core below 224x224, where Purifier served 28x28 19%% faster so; one with every "
        "core from 224x224, which halves the latency of a lone image)",
    )
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    args.onnx = served_file(args.model, args.device)
    from benchmarks.servers.sessions import open_session

    args.channels = input_channels(open_session(str(args.onnx), 1))
    if args.sizes is None:
        args.sizes = ["640x480"] if args.channels == 3 else ["28", "224"]
    if args.systems is None:
        cpu_systems = ["in_process", "purifier", "naive_fastapi", "litserve"]
        args.systems = GPU_SYSTEMS if args.device == "gpu" else cpu_systems
    if args.instances is None:  # one GPU instance: the GPU runs one batch at a time anyway
        args.instances = [
            1 if args.device == "gpu" or pixels(size) >= 224 * 224 else CORES for size in args.sizes
        ]
    if len(args.instances) == 1:
        args.instances *= len(args.sizes)
    if len(args.instances) != len(args.sizes):
        parser.error("give one --instances value, or one per size")
    results = run(args)
    stem = args.stem or ("serve_bench_gpu" if args.device == "gpu" else "serve_bench")
    write_report(args.out, stem, results, markdown(results))
    plot(results, args.out / f"{stem}.png")


if __name__ == "__main__":
    main()
