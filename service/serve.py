"""`purifier serve`: run the app under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app
from service.config import Settings


def serve(host: str | None = None, port: int | None = None, model: str | None = None) -> None:
    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "default_model": model}.items()
        if v is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
