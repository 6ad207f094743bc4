"""Error responses: JSON {"error": {"code", "message"}} with the right status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.batcher import DeadlineExceededError, InferenceError, QueueFullError
from service.imaging import ImageError


class ServiceError(Exception):
    """`details`: more fields of the JSON error beside code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.details = details or {}


def error_response(
    status: int,
    code: str,
    message: str,
    retry_after: int | None = None,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"error": {"code": code, "message": message, **(details or {})}}
    return JSONResponse(body, status, headers=headers)


def as_service_error(err: Exception) -> ServiceError:
    """Map the pipeline's exceptions to HTTP errors."""
    if isinstance(err, ServiceError):
        return err
    if isinstance(err, ClientDisconnect):  # nobody to answer; counted apart from 5xx
        return ServiceError(499, "client_closed_request", "the client went away mid-request")
    if isinstance(err, ImageError):
        return ServiceError(err.status, err.code, err.message)
    if isinstance(err, QueueFullError):
        return ServiceError(503, err.code, f"{err}; retry later", err.retry_after)
    if isinstance(err, DeadlineExceededError):
        return ServiceError(504, "deadline_exceeded", str(err))
    if isinstance(err, InferenceError):
        return ServiceError(500, "inference_failed", str(err))
    return ServiceError(500, "internal_error", f"{type(err).__name__}")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_: Request, err: ServiceError) -> JSONResponse:
        return error_response(err.status, err.code, err.message, err.retry_after, err.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        return error_response(400, "bad_request", "; ".join(parts))
