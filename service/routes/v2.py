"""POST /v2/models/{name}/infer: the Open Inference Protocol's inference route."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
from fastapi import APIRouter, Request, Response

from service.batcher import Ticket
from service.body import read_body
from service.detection import Verdict
from service.errors import ServiceError
from service.pipeline import (
    decode_image,
    encode_image,
    keyed_noise_for,
    purify_pixels,
    suspicion,
)
from service.routes.tracking import TrackedRequest
from service.state import ModelRuntime, ServiceState
from service.v2_protocol import HEADER, InferInput, build_response, parse_request

router = APIRouter()

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": ["FP32", "UINT8", "BYTES"]},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                        "parameters": {"type": "object"},
                    },
                }
            },
            # the binary tensor extension: JSON header + raw tensor bytes
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post("/v2/models/{name}/infer", response_class=Response, openapi_extra=INFER_BODY)
@router.post(
    "/v2/models/{name}/versions/{version}/infer", response_class=Response, openapi_extra=INFER_BODY
)
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    state: ServiceState = request.app.state.purifier
    settings, metrics = state.settings, state.metrics
    started = time.perf_counter()
    with TrackedRequest(state, "v2_infer"), contextlib.ExitStack() as admitted:
        runtime = state.serving(name)
        if version is not None and version != str(runtime.entry.version):
            raise ServiceError(
                404,
                "unknown_version",
                f"{name} serves version {runtime.entry.version}, not {version}",
            )
        deadline = started + settings.request_timeout_s
        ticket = admitted.enter_context(runtime.batcher.arrival(deadline))
        with state.on_the_way():  # encoded images decode later, inside the gather below
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
            if ticket.refusal is not None:
                raise ticket.refusal
            parsed = parse_request(body, request.headers.get(HEADER))
        array, blobs = None, None
        if parsed.blobs is not None:
            answers = await asyncio.gather(
                *(_purify_encoded(state, runtime, blob, deadline, ticket) for blob in parsed.blobs)
            )
            blobs, verdicts = [a[0] for a in answers], [a[1] for a in answers]
        else:
            array, verdicts = await _purify_tensor(state, runtime, parsed, deadline, ticket)
        content, headers = build_response(
            name,
            runtime.entry.version,
            parsed.request_id,
            parsed.datatype,
            parsed.shape,
            array,
            blobs,
            parsed.binary_output,
            suspicion_parameters(runtime, verdicts),
        )
        metrics.request.labels(name).observe(time.perf_counter() - started)
        return Response(content, headers=headers)


def suspicion_parameters(runtime: ModelRuntime, verdicts: list[Verdict | None]) -> dict[str, str]:
    """The response's `parameters`: the verdict per image of the batch, in order, as
    comma-separated strings (the protocol's parameter values are scalars)."""
    if runtime.detector is None or any(v is None for v in verdicts):
        return {}
    return {
        "suspicion_statistic": runtime.detector.statistic,
        "suspicion": ",".join(f"{v.score:.6f}" for v in verdicts),
        "suspicious": ",".join("true" if v.suspicious else "false" for v in verdicts),
    }


def _check_pixels(h: int, w: int, limit: int) -> None:
    if h * w > limit:
        raise ServiceError(413, "too_many_pixels", f"{w}x{h} is over the limit of {limit} pixels")


async def _purify_tensor(
    state: ServiceState, runtime: ModelRuntime, parsed: InferInput, deadline: float, ticket: Ticket
) -> tuple[np.ndarray, list[Verdict | None]]:
    array = parsed.array
    if parsed.datatype == "FP32":  # NCHW in [0, 1]
        images = np.clip(array, 0.0, 1.0)
    else:  # UINT8 NHWC
        images = array.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ServiceError(400, "bad_request", f"images must have 1 or 3 channels, got {c}")
    if n == 0 or h == 0 or w == 0:
        raise ServiceError(400, "bad_request", f"empty tensor of shape {parsed.shape}")
    _check_pixels(h, w, state.settings.max_pixels)
    noises = await _noise_fields(state, runtime, parsed, images)
    results = await asyncio.gather(
        *(
            purify_pixels(runtime, np.ascontiguousarray(img), deadline, ticket, noise)
            for img, noise in zip(images, noises, strict=True)
        )
    )
    out = np.stack([r[0] for r in results])
    verdicts = [
        await suspicion(runtime, state, img, r[0]) for img, r in zip(images, results, strict=True)
    ]
    if parsed.datatype == "FP32":
        return out.astype(np.float32), verdicts
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1), verdicts


async def _noise_fields(
    state: ServiceState, runtime: ModelRuntime, parsed: InferInput, images: np.ndarray
) -> list[np.ndarray | None]:
    """Each image's noise field: the caller's `noise` input where the operator allows it
    (PURIFIER_ALLOW_CLIENT_NOISE, for evaluation), else keyed by the service."""
    if parsed.noise is None:
        return [await keyed_noise_for(state, runtime, img) for img in images]
    if not state.settings.allow_client_noise:
        raise ServiceError(
            400,
            "client_noise_refused",
            "input 'noise': this server keys the noise itself (PURIFIER_ALLOW_CLIENT_NOISE is off)",
        )
    if not runtime.engine.stochastic:
        raise ServiceError(
            400, "bad_request", f"input 'noise': model {runtime.entry.name} takes no noise"
        )
    if images.shape[1] != runtime.engine.channels:
        raise ServiceError(
            400,
            "bad_request",
            f"input 'noise': send {runtime.engine.channels}-channel images with it",
        )
    return [n[None].astype(np.float32) for n in parsed.noise]


async def _purify_encoded(
    state: ServiceState, runtime: ModelRuntime, blob: bytes, deadline: float, ticket: Ticket
) -> tuple[bytes, Verdict | None]:
    decoded = await decode_image(state, runtime, blob)
    noise = await keyed_noise_for(state, runtime, decoded.pixels)
    purified, _ = await purify_pixels(runtime, decoded.pixels, deadline, ticket, noise)
    verdict = await suspicion(runtime, state, decoded.pixels, purified)
    body, _ = await encode_image(
        state, runtime, decoded, purified, "same", state.settings.jpeg_quality
    )
    return body, verdict
