"""`purifier serve`: run the app under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app
from service.config import Settings
from service.middleware import RequestIdFilter


def serve(host: str | None = None, port: int | None = None, model: str | None = None) -> None:
    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "default_model": model}.items()
        if v is not None
    }
    settings = Settings(**overrides)
    configure_logging()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
        access_log=False,  # ours (service.middleware) carries the request id, no query
        log_config=None,  # keep the handler below for uvicorn's loggers too
    )


def configure_logging() -> None:
    """Every line carries the request id it was written for ("-" outside requests)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
