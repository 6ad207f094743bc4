"""create_app(settings): the FastAPI app, its lifespan (load, warm up, drain) and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.batcher import DynamicBatcher
from service.config import PREFERRED_DEFAULT_MODELS, Settings
from service.detection import detector_for
from service.engine import Engine, GPURequiredError
from service.errors import install_handlers
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.noise_key import load_noise_key
from service.registry import ModelEntry, ModelLoadError, scan
from service.routes import health, purify, v2
from service.routes.purify import PURIFY_HEADERS, PURIFY_OPERATION
from service.state import ModelRuntime, ServiceState
from service.tiles import tile_geometry
from service.upstream import Upstream
from service.warmup import serve, warm_the_rest, warm_up

log = logging.getLogger("purifier")


def _runtime(entry: ModelEntry, settings: Settings, state: ServiceState) -> ModelRuntime:
    engine = Engine(entry, settings)
    name = entry.name
    metrics = state.metrics

    def observe(batch: int, inference_s: float, queued: list[float]) -> None:
        metrics.batch_size.labels(name).observe(batch)
        metrics.inference.labels(name).observe(inference_s)
        for q in queued:
            metrics.queue.labels(name).observe(q)

    # One inference thread per model instance: onnxruntime parallelises inside a run.
    batcher = DynamicBatcher(
        engine.run,
        ThreadPoolExecutor(engine.instances, thread_name_prefix=f"infer-{name}"),
        settings.max_batch_size,
        settings.max_queue_delay_ms / 1000.0,
        settings.max_queue_size,
        observer=observe,
        max_queue_wait_s=settings.max_queue_wait_s,
        headroom=settings.admission_headroom,
        instances=engine.instances,
        expecting=lambda: state.arriving > 0,
        max_batch_pixels=settings.max_batch_pixels,
    )
    card = entry.card
    geometry = tile_geometry(entry, settings)
    metrics.model_info.labels(name).info(
        {
            "version": str(entry.version),
            "provider": engine.provider,
            "precision": engine.precision,
            "method": str(card.get("method")),
        }
    )
    detector = detector_for(card, engine.path, settings.suspicion_fpr)
    return ModelRuntime(entry, engine, batcher, geometry, detector)


def default_model_name(configured: str | None, loaded: list[str]) -> str:
    """PURIFIER_DEFAULT_MODEL when set; else the first of PREFERRED_DEFAULT_MODELS that
    loaded; else the first loaded model."""
    preferred = next((m for m in PREFERRED_DEFAULT_MODELS if m in loaded), None)
    return configured or preferred or loaded[0]


def _load_models(state: ServiceState) -> None:
    """Load every model; what happens to a broken one follows `exit_on_model_error`."""
    settings = state.settings
    entries, failures = scan(settings.model_repository, settings.models)
    for entry in entries:
        try:
            state.models[entry.name] = _runtime(entry, settings, state)
        except GPURequiredError:
            raise
        except ModelLoadError as err:  # a card the service cannot follow: it says why
            failures[entry.name] = str(err)
        except Exception as err:  # onnxruntime refuses the file: name it
            failures[entry.name] = f"{entry.onnx_path}: onnxruntime cannot load it: {err}"
    for name, why in failures.items():
        log.error("model %s refused: %s", name, why)
    if failures and (settings.exit_on_model_error or not state.models):
        raise ModelLoadError("; ".join(failures.values()))
    state.failed = failures
    state.default_model = default_model_name(settings.default_model, list(state.models))
    if state.default_model not in state.models:
        raise ModelLoadError(
            f"default model {state.default_model!r} is not loaded: "
            f"{failures.get(state.default_model, 'no such model')}"
        )


def _drain_on_sigterm(state: ServiceState) -> None:
    """On SIGTERM readiness turns off at once; after `shutdown_drain_s` (time for load
    balancers to notice) uvicorn's own handler stops accepting connections and lets the
    in-flight requests finish before the process exits."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return
    loop = asyncio.get_running_loop()

    def handler(signum: int, frame: Any) -> None:
        state.draining = True
        log.info("SIGTERM: readiness off, draining for %.1f s", state.settings.shutdown_drain_s)
        if callable(previous):
            loop.call_later(state.settings.shutdown_drain_s, previous, signum, frame)

    with contextlib.suppress(ValueError):  # not the main thread (an in-process client)
        signal.signal(signal.SIGTERM, handler)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(
            settings,
            Metrics(),
            ThreadPoolExecutor(settings.codec_threads, thread_name_prefix="codec"),
        )
        app.state.purifier = state
        state.noise_key = load_noise_key(settings)  # before any model: a bad key stops start-up
        _load_models(state)
        if settings.upstream_url:
            state.model(settings.upstream_purifier)  # the proxy's purifier must be loaded
            state.upstream = Upstream(settings)
            log.info("proxy mode: purifying on the way to %s", state.upstream.url)
        default = state.models[state.default_model]
        serve(default, warm_up(default, settings))
        state.ready = True  # the default model serves; the others follow, one at a time
        log.info(
            "serving %s: ready at GET /v2/models/%s/ready; GET /v2/health/ready answers 200 "
            "once every loaded model (%d) has warmed up",
            state.default_model,
            state.default_model,
            len(state.models),
        )
        rest = [m for m in state.models.values() if m is not default]
        warming = asyncio.get_running_loop().create_task(warm_the_rest(rest, settings))
        _drain_on_sigterm(state)
        try:
            yield
        finally:
            state.draining = True
            warming.cancel()
            for runtime in state.models.values():
                if runtime.ready:
                    await runtime.batcher.stop()
            state.codec_pool.shutdown(wait=False)
            if state.upstream is not None:
                await state.upstream.aclose()

    app = FastAPI(
        title="Purifier",
        version="0.1.0",
        lifespan=lifespan,
        description="Adversarial purification sidecar",
    )
    install_handlers(app)

    def count_rejection(code: str) -> None:
        state = getattr(app.state, "purifier", None)
        if state is not None:
            state.metrics.rejections.labels(code).inc()

    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(
        ServiceMiddleware,
        api_key=api_key,
        max_concurrent_requests=settings.max_concurrent_requests,
        on_reject=count_rejection,
    )
    if settings.cors_origins:  # outermost, so browser preflights are answered before auth
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
            expose_headers=["x-request-id", "retry-after", *PURIFY_HEADERS],
        )
    app.include_router(purify.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    _document_purify(app)
    return app


def _document_purify(app: FastAPI) -> None:
    """/purify is a plain Starlette route (see service.routes.purify), which FastAPI
    leaves out of the OpenAPI document: add its operation to the generated one."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            FastAPI.openapi(app)["paths"]["/purify"] = PURIFY_OPERATION
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
