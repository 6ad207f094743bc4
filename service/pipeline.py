"""One image through one model: decode -> planes -> tiles -> batcher -> stitched result
-> encode."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.batcher import BatchStats
from service.imaging import (
    DecodedImage,
    cut,
    decode,
    encode,
    from_model_planes,
    plan_tiles,
    stitch,
    to_model_planes,
)
from service.state import ModelRuntime, ServiceState

# Decode and encode run in the codec pool, never on the event loop: a small body can
# declare a large image. (Decoding images up to 64x64 inline was measured: no gain at
# 28x28, 165 vs 175 images/s at concurrency 32 on 2 cores.)


async def decode_image(state: ServiceState, runtime: ModelRuntime, data: bytes) -> DecodedImage:
    started = time.perf_counter()
    decoded = await asyncio.get_running_loop().run_in_executor(
        state.codec_pool, decode, data, runtime.engine.channels, state.settings.max_pixels
    )
    state.metrics.decode.labels(runtime.entry.name).observe(time.perf_counter() - started)
    return decoded


async def encode_image(
    state: ServiceState,
    runtime: ModelRuntime,
    decoded: DecodedImage,
    purified: np.ndarray,
    fmt: str,
    quality: int,
) -> tuple[bytes, str]:
    started = time.perf_counter()
    out = await asyncio.get_running_loop().run_in_executor(
        state.codec_pool, encode, decoded, purified, fmt, quality
    )
    state.metrics.encode.labels(runtime.entry.name).observe(time.perf_counter() - started)
    return out


async def purify_pixels(
    runtime: ModelRuntime, pixels: np.ndarray, deadline: float, overlap: int
) -> tuple[np.ndarray, BatchStats]:
    """pixels: float32 (C, H, W) in [0, 1], C = 1 or 3. Returns the same shape."""
    planes = to_model_planes(pixels, runtime.engine.channels)
    plan = plan_tiles(
        pixels.shape[1], pixels.shape[2], runtime.tile, overlap, runtime.multiple, runtime.min_size
    )
    tiles = [cut(plane, plan) for plane in planes]
    flat = [t for plane_tiles in tiles for t in plane_tiles]
    outputs, stats = await runtime.batcher.submit(flat, deadline)
    per_plane = len(tiles[0])
    restored = [
        stitch(outputs[i * per_plane : (i + 1) * per_plane], plan) for i in range(len(planes))
    ]
    return from_model_planes(restored, pixels.shape[0]), stats


def distances(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """L2 norm and L-inf of the change, in [0, 1] pixel units."""
    diff = (after - before).astype(np.float64)
    return float(np.sqrt((diff**2).sum())), float(np.abs(diff).max()) if diff.size else 0.0
