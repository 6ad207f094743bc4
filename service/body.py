"""Reading a request's body under the service's limits: its size and how long it may
take to arrive, and the image inside it (raw or the multipart `image` field). Shared by
the routes, so that no route imports another."""

from __future__ import annotations

import asyncio

from fastapi import Request

from service.errors import ServiceError
from service.multipart import multipart_image

RAW_TYPES = ("image/", "application/octet-stream")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refusing more than `limit` bytes without reading past it, and a body
    that has not fully arrived within `timeout_s` (a slow sender holds no slot forever)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, "body_too_large", f"body of {declared} bytes is over {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServiceError(413, "body_too_large", f"body is over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as err:
        raise ServiceError(
            408, "body_timeout", f"the body did not arrive within {timeout_s:g} s"
        ) from err
    return b"".join(chunks)


async def image_bytes(request: Request, limit: int, timeout_s: float) -> bytes:
    content_type = request.headers.get("content-type", "").lower()
    body = await read_body(request, limit, timeout_s)
    if content_type.startswith("multipart/form-data"):
        return multipart_image(body, request.headers["content-type"])
    if content_type and not content_type.startswith(RAW_TYPES):
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type!r}: send an image/* body or multipart",
        )
    return body
