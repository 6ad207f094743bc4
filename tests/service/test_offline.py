"""Purification without a server (issue 39): `from purifier import Purifier` and
`purifier purify` run the service's pipeline in process - the same answer as POST
/purify for the same bytes - over files, folders and globs, resumably, never over an
input, naming each file that fails."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.service import stochastic_model

KEY = "offline-test-key-0123456789abcdef"


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def photo(width: int, height: int, seed: int, mode: str = "RGB") -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def noisy_repository(tmp_path_factory) -> str:
    return str(stochastic_model.write_repository(tmp_path_factory.mktemp("noisy")))


@pytest.fixture(scope="module")
def noisy_server(start_server, noisy_repository):
    return start_server(PURIFIER_MODEL_REPOSITORY=noisy_repository, PURIFIER_NOISE_KEY=KEY)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PURIFIER_INTRA_OP_THREADS": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "purifier.cli", "purify", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=full_env,
        timeout=600,
    )


def test_the_python_api_answers_as_the_service_does(server):
    from purifier import Purifier

    purifier = Purifier("fmnist-nrp", REPO / "exported_models")
    grey = photo(40, 36, 0, "L")
    served = httpx.post(
        f"{server.url}/purify?model=fmnist-nrp",
        content=png(grey),
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert served.status_code == 200
    expected = np.asarray(Image.open(io.BytesIO(served.content)), np.int16)
    result = purifier.purify_bytes(png(grey))
    assert result.content_type == "image/png"
    got = np.asarray(Image.open(io.BytesIO(result.data)), np.int16)
    assert np.abs(got - expected).max() <= 1  # one pipeline; batching aside
    as_pil = purifier.purify(Image.fromarray(grey))
    assert as_pil.size == (40, 36) and as_pil.mode == "L"
    as_array = purifier.purify(grey)
    assert as_array.dtype == np.uint8 and as_array.shape == grey.shape
    assert np.abs(as_array.astype(np.int16) - got).max() <= 1
    floats = purifier.purify(grey.astype(np.float32) / 255)
    assert floats.dtype == np.float32 and floats.min() >= 0 and floats.max() <= 1


def test_the_api_names_what_it_cannot_load():
    from service.offline import Purifier, PurifierError

    with pytest.raises(PurifierError, match="no-such-model"):
        Purifier("no-such-model", REPO / "exported_models")


def test_a_stochastic_model_in_process_meets_the_service_s_keyed_noise(
    noisy_server, noisy_repository, monkeypatch
):
    from purifier import Purifier

    monkeypatch.setenv("PURIFIER_NOISE_KEY", KEY)
    purifier = Purifier(stochastic_model.NAME, noisy_repository)
    body = png(photo(150, 130, 1))
    served = httpx.post(
        f"{noisy_server.url}/purify", content=body, headers={"Content-Type": "image/png"}
    )
    assert served.status_code == 200
    assert purifier.purify_bytes(body).data == served.content


def test_the_batch_command_purifies_folders_files_and_globs_resumably(tmp_path, noisy_repository):
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    for i in range(3):
        (inputs / f"a{i}.png").write_bytes(png(photo(70, 50, i)))
    (inputs / "nested" / "b.png").write_bytes(png(photo(64, 64, 9)))
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    loose = tmp_path / "loose.png"
    loose.write_bytes(png(photo(33, 21, 5)))
    (tmp_path / "g1.png").write_bytes(png(photo(20, 20, 6)))
    out = tmp_path / "out"
    args = [str(inputs), str(loose), str(tmp_path / "g*.png"), "--out", str(out)]
    env = {"PURIFIER_NOISE_KEY": KEY}
    first = cli(*args, "--repository", noisy_repository, **env)
    assert first.returncode == 1, first.stderr  # one input is broken
    assert "broken.png" in first.stdout and "ImageError" in first.stdout
    assert "6 purified" in first.stdout and "1 failed" in first.stdout
    assert "images/s" in first.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [
        "g1.png",
        "in/a0.png",
        "in/a1.png",
        "in/a2.png",
        "in/nested/b.png",
        "loose.png",
    ]
    assert not list(out.rglob(".*partial"))
    before = {p: p.read_bytes() for p in out.rglob("*.png")}
    # Interrupted: two outputs never made it. Resumed: only they are made, identically.
    (out / "in" / "a1.png").unlink()
    (out / "loose.png").unlink()
    again = cli(*args, "--repository", noisy_repository, **env)
    assert "2 purified" in again.stdout and "4 skipped" in again.stdout
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == before
    image = Image.open(out / "in" / "nested" / "b.png")
    assert image.size == (64, 64) and image.mode == "RGB"


def test_the_batch_command_converts_formats_and_never_writes_over_an_input(tmp_path):
    src = tmp_path / "photo.png"
    src.write_bytes(png(photo(40, 30, 3, "L")))
    done = cli(
        str(src), "--out", str(tmp_path / "jpegs"), "--format", "jpeg", "--model", "fmnist-nrp"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert Image.open(tmp_path / "jpegs" / "photo.jpg").format == "JPEG"
    refused = cli(str(src), "--out", str(tmp_path), "--model", "fmnist-nrp")
    assert refused.returncode == 2 and "is an input" in refused.stderr
    assert src.read_bytes() == png(photo(40, 30, 3, "L"))
    missing = cli(str(tmp_path / "nothing*.png"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
