"""Warm-up: each model's shapes run once before it serves (the default model before the
service is ready, the others after it in a worker thread), and admission's first cost
estimates measured on the way (service.batcher)."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import numpy as np
from PIL import Image

from service.config import Settings
from service.imaging import decode, encode
from service.state import ModelRuntime

log = logging.getLogger("purifier")


def warm_shapes(runtime: ModelRuntime, settings: Settings) -> list[tuple[int, int, int, int]]:
    """The tile bucket at batch 1 and at the largest batch, and each configured size's
    bucket at batch 1 (a stochastic model's items carry their noise: input_channels)."""
    c = runtime.engine.input_channels
    shapes = {
        (1, c, runtime.tile, runtime.tile),
        (
            runtime.batcher.batch_limit((c, runtime.tile, runtime.tile)),
            c,
            runtime.tile,
            runtime.tile,
        ),
    }
    for size in settings.warmup_sizes:
        plan = runtime.plan(size, size)
        shapes.add((1, c, plan.tile_h, plan.tile_w))
    return sorted(shapes)


def _seed_costs(runtime: ModelRuntime, settings: Settings) -> None:
    """Admission's first measurements (service.batcher): the seconds one image of each
    warmed shape takes alone (an upper bound: batches share the cost, and real batches
    refine it), and a typical request's cost (a colour photo of the first configured
    size), so that a burst at a server that has served nothing yet is admitted by
    measured cost."""
    c, fed = runtime.engine.channels, runtime.engine.input_channels
    for shape in warm_shapes(runtime, settings):
        if shape[0] == 1:
            runtime.batcher.seed_cost(shape[1:], runtime.engine.time_run(shape))
    if settings.warmup_sizes:
        plan = runtime.plan(settings.warmup_sizes[0], settings.warmup_sizes[0])
        per_tile = runtime.batcher.image_cost((fed, plan.tile_h, plan.tile_w)) or 0.0
        planes = 3 // c  # a one-channel model runs each colour plane on its own
        runtime.batcher.seed_request_cost(per_tile * len(plan.ys) * len(plan.xs) * planes)
        decode_s, encode_s = codec_seconds(settings.warmup_sizes[0], c)
        runtime.batcher.seed_codec_cost("decode", decode_s)
        runtime.batcher.seed_codec_cost("encode", encode_s)


def codec_seconds(size: int, channels: int) -> tuple[float, float]:
    """Seconds to decode and to encode one size x size colour PNG like a photo's (a
    gradient with grain: PNG's cost depends on the content), for a model of `channels`."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    pixels = ramp[:, None, None] + ramp[None, :, None] / 4 + rng.normal(0, 8, (size, size, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "PNG")
    started = time.perf_counter()
    decoded = decode(out.getvalue(), channels, size * size)
    decoded_at = time.perf_counter()
    encode(decoded, decoded.pixels, "same", 95)
    return decoded_at - started, time.perf_counter() - decoded_at


def warm_up(runtime: ModelRuntime, settings: Settings) -> float:
    """Run one model's warm-up shapes and seed its admission costs (no event loop
    needed: the models after the default warm up in a worker thread). Seconds taken."""
    seconds = runtime.engine.warm_up(warm_shapes(runtime, settings))
    _seed_costs(runtime, settings)
    return seconds


def serve(runtime: ModelRuntime, seconds: float) -> None:
    """A warmed-up model starts serving (on the event loop)."""
    runtime.batcher.start()
    runtime.ready = True
    log.info("model %s warmed up in %.2f s", runtime.entry.name, seconds)


async def warm_the_rest(runtimes: list[ModelRuntime], settings: Settings) -> None:
    """The models after the default, one after another in a worker thread while the
    default serves (onnxruntime runs parallel inside each session: warming them side by
    side would only share the same cores). One that fails its warm-up stays not ready."""
    loop = asyncio.get_running_loop()
    for runtime in runtimes:
        try:
            seconds = await loop.run_in_executor(None, warm_up, runtime, settings)
        except Exception:  # logged; its readiness stays false
            log.exception("model %s failed its warm-up", runtime.entry.name)
            continue
        serve(runtime, seconds)
