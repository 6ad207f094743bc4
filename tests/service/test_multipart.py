"""The in-memory multipart parser behind POST /purify's `image` field."""

from __future__ import annotations

import httpx
import pytest

from service.errors import ServiceError
from service.multipart import MAX_PARTS, multipart_image


def encoded(**kwargs) -> tuple[bytes, str]:
    """A body and Content-Type as httpx (and so most clients) sends them."""
    request = httpx.Request("POST", "http://x/purify", **kwargs)
    return request.read(), request.headers["content-type"]


def refused(body: bytes, content_type: str) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        multipart_image(body, content_type)
    assert caught.value.status == 400
    return caught.value


def test_the_image_file_field_comes_back_byte_for_byte_among_other_fields():
    payload = bytes(range(256)) * 50 + b"\r\n--not-the-boundary\r\n"
    body, ctype = encoded(
        files={"image": ("a.png", payload, "image/png")}, data={"note": "x", "other": "y"}
    )
    assert multipart_image(body, ctype) == payload


def test_a_missing_or_non_file_image_field_is_missing_image():
    body, ctype = encoded(files={"photo": ("a.png", b"abc", "image/png")})
    assert refused(body, ctype).code == "missing_image"
    body, ctype = encoded(data={"image": "not a file"}, files={"x": ("x", b"", "a/b")})
    assert refused(body, ctype).code == "missing_image"


def test_two_files_no_boundary_garbage_and_too_many_parts_are_bad_multipart():
    body, ctype = encoded(
        files=[("image", ("a.png", b"a", "image/png")), ("image", ("b.png", b"b", "image/png"))]
    )
    assert refused(body, ctype).code == "bad_multipart"
    assert refused(b"whatever", "multipart/form-data").code == "bad_multipart"
    assert refused(b"garbage", "multipart/form-data; boundary=abc").code == "bad_multipart"
    fields = {f"f{i}": "v" for i in range(MAX_PARTS)}
    body, ctype = encoded(files={"image": ("a.png", b"a", "image/png")}, data=fields)
    assert refused(body, ctype).code == "bad_multipart"
