"""The ASGI layer in front of every route: request ids, optional API-key authentication,
the in-flight request limit and one access-log line per request.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so response bodies stream
through untouched. The access log holds method, path (never the query string or any
body), status, duration and the request id; nothing from a request is logged otherwise.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import Response

from service.errors import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
# A caller's id is kept when it is short and plain (it lands in our logs).
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# Probes must work without credentials; the page at / is static (it asks for the key).
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/")
WORK_PATHS = re.compile(r"^(/purify|/v2/models/[^/]+(/versions/[^/]+)?/infer)$")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("purifier.access")


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every log record (`%(request_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """`Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return _header(scope, b"x-api-key")


class ServiceMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_concurrent_requests: int,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_concurrent = max_concurrent_requests
        self.on_reject = on_reject
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER.encode())
        if incoming and SAFE_REQUEST_ID.match(incoming):
            request_id = incoming
        else:
            request_id = os.urandom(16).hex()  # as uuid4().hex, without building a UUID
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        path = scope["path"]
        is_work = WORK_PATHS.match(path) is not None
        try:
            if self.api_key and path not in OPEN_PATHS and not self._authorised(scope):
                rejection = error_response(
                    401, "unauthorized", "missing or wrong API key", path=path
                )
                rejection.headers["www-authenticate"] = 'Bearer realm="purifier"'
                await self._reject(rejection, "unauthorized", scope, receive, send_with_id)
            elif is_work and self.in_flight >= self.max_concurrent:
                message = f"{self.in_flight} requests in flight (PURIFIER_MAX_CONCURRENT_REQUESTS)"
                rejection = error_response(
                    503, "too_many_requests", message, retry_after=1, path=path
                )
                await self._reject(rejection, "too_many_requests", scope, receive, send_with_id)
            elif is_work:
                self.in_flight += 1
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    self.in_flight -= 1
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %d %.1fms",
                scope["method"],
                path,
                status,
                (time.perf_counter() - started) * 1000,
            )
            request_id_var.reset(token)

    def _authorised(self, scope: Scope) -> bool:
        key = presented_key(scope)
        # Constant-time: the comparison takes as long for a near miss as for a far one.
        return key is not None and hmac.compare_digest(key.encode(), self.api_key or b"")

    async def _reject(
        self, response: Response, code: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if self.on_reject is not None:
            self.on_reject(code)
        await response(scope, receive, send)
