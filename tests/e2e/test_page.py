"""The page at `/` as a person uses it, in real headless Chromium (Debian's `chromium`,
driven by playwright): before an upload it shows no empty image boxes; after a photo is
chosen it shows the original, the purified image and their difference at one size, and
the purified pixels are exactly what `/purify` answers for the same file; an error is
shown, not swallowed."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes advise for a closed network: no background connections.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing: install Debian's chromium (make test does, as root)"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def photo_file(tmp_path: Path) -> Path:
    """A real photograph (scikit-image's coffee), cropped to an odd size."""
    from training.data.photos import source_dir

    img = (
        Image.open(source_dir("scikit-image") / "coffee.png")
        .convert("RGB")
        .crop((40, 30, 141, 108))
    )
    path = tmp_path / "coffee.png"
    img.save(path)
    return path


def blob_bytes(page, selector: str) -> bytes:
    """The bytes behind an <img>'s blob: URL, read inside the page."""
    data = page.evaluate(
        """async (sel) => {
            const r = await fetch(document.querySelector(sel).src);
            const b = new Uint8Array(await r.arrayBuffer());
            let s = ""; for (const x of b) s += String.fromCharCode(x);
            return btoa(s);
        }""",
        selector,
    )
    return base64.b64decode(data)


def test_upload_shows_the_purified_photo_that_purify_returns(server, browser, tmp_path):
    page = browser.new_page()
    page.goto(f"{server.url}/")
    assert not page.locator("#results").is_visible()  # no empty boxes before an upload
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    path = photo_file(tmp_path)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("body[data-purified=true]", timeout=60_000)

    shown = np.asarray(Image.open(io.BytesIO(blob_bytes(page, "#purified"))))
    model = page.eval_on_selector("#model", "m => m.value")
    answer = httpx.post(
        f"{server.url}/purify",
        params={"format": "png", "model": model},
        content=path.read_bytes(),
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert answer.status_code == 200
    assert np.array_equal(shown, np.asarray(Image.open(io.BytesIO(answer.content))))
    # The three views at one size, and the figures beside them.
    sizes = {
        tuple(page.eval_on_selector(sel, "e => [e.clientWidth, e.clientHeight]"))
        for sel in ("#original", "#purified", "#diff")
    }
    assert len(sizes) == 1
    info = page.inner_text("#info")
    assert "inference" in info and "Linf" in info and "101x78" in info
    # the suspicion verdict the answer's headers carry (fmnist-nrp's card is calibrated)
    verdict = (
        "SUSPICIOUS" if answer.headers["x-purifier-suspicious"] == "true" else "not suspicious"
    )
    assert f"suspicion {answer.headers['x-purifier-suspicion']}: {verdict}" in info
    page.fill("#zoom", "4")
    page.dispatch_event("#zoom", "input")
    assert page.eval_on_selector("#purified", "e => e.clientWidth") == 404  # 101 px x 4
    page.close()


def test_an_error_is_shown_to_the_person(server, browser, tmp_path):
    page = browser.new_page()
    page.goto(f"{server.url}/")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text, not a PNG")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "415" in page.inner_text("#status") or "400" in page.inner_text("#status")
    assert not page.locator("#results").is_visible()
    page.close()
