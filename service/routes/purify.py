"""POST /purify: an image in, the purified image out (same size and mode)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from service.body import image_bytes
from service.detection import (
    ON_SUSPICIOUS,
    refuse_if_suspicious,
    rejects_suspicious,
    require_detector,
)
from service.errors import ServiceError
from service.imaging import REQUESTED_FORMATS, distances
from service.pipeline import (
    decode_image,
    encode_image,
    purify_image,
    verdict_headers,
)
from service.routes.tracking import TrackedRequest
from service.state import ServiceState

router = APIRouter()

BINARY = {"schema": {"type": "string", "format": "binary"}}
# The body is read by hand (size and time limits), so its schema is declared here: it
# documents the route and lets schema-driven fuzzers (schemathesis) send bodies.
PURIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: BINARY for t in ("image/png", "image/jpeg", "image/webp", "image/bmp")},
            "image/tiff": BINARY,
            "application/octet-stream": BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
        },
    }
}
PURIFY_HEADERS = [
    "x-purifier-model",
    "x-purifier-model-version",
    "x-purifier-queue-ms",
    "x-purifier-inference-ms",
    "x-purifier-batch-size",
    "x-purifier-l2",
    "x-purifier-linf",
    "x-purifier-suspicion",
    "x-purifier-suspicious",
]


# The route is a plain Starlette endpoint, not a FastAPI one: FastAPI's per-request
# dependency solving and exit stack cost a fifth of the event loop's time per 28x28
# image (py-spy, concurrency 32). Its three query parameters are parsed here, and the
# operation is added to the OpenAPI document by hand (PURIFY_OPERATION).
PURIFY_OPERATION = {
    "post": {
        "summary": "Purify",
        "operationId": "purify",
        "parameters": [
            {
                "name": "model",
                "in": "query",
                "required": False,
                "description": "model name (default: the service's default)",
                "schema": {"type": "string"},
            },
            {
                "name": "format",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(REQUESTED_FORMATS), "default": "same"},
            },
            {
                "name": "quality",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            {
                "name": "on_suspicious",
                "in": "query",
                "required": False,
                "description": "flag: answer the purified image with X-Purifier-Suspicious "
                "(default); reject: 422 with a JSON reason when the verdict is suspicious",
                "schema": {"type": "string", "enum": list(ON_SUSPICIOUS), "default": "flag"},
            },
        ],
        **PURIFY_BODY,
        "responses": {
            "200": {
                "description": "the purified image",
                "content": {t: {} for t in ("image/png", "image/jpeg", "image/webp")},
            },
            "400": {"description": "bad request (JSON error)"},
            "422": {"description": "?on_suspicious=reject and the image is suspicious"},
        },
    }
}


@dataclass(frozen=True)
class PurifyOptions:
    model: str | None
    format: str
    quality: int | None
    reject_suspicious: bool = False


def purify_options(request: Request) -> PurifyOptions:
    """The query parameters, checked (400 bad_request naming the parameter)."""
    query = request.query_params
    if "seed" in query:
        # An attacker who chose the noise could craft against it: the service keys it.
        raise ServiceError(
            400,
            "seed_refused",
            "query.seed: the noise of stochastic models is keyed by the service, never "
            "chosen by the caller",
        )
    fmt = query.get("format", "same")
    if fmt not in REQUESTED_FORMATS:
        raise ServiceError(
            400, "bad_request", f"query.format: must be one of {', '.join(REQUESTED_FORMATS)}"
        )
    reject_suspicious = rejects_suspicious(query)
    quality = query.get("quality")
    if quality is not None and not (quality.isdigit() and 1 <= int(quality) <= 100):
        raise ServiceError(400, "bad_request", "query.quality: must be an integer 1..100")
    return PurifyOptions(
        query.get("model"),
        fmt,
        None if quality is None else int(quality),
        reject_suspicious,
    )


async def purify(request: Request) -> Response:
    state: ServiceState = request.app.state.purifier
    settings, metrics = state.settings, state.metrics
    started = time.perf_counter()
    deadline = started + settings.request_timeout_s
    with TrackedRequest(state, "purify"), contextlib.ExitStack() as admitted:
        with state.on_the_way():
            options = purify_options(request)
            runtime = state.serving(options.model)
            if options.reject_suspicious:
                require_detector(runtime.detector, runtime.entry.name)
            ticket = admitted.enter_context(runtime.batcher.arrival(deadline))
            data = await image_bytes(request, settings.max_body_bytes, settings.body_timeout_s)
            if ticket.refusal is not None:
                raise ticket.refusal
            decoded = await decode_image(state, runtime, data)
        name = runtime.entry.name
        purified, stats, verdict = await purify_image(
            state, runtime, decoded.pixels, deadline, ticket
        )
        l2, linf = distances(decoded.pixels, purified)
        if options.reject_suspicious:
            refuse_if_suspicious(runtime.detector, runtime.entry.name, verdict)
        body, media_type = await encode_image(
            state,
            runtime,
            decoded,
            purified,
            options.format,
            options.quality or settings.jpeg_quality,
        )
        metrics.request.labels(name).observe(time.perf_counter() - started)
        return Response(
            body,
            media_type=media_type,
            headers={
                "X-Purifier-Model": name,
                "X-Purifier-Model-Version": str(runtime.entry.version),
                "X-Purifier-Queue-Ms": f"{stats.queue_s * 1000:.2f}",
                "X-Purifier-Inference-Ms": f"{stats.inference_s * 1000:.2f}",
                "X-Purifier-Batch-Size": str(stats.batch_size),
                "X-Purifier-L2": f"{l2:.6f}",
                "X-Purifier-Linf": f"{linf:.6f}",
                **verdict_headers(verdict),
            },
        )


router.add_route("/purify", purify, methods=["POST"], include_in_schema=False)
