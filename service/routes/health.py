"""Health and model metadata: the Open Inference Protocol (KServe v2) routes, /models."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from purifier.contract import INPUT_NAME, NOISE_INPUT_NAME, OUTPUT_NAME
from service.errors import error_response
from service.proxy import proxies, proxy_model_metadata, proxy_model_ready, upstream_ready
from service.state import ServiceState

router = APIRouter()


def _state(request: Request) -> ServiceState:
    return request.app.state.purifier


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {"name": "purifier", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live")
async def live(request: Request) -> JSONResponse:
    state = _state(request)
    dead = [name for name, m in state.models.items() if m.ready and not m.batcher.alive]
    if dead:
        message = f"batching worker stopped for {dead}"
        return error_response(503, "batcher_dead", message, path=request.url.path)
    return JSONResponse({"live": True})


@router.get("/v2/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Server-ready as the Open Inference Protocol means it: every loaded model ready.
    The default model's own ready route (/v2/models/{name}/ready) answers as soon as it
    serves: what a readiness probe that wants a quick start should ask."""
    state = _state(request)
    ready = state.every_model_ready
    if ready and state.upstream is not None:  # proxy mode: serving needs both sides
        ready = await upstream_ready(state)
    if ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False}, 503, headers={"Retry-After": "1"})


def model_metadata(state: ServiceState, name: str) -> dict[str, Any]:
    runtime = state.model(name)
    c = runtime.engine.channels
    tensor = {"datatype": "FP32", "shape": [-1, c, -1, -1]}
    inputs = [{"name": INPUT_NAME, **tensor}]
    if runtime.engine.stochastic and state.settings.allow_client_noise:
        inputs.append({"name": NOISE_INPUT_NAME, **tensor})  # optional: keyed when absent
    meta = {
        "name": runtime.entry.name,
        "versions": [str(runtime.entry.version)],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": [{"name": OUTPUT_NAME, **tensor}],
    }
    if runtime.engine.stochastic:
        meta["parameters"] = {"noise": "keyed by the server (HMAC of the decoded pixels)"}
    return meta


def _check_version(state: ServiceState, name: str, version: str | None) -> None:
    if name in state.models:  # a refused or unknown model is answered as such below
        state.models[name].check_version(version)


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_meta(request: Request, name: str, version: str | None = None) -> Response:
    state = _state(request)
    if proxies(state, name):
        return await proxy_model_metadata(state, name, version)
    _check_version(state, name, version)
    return JSONResponse(model_metadata(state, name))


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None) -> JSONResponse:
    state = _state(request)
    if proxies(state, name):
        return await proxy_model_ready(state, name, version)
    _check_version(state, name, version)
    if name in state.failed:
        return JSONResponse({"name": name, "ready": False, "error": state.failed[name]}, 503)
    runtime = state.model(name)
    ok = runtime.ready and state.is_ready
    return JSONResponse({"name": name, "ready": ok}, 200 if ok else 503)


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {
        "default": state.default_model,
        "models": [
            {
                **m.entry.card,
                "provider": m.engine.provider,
                "precision": m.engine.precision,
                "ready": m.ready,
            }
            for m in state.models.values()
        ]
        + [{"name": name, "ready": False, "error": why} for name, why in state.failed.items()],
    }


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    page = resources.files("service").joinpath("static/index.html").read_text()
    return HTMLResponse(page)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = _state(request)
    for name, runtime in state.models.items():
        state.metrics.pending.labels(name).set(runtime.batcher.pending)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
