"""Proxy mode (issue 39): Purifier in the request path of the user's own Open Inference
Protocol server. An inference request for a model this service does not serve has its
image inputs purified (the same pipeline as /purify: keyed noise, tiling, the verdict),
is forwarded to the upstream model of that name with every other byte as it came, and
the upstream's answer comes back unchanged but for Purifier's figures in its response
`parameters`. The upstream's own 4xx pass through; its failures become JSON 502/504.
Nothing is written to disk: bodies live in memory for the round trip only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np
from fastapi import Request, Response
from fastapi.responses import JSONResponse

from service.batcher import Ticket
from service.body import read_body
from service.detection import refuse_if_suspicious, rejects_suspicious, require_detector
from service.errors import ServiceError
from service.imaging import distances
from service.middleware import REQUEST_ID_HEADER, request_id_var
from service.pipeline import Figure, purify_encoded, purify_image
from service.routes.tracking import TrackedRequest
from service.state import ModelRuntime, ServiceState
from service.upstream import Upstream, upstream_message
from service.v2_forward import Tensor, image_inputs, parse_forward, with_parameters
from service.v2_protocol import HEADER, images_tensor, tensor_images

# Request headers a proxy passes on (tracing); never the caller's credentials for Purifier.
FORWARDED_HEADERS = ("traceparent", "tracestate")


def proxies(state: ServiceState, name: str) -> bool:
    """Whether requests for model `name` go upstream: proxy mode is on and the name is
    not one of this service's own purifiers (loaded or refused)."""
    return state.upstream is not None and name not in state.models and name not in state.failed


def upstream_path(name: str, version: str | None, route: str = "") -> str:
    versioned = f"/versions/{version}" if version is not None else ""
    return f"/v2/models/{name}{versioned}{route}"


async def proxy_infer(request: Request, name: str, version: str | None) -> Response:
    state: ServiceState = request.app.state.purifier
    upstream: Upstream = state.upstream  # type: ignore[assignment]
    settings = state.settings
    started = time.perf_counter()
    deadline = started + settings.request_timeout_s  # the whole round trip
    with TrackedRequest(state, "v2_proxy"), contextlib.ExitStack() as admitted:
        reject = rejects_suspicious(request.query_params)
        runtime = state.serving(settings.upstream_purifier)
        if reject:
            require_detector(runtime.detector, runtime.entry.name)
        ticket = admitted.enter_context(runtime.batcher.arrival(deadline))
        with state.on_the_way():
            body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
            if ticket.refusal is not None:
                raise ticket.refusal
            forward = parse_forward(body, request.headers.get(HEADER))
        images = image_inputs(forward, settings.upstream_image_inputs)
        figures = [await _purify_input(state, runtime, t, deadline, ticket) for t in images]
        verdicts = [v for per_input in figures for (_, _, v) in per_input]
        if reject:  # before the upstream ever sees the image
            refuse_if_suspicious(runtime.detector, runtime.entry.name, verdicts)
        purify_s = time.perf_counter() - started
        content, headers = forward.encode()
        headers.update({k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))})
        headers[REQUEST_ID_HEADER] = request_id_var.get()
        sent = time.perf_counter()
        try:
            answer = await upstream.request(
                "POST", upstream_path(name, version, "/infer"), deadline, content, headers
            )
            if answer.status_code >= 400:
                return _upstream_failure(answer)
        except ServiceError as err:  # unreachable, too slow, or its 5xx
            state.metrics.upstream_errors.labels(err.code).inc()
            raise
        upstream_s = time.perf_counter() - sent
        state.metrics.upstream.labels(name).observe(upstream_s)
        parameters = _figures(runtime, [t.name for t in images], figures, purify_s)
        parameters["purifier_upstream_ms"] = f"{upstream_s * 1000:.2f}"
        body_out, headers_out = with_parameters(
            answer.content, answer.headers.get(HEADER), parameters
        )
        # Purifier's own share: the upstream's round trip is purifier_upstream_seconds',
        # so that a slow model server does not read as a slow purifier on dashboards.
        own_s = time.perf_counter() - started - upstream_s
        state.metrics.request.labels(runtime.entry.name).observe(own_s)
        return Response(body_out, answer.status_code, headers=headers_out)


def _passed_on(answer: Any) -> dict[str, str]:
    return {k: v for k in ("content-type", HEADER) if (v := answer.headers.get(k))}


async def _purify_input(
    state: ServiceState, runtime: ModelRuntime, tensor: Tensor, deadline: float, ticket: Ticket
) -> list[Figure]:
    """Purify one image input in place (its images concurrently, through the batcher);
    each image's figures."""
    if tensor.datatype == "BYTES":
        answers = await asyncio.gather(
            *(purify_encoded(state, runtime, b, deadline, ticket) for b in tensor.blobs())
        )
        tensor.replace([a[0] for a in answers])
        return [a[1] for a in answers]
    images = tensor_images(tensor.datatype, tensor.array(), state.settings.max_pixels)
    results = await asyncio.gather(
        *(
            purify_image(state, runtime, np.ascontiguousarray(img), deadline, ticket)
            for img in images
        )
    )
    tensor.replace(images_tensor(np.stack([r[0] for r in results]), tensor.datatype))
    return [(*distances(img, r[0]), r[2]) for img, r in zip(images, results, strict=True)]


def _figures(
    runtime: ModelRuntime, names: list[str], figures: list[list[Figure]], purify_s: float
) -> dict[str, str]:
    """Purifier's response parameters: per image (inputs in order, then batch order),
    comma-separated, as the protocol's parameter values are scalars."""
    flat = [f for per_input in figures for f in per_input]
    parameters = {
        "purifier_model": runtime.entry.name,
        "purifier_model_version": str(runtime.entry.version),
        "purifier_inputs": ",".join(names),
        "purifier_l2": ",".join(f"{f[0]:.6f}" for f in flat),
        "purifier_linf": ",".join(f"{f[1]:.6f}" for f in flat),
        "purifier_ms": f"{purify_s * 1000:.2f}",
    }
    if runtime.detector is not None and flat:
        verdicts = [f[2] for f in flat]
        parameters["purifier_suspicion_statistic"] = runtime.detector.statistic
        parameters["purifier_suspicion"] = ",".join(f"{v.score:.6f}" for v in verdicts if v)
        parameters["purifier_suspicious"] = ",".join(
            "true" if v and v.suspicious else "false" for v in verdicts
        )
    return parameters


async def proxy_model_metadata(state: ServiceState, name: str, version: str | None) -> Response:
    """The upstream model's metadata with the purifier in front of it added (`purifier`);
    the upstream's 4xx (an unknown model) as it answered."""
    upstream: Upstream = state.upstream  # type: ignore[assignment]
    answer = await upstream.request(
        "GET", upstream_path(name, version), time.perf_counter() + state.settings.request_timeout_s
    )
    if answer.status_code != 200:
        return _upstream_failure(answer)
    meta = answer.json()
    runtime = state.model(state.settings.upstream_purifier)
    meta["purifier"] = {
        "model": runtime.entry.name,
        "version": str(runtime.entry.version),
        "image_inputs": state.settings.upstream_image_inputs or "every input of an image's form",
    }
    return JSONResponse(meta)


async def proxy_model_ready(state: ServiceState, name: str, version: str | None) -> JSONResponse:
    """Ready when both sides are: the purifier in front, and the upstream's model."""
    upstream: Upstream = state.upstream  # type: ignore[assignment]
    runtime = state.model(state.settings.upstream_purifier)
    answer = await upstream.probe(upstream_path(name, version, "/ready"))
    upstream_ready = answer is not None and answer.status_code == 200
    purifier_ready = runtime.ready and state.is_ready
    ok = upstream_ready and purifier_ready
    body = {"name": name, "ready": ok, "purifier_ready": purifier_ready}
    body["upstream_ready"] = upstream_ready
    return JSONResponse(body, 200 if ok else 503)


async def upstream_ready(state: ServiceState) -> bool:
    """The upstream's server-ready (GET /v2/health/ready), within the probe timeout."""
    answer = await state.upstream.probe("/v2/health/ready")  # type: ignore[union-attr]
    return answer is not None and answer.status_code == 200


def _upstream_failure(answer: Any) -> Response:
    """An upstream's 4xx (the caller's mistake, in the upstream's words) as it came; its
    5xx as our JSON 502 with its status and message."""
    if answer.status_code >= 500:
        raise ServiceError(
            502,
            "upstream_error",
            f"upstream answered {answer.status_code}: {upstream_message(answer)}",
            details={"upstream_status": answer.status_code},
        )
    return Response(answer.content, answer.status_code, headers=_passed_on(answer))
