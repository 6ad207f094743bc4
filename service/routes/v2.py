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
    keyed_noise_for,
    purify_encoded,
    purify_pixels,
    suspicion,
)
from service.proxy import proxies, proxy_infer
from service.routes.tracking import TrackedRequest
from service.state import ModelRuntime, ServiceState
from service.v2_protocol import (
    HEADER,
    InferInput,
    build_response,
    images_tensor,
    parse_request,
    tensor_images,
)

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
    if proxies(state, name):
        return await proxy_infer(request, name, version)
    settings, metrics = state.settings, state.metrics
    started = time.perf_counter()
    with TrackedRequest(state, "v2_infer"), contextlib.ExitStack() as admitted:
        runtime = state.serving(name)
        runtime.check_version(version)
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
                *(purify_encoded(state, runtime, blob, deadline, ticket) for blob in parsed.blobs)
            )
            blobs, verdicts = [a[0] for a in answers], [a[1][2] for a in answers]
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


async def _purify_tensor(
    state: ServiceState, runtime: ModelRuntime, parsed: InferInput, deadline: float, ticket: Ticket
) -> tuple[np.ndarray, list[Verdict | None]]:
    images = tensor_images(parsed.datatype, parsed.array, state.settings.max_pixels)
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
    return images_tensor(out, parsed.datatype), verdicts


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
