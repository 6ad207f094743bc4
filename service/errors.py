"""Error responses with the right status: JSON {"error": {"code", "message"}}, and on the
Open Inference Protocol's routes (/v2...) the protocol's own {"error": "<message>"} with our
`code` beside it (clients such as tritonclient read `error` as a string)."""

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


V2_PREFIX = "/v2"


def error_body(code: str, message: str, details: dict[str, Any], path: str) -> dict[str, Any]:
    """The JSON error for a request to `path` (module docstring)."""
    if path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
        return {"error": message, "code": code, **details}
    return {"error": {"code": code, "message": message, **details}}


def error_response(
    status: int,
    code: str,
    message: str,
    retry_after: int | None = None,
    details: dict[str, Any] | None = None,
    path: str = "",
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(error_body(code, message, details or {}, path), status, headers=headers)


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
    async def _service(request: Request, err: ServiceError) -> JSONResponse:
        return error_response(
            err.status, err.code, err.message, err.retry_after, err.details, request.url.path
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), path=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        return error_response(400, "bad_request", "; ".join(parts), path=request.url.path)
