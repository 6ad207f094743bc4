"""One image through one model: decode -> planes -> tiles -> batcher -> stitched result
-> encode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from service.batcher import BatchStats, Ticket
from service.detection import Verdict
from service.imaging import DecodedImage, decode, distances, encode, open_image, pixels_of
from service.state import ModelRuntime, ServiceState
from service.tiles import cut_image, noise_shape

# Decode and encode run in the codec pool, off the event loop, except for images of at
# most INLINE_CODEC_PIXELS by their header (a small body can declare a large image): a
# 28x28 PNG decodes in tens of microseconds, less than the thread hand-off costs. Small
# bodies have their header read on the loop to decide; the pool decodes from that header.
INLINE_CODEC_PIXELS = 64 * 64
INLINE_BODY_BYTES = 64 * 1024

T = TypeVar("T")


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """fn(*args) and the seconds it ran (in the codec pool: without the pool's queue)."""
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


async def decode_image(state: ServiceState, runtime: ModelRuntime, data: bytes) -> DecodedImage:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    channels, max_pixels = runtime.engine.channels, state.settings.max_pixels
    if len(data) > INLINE_BODY_BYTES:
        decoded, work = await loop.run_in_executor(
            state.codec_pool, timed, decode, data, channels, max_pixels
        )
    else:
        img = open_image(data, max_pixels)
        if img.width * img.height <= INLINE_CODEC_PIXELS:
            decoded, work = timed(pixels_of, img, channels)
        else:
            decoded, work = await loop.run_in_executor(
                state.codec_pool, timed, pixels_of, img, channels
            )
    runtime.batcher.note_codec_cost("decode", work)
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
    if decoded.height * decoded.width <= INLINE_CODEC_PIXELS:
        out, work = timed(encode, decoded, purified, fmt, quality)
    else:
        out, work = await asyncio.get_running_loop().run_in_executor(
            state.codec_pool, timed, encode, decoded, purified, fmt, quality
        )
    runtime.batcher.note_codec_cost("encode", work)
    state.metrics.encode.labels(runtime.entry.name).observe(time.perf_counter() - started)
    return out


async def keyed_noise_for(
    state: ServiceState, runtime: ModelRuntime, pixels: np.ndarray
) -> np.ndarray | None:
    """A stochastic model's noise field for these decoded pixels, keyed by the service's
    secret (purifier/noise.py); None for a deterministic model. HMAC and generation cost
    2% of photo-prior's FP32 inference on a 640x480 photo (7% of INT8), and are no work
    for the event loop beyond small images."""
    if not runtime.engine.stochastic:
        return None
    shape = noise_shape(runtime.engine, pixels)
    if pixels[0].size <= INLINE_CODEC_PIXELS:
        return state.noise_key.noise(pixels, shape)
    return await asyncio.get_running_loop().run_in_executor(
        state.codec_pool, state.noise_key.noise, pixels, shape
    )


async def purify_pixels(
    runtime: ModelRuntime,
    pixels: np.ndarray,
    deadline: float,
    ticket: Ticket | None = None,
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, BatchStats]:
    """pixels: float32 (C, H, W) in [0, 1], C = 1 or 3. Returns the same shape. A
    stochastic model needs `noise` (service.tiles.noise_shape), tiled with the image."""
    tiled = cut_image(runtime.engine, runtime.geometry, pixels, noise)
    outputs, stats = await runtime.batcher.submit(tiled.tiles, deadline, ticket)
    return tiled.assemble(outputs), stats


async def purify_image(
    state: ServiceState,
    runtime: ModelRuntime,
    pixels: np.ndarray,
    deadline: float,
    ticket: Ticket | None = None,
) -> tuple[np.ndarray, BatchStats, Verdict | None]:
    """One decoded image, as every work route purifies it: its keyed noise (stochastic
    models), the batched model, the card's verdict. (purified, batch stats, verdict)."""
    noise = await keyed_noise_for(state, runtime, pixels)
    purified, stats = await purify_pixels(runtime, pixels, deadline, ticket, noise)
    return purified, stats, await suspicion(runtime, state, pixels, purified)


# What the pipeline tells about one purified image: L2 and L-inf of the change, verdict.
Figure = tuple[float, float, Verdict | None]


async def purify_encoded(
    state: ServiceState, runtime: ModelRuntime, blob: bytes, deadline: float, ticket: Ticket
) -> tuple[bytes, Figure]:
    """One encoded image (an element of a BYTES tensor) purified and encoded back in its
    own format; its figures."""
    decoded = await decode_image(state, runtime, blob)
    purified, _, verdict = await purify_image(state, runtime, decoded.pixels, deadline, ticket)
    out, _ = await encode_image(
        state, runtime, decoded, purified, "same", state.settings.jpeg_quality
    )
    return out, (*distances(decoded.pixels, purified), verdict)


def verdict_headers(verdict: Verdict | None) -> dict[str, str]:
    """`/purify`'s suspicion headers; none where the model has no calibrated detector."""
    if verdict is None:
        return {}
    return {
        "X-Purifier-Suspicion": f"{verdict.score:.6f}",
        "X-Purifier-Suspicious": "true" if verdict.suspicious else "false",
    }


async def suspicion(
    runtime: ModelRuntime, state: ServiceState, before: np.ndarray, after: np.ndarray
) -> Verdict | None:
    """The card's verdict on one purified image, or None without a calibrated detector
    (nothing computed then). In the codec pool for all but small images: the statistic
    costs ~10 ms per 640x480 photo. Counts a flagged image."""
    detector = runtime.detector
    if detector is None:
        return None
    if before[0].size <= INLINE_CODEC_PIXELS:
        verdict = detector.judge(before, after)
    else:
        verdict = await asyncio.get_running_loop().run_in_executor(
            state.codec_pool, detector.judge, before, after
        )
    if verdict.suspicious:
        state.metrics.suspicious.labels(runtime.entry.name).inc()
    return verdict
