"""Keyed noise for stochastic models (issue 38), over real HTTP on loopback against real
`purifier serve` processes: the same bytes give the same answer on two processes that
share a key, another key or a one-pixel change gives other noise, tiles meet the whole
image's noise field, callers cannot choose the noise, and the key never leaves."""

from __future__ import annotations

import io
import json
import secrets

import httpx
import numpy as np
import pytest
from PIL import Image

from purifier.noise import keyed_noise
from service.config import Settings
from service.noise_key import NoiseKeyError, load_noise_key
from tests.service import stochastic_model

KEY = "k3y-" + secrets.token_hex(16)  # distinctive: searched for in every output
OTHER_KEY = "0th3r-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> str:
    return str(stochastic_model.write_repository(tmp_path_factory.mktemp("noisy")))


@pytest.fixture(scope="module")
def servers(start_server, repository):
    env = {"PURIFIER_MODEL_REPOSITORY": repository}
    return (
        start_server(**env, PURIFIER_NOISE_KEY=KEY),
        start_server(**env, PURIFIER_NOISE_KEY=KEY, PURIFIER_ALLOW_CLIENT_NOISE="true"),
        start_server(**env, PURIFIER_NOISE_KEY=OTHER_KEY),
    )


def photo(width: int = 150, height: int = 130, seed: int = 0) -> np.ndarray:
    """A smooth RGB test image (uint8 HWC) with some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    return np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def purify(server, body: bytes, content_type: str = "image/png", **params) -> httpx.Response:
    return httpx.post(
        f"{server.url}/purify",
        content=body,
        headers={"Content-Type": content_type},
        params={"format": "png", **params},
        timeout=60,
    )


def decoded(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def as_model_pixels(pixels: np.ndarray) -> np.ndarray:
    """What the service decodes a PNG to: float32 (C, H, W) in [0, 1]."""
    return np.ascontiguousarray(np.asarray(pixels, np.float32).transpose(2, 0, 1) / 255.0)


def test_the_same_bytes_give_the_same_answer_on_two_processes_sharing_a_key(servers):
    first, second, _ = servers
    body = encode(photo())
    a, b, again = decoded(purify(first, body)), decoded(purify(second, body)), None
    again = decoded(purify(first, body))
    assert np.array_equal(a, b)
    assert np.array_equal(a, again)


def test_another_key_gives_other_noise(servers):
    first, _, other = servers
    body = encode(photo())
    a, b = decoded(purify(first, body)), decoded(purify(other, body))
    assert np.abs(a.astype(int) - b.astype(int)).max() > 2


def test_a_one_pixel_change_draws_another_noise_field(servers):
    first = servers[0]
    pixels = photo()
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    a, b = decoded(purify(first, encode(pixels))), decoded(purify(first, encode(changed)))
    far = (slice(20, None), slice(20, None))  # beyond the blur's reach of pixel (0, 0)
    assert np.abs(a[far].astype(int) - b[far].astype(int)).mean() > 1


def test_a_lossless_webp_of_the_same_pixels_meets_the_same_noise(servers):
    first = servers[0]
    pixels = photo()
    png = decoded(purify(first, encode(pixels)))
    webp = decoded(purify(first, encode(pixels, "WEBP", lossless=True), "image/webp"))
    assert np.array_equal(png, webp)


def test_tiles_meet_the_whole_image_noise_field(servers):
    """150x130 is cut into 64-px tiles; the answer matches the graph run on the whole
    image with the documented noise (HMAC-SHA256(key, pixels) -> Philox) within 2 levels."""
    first = servers[0]
    pixels = photo()
    x = as_model_pixels(pixels)
    noise = keyed_noise(KEY.encode(), x, (1, *x.shape))
    whole = stochastic_model.reference(x[None], noise)[0]
    expected = np.round(whole * 255).transpose(1, 2, 0)
    got = decoded(purify(first, encode(pixels))).astype(float)
    # The service edge-pads the image (and its noise) to its shape bucket at the bottom
    # and right, where the blur then averages padded pixels: the last 2 rows and columns
    # differ from an unpadded run for that reason alone. Tile seams are all inside.
    inside = (slice(None, -2), slice(None, -2))
    assert np.abs(got[inside] - expected[inside]).max() <= 2


def test_callers_cannot_choose_the_noise(servers):
    first = servers[0]
    refused = purify(first, encode(photo(32, 32)), seed="7")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "seed_refused"
    body = {
        "inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [1, 8, 8, 3], "data": [0] * 192}
        ],
        "parameters": {"seed": 7},
    }
    v2 = httpx.post(f"{first.url}/v2/models/{stochastic_model.NAME}/infer", json=body)
    assert v2.status_code == 400 and v2.json()["code"] == "seed_refused"


def v2_with_noise(server, image: np.ndarray, noise: np.ndarray) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": list(image.shape),
                "data": image.ravel().tolist(),
            },
            {
                "name": "noise",
                "datatype": "FP32",
                "shape": list(noise.shape),
                "data": noise.ravel().tolist(),
            },
        ]
    }
    return httpx.post(
        f"{server.url}/v2/models/{stochastic_model.NAME}/infer", json=body, timeout=60
    )


def test_client_noise_only_where_the_operator_allows_it(servers):
    keyed_only, allowing, _ = servers
    rng = np.random.default_rng(3)
    image = rng.random((1, 3, 20, 24), dtype=np.float32)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    refused = v2_with_noise(keyed_only, image, noise)
    assert refused.status_code == 400
    assert refused.json()["code"] == "client_noise_refused"
    answer = v2_with_noise(allowing, image, noise)
    assert answer.status_code == 200, answer.text
    got = np.asarray(answer.json()["outputs"][0]["data"], np.float32).reshape(image.shape)
    expected = stochastic_model.reference(image, noise)
    # Inside the bucket padding's reach (see the tiling test): the caller's noise, exactly.
    assert np.abs(got - expected)[..., :-2, :-2].max() < 1e-5
    meta = httpx.get(f"{allowing.url}/v2/models/{stochastic_model.NAME}").json()
    assert [i["name"] for i in meta["inputs"]] == ["image", "noise"]


def test_the_key_never_leaves_the_process(servers, repository):
    first = servers[0]
    outputs = []
    for request in (
        lambda: purify(first, encode(photo())),
        lambda: purify(first, b"not an image"),
        lambda: purify(first, encode(photo(16, 16)), seed="1"),
        lambda: httpx.get(f"{first.url}/metrics"),
        lambda: httpx.get(f"{first.url}/models"),
        lambda: httpx.get(f"{first.url}/v2/models/{stochastic_model.NAME}"),
        lambda: httpx.get(f"{first.url}/"),
        lambda: httpx.get(f"{first.url}/openapi.json"),
    ):
        response = request()
        outputs += [response.content, json.dumps(dict(response.headers)).encode()]
    outputs.append(first.log.read_bytes())
    for secret in (KEY.encode(), KEY.encode().hex().encode()):
        assert not any(secret in out for out in outputs)
    assert b"keyed by PURIFIER_NOISE_KEY" in first.log.read_bytes()  # its source is logged


def test_the_hostile_corpus_gets_its_documented_outcomes_and_never_the_key(servers):
    """Every hostile and odd input (grey, 16-bit, alpha, 1x1, EXIF-rotated, broken, too
    large) against a stochastic model: the documented status, and no key in any answer."""
    from tests.hostile_corpus import CASES

    first = servers[0]
    for case in CASES:
        response = purify(first, case.make(), case.content_type, format="same")
        assert response.status_code == case.status, (case.name, response.text[:200])
        answer = response.content + json.dumps(dict(response.headers)).encode()
        assert KEY.encode() not in answer and KEY.encode().hex().encode() not in answer
    assert httpx.get(f"{first.url}/v2/health/ready").status_code == 200
    assert KEY.encode() not in first.log.read_bytes()


def test_the_key_comes_from_a_file_and_bad_keys_stop_start_up(tmp_path):
    secret_file = tmp_path / "noise-key"
    secret_file.write_text(KEY + "\n")  # a mounted Secret often ends in a newline
    from_file = load_noise_key(Settings(noise_key_file=secret_file))
    from_env = load_noise_key(Settings(noise_key=KEY))
    pixels = as_model_pixels(photo(16, 16))
    assert np.array_equal(
        from_file.noise(pixels, (1, 3, 16, 16)), from_env.noise(pixels, (1, 3, 16, 16))
    )
    assert KEY not in repr(from_file) and "PURIFIER_NOISE_KEY_FILE" in from_file.source
    with pytest.raises(NoiseKeyError, match="at least 16 bytes") as short:
        load_noise_key(Settings(noise_key="short-key"))
    assert "short-key" not in str(short.value)
    with pytest.raises(NoiseKeyError, match="not both"):
        load_noise_key(Settings(noise_key=KEY, noise_key_file=secret_file))
    with pytest.raises(NoiseKeyError, match="cannot read"):
        load_noise_key(Settings(noise_key_file=tmp_path / "missing"))
    unset = load_noise_key(Settings())
    assert unset.source == "random for this process"
    assert not np.array_equal(
        unset.noise(pixels, (1, 3, 16, 16)),
        load_noise_key(Settings()).noise(pixels, (1, 3, 16, 16)),
    )
