"""Every hostile corpus file gets its documented outcome, and the service stays up."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.hostile_corpus import CASES, Case, markdown_table
from tests.service.test_errors import assert_error


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_documented_outcome(server, case: Case):
    body = case.make()
    response = httpx.post(
        f"{server.url}/purify", content=body, headers={"Content-Type": case.content_type}
    )
    if case.status != 200:
        assert_error(response, case.status, case.code)
        return
    assert response.status_code == 200, response.text
    result = Image.open(io.BytesIO(response.content))
    assert result.size == case.size and result.mode == case.mode
    assert b"PK\x03\x04" not in response.content  # nothing of the request passes through


def test_readme_documents_every_outcome():
    assert markdown_table() in (REPO / "docs" / "reliability.md").read_text()


def test_still_serving_after_the_corpus(server):
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("source", "fmt", "mode"),
    [
        ("cmyk_jpeg", "png", "RGB"),  # found by the atheris target: PNG cannot hold CMYK
        ("cmyk_jpeg", "webp", "RGB"),
        ("png_16bit", "jpeg", "L"),
        ("png_16bit", "webp", "RGB"),
        ("palette_transparency", "jpeg", "RGB"),
        ("palette_transparency", "webp", "RGBA"),
    ],
)
def test_output_formats_that_cannot_hold_the_input_mode(server, source, fmt, mode):
    case = next(c for c in CASES if c.name == source)
    body = case.make()
    response = httpx.post(
        f"{server.url}/purify",
        params={"format": fmt},
        content=body,
        headers={"Content-Type": case.content_type},
    )
    assert response.status_code == 200, response.text
    result = Image.open(io.BytesIO(response.content))
    assert result.mode == mode and result.size == case.size
    if source == "png_16bit":  # scaled to 8 bits, not clipped to white
        original = np.asarray(Image.open(io.BytesIO(body)), dtype=np.float64) / 257
        assert abs(np.asarray(result.convert("L"), dtype=np.float64).mean() - original.mean()) < 20
