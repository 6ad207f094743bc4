import asyncio
import io
import re

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.service.conftest import (
    decode_response,
    encode_image,
    fmnist_images,
    post_concurrently,
)


def post_image(url: str, body: bytes, content_type: str = "image/png", **params) -> httpx.Response:
    return httpx.post(
        f"{url}/purify",
        content=body,
        headers={"Content-Type": content_type},
        params=params,
        timeout=60,
    )


def test_purify_png_keeps_size_mode_and_reports_headers(server):
    img = fmnist_images(1)[0]
    response = post_image(server.url, encode_image(img, "PNG"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    out = decode_response(response)
    assert out.size == img.size and out.mode == "L"
    h = response.headers
    assert h["x-purifier-model"] == "fmnist-nrp" and h["x-purifier-model-version"] == "1"
    for name in (
        "x-purifier-queue-ms",
        "x-purifier-inference-ms",
        "x-purifier-l2",
        "x-purifier-linf",
    ):
        assert float(h[name]) >= 0
    assert int(h["x-purifier-batch-size"]) >= 1
    # The reported distances are the real distances between input and output.
    diff = np.asarray(out, np.float64) / 255 - np.asarray(img, np.float64) / 255
    assert float(h["x-purifier-linf"]) == pytest.approx(np.abs(diff).max(), abs=2 / 255)
    assert float(h["x-purifier-l2"]) == pytest.approx(np.sqrt((diff**2).sum()), rel=0.05)


def test_multipart_field_image(server):
    body = encode_image(fmnist_images(1)[0], "PNG")
    response = httpx.post(
        f"{server.url}/purify", files={"image": ("a.png", body, "image/png")}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert decode_response(response).size == (28, 28)


def test_purified_output_matches_a_direct_onnxruntime_run(server):
    import onnxruntime as ort

    from tests.conftest import REPO

    img = fmnist_images(3)[2]
    out = np.asarray(decode_response(post_image(server.url, encode_image(img, "PNG"))), np.float32)
    session = ort.InferenceSession(
        str(REPO / "exported_models/fmnist-nrp/1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.asarray(img, np.float32)[None, None] / 255
    padded = np.pad(x, ((0, 0), (0, 0), (0, 4), (0, 4)), mode="edge")  # the 32x32 bucket
    expected = session.run(None, {"image": padded})[0][0, 0, :28, :28] * 255
    assert np.abs(out - np.round(expected)).max() <= 1


def test_64_concurrent_requests_batch_and_match_single_requests(server):
    images = fmnist_images(64)
    bodies = [encode_image(img, "PNG") for img in images]

    before = batch_histogram(server.url)
    responses = asyncio.run(post_concurrently(server.url, bodies))
    assert all(r.status_code == 200 for r in responses)
    after = batch_histogram(server.url)
    batches = after["count"] - before["count"]
    images_run = after["sum"] - before["sum"]
    assert images_run == 64 and batches < 64  # some batches held more than one image
    assert max(int(r.headers["x-purifier-batch-size"]) for r in responses) > 1
    for body, response in zip(bodies, responses, strict=True):
        single = np.asarray(decode_response(post_image(server.url, body)), np.int16)
        batched = np.asarray(decode_response(response), np.int16)
        assert np.abs(single - batched).max() <= 1


def test_a_lone_request_skips_the_batching_delay_and_a_crowd_still_batches(start_server):
    """The batcher holds a batch open for more work only while requests are on their way:
    with a one-second delay, a lone request is not held back by it, and concurrent
    requests still share batches."""
    patient = start_server(PURIFIER_MAX_QUEUE_DELAY_MS="1000")
    bodies = [encode_image(img, "PNG") for img in fmnist_images(16)]
    lone = post_image(patient.url, bodies[0])
    assert lone.status_code == 200, lone.text
    assert float(lone.headers["x-purifier-queue-ms"]) < 500
    responses = asyncio.run(post_concurrently(patient.url, bodies))
    assert all(r.status_code == 200 for r in responses)
    assert max(int(r.headers["x-purifier-batch-size"]) for r in responses) > 1


def batch_histogram(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    values = {}
    for key in ("count", "sum"):
        match = re.search(
            rf'^purifier_batch_size_{key}{{model="fmnist-nrp"}} ([0-9.e+]+)$', text, re.M
        )
        values[key] = float(match.group(1)) if match else 0.0
    return values


def _rgb() -> Image.Image:
    grey = np.asarray(fmnist_images(1)[0])
    return Image.fromarray(np.stack([grey, grey[::-1], grey[:, ::-1]], -1), "RGB").resize((40, 30))


FORMATS = [
    ("PNG", "image/png", {}),
    ("JPEG", "image/jpeg", {"quality": 95}),
    ("WEBP", "image/webp", {"lossless": True}),
    ("BMP", "image/bmp", {}),
    ("TIFF", "image/tiff", {}),
]


@pytest.mark.parametrize(("fmt", "content_type", "params"), FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_formats_and_modes_round_trip(server, fmt, content_type, params, mode):
    img = _rgb().convert(mode)
    body = encode_image(img, fmt, **params)
    stored_mode = Image.open(io.BytesIO(body)).mode  # WebP holds no grey: it decodes as RGB
    response = post_image(server.url, body, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    out = decode_response(response)
    assert out.format == fmt and out.size == img.size and out.mode == stored_mode


def test_rgba_keeps_its_alpha_exactly(server):
    img = _rgb().convert("RGBA")
    alpha = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    img.putalpha(Image.fromarray(alpha))
    out = decode_response(post_image(server.url, encode_image(img, "PNG")))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out.getchannel("A")), alpha)


def test_grey_alpha_keeps_mode(server):
    img = fmnist_images(1)[0].convert("LA")
    out = decode_response(post_image(server.url, encode_image(img, "PNG")))
    assert out.mode == "LA" and out.size == (28, 28)


def test_palette_image_comes_back_as_palette(server):
    img = _rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = decode_response(post_image(server.url, encode_image(img, "PNG")))
    assert out.mode == "P" and out.size == img.size


def test_16_bit_png_stays_16_bit(server):
    grey = np.asarray(fmnist_images(1)[0], np.uint16) * 257
    img = Image.fromarray(grey)  # uint16 -> I;16
    out = decode_response(post_image(server.url, encode_image(img, "PNG")))
    assert out.mode in ("I;16", "I") and out.size == (28, 28)
    assert np.asarray(out).max() > 255  # the full 16-bit range survives


def test_exif_rotation_is_applied(server):
    img = _rgb()  # 40 wide, 30 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    body = encode_image(img, "JPEG", exif=exif.tobytes())
    out = decode_response(post_image(server.url, body, "image/jpeg"))
    assert out.size == (30, 40)


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")]
)
def test_output_format_can_be_chosen(server, fmt, content_type):
    img = _rgb().convert("RGBA")
    response = post_image(server.url, encode_image(img, "PNG"), format=fmt, quality=80)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert decode_response(response).size == img.size


def test_a_large_photo_is_tiled_and_comes_back_as_one_run_on_the_whole_photo(server):
    """Issue 25 as a user sees it: a grey photo larger than the 256-px tile comes back,
    through HTTP and PNG, within 2 grey levels (plus PNG's rounding) of fmnist-nrp run
    once on the whole (edge-padded) photo: no seams."""
    import onnxruntime as ort

    from service.imaging import cut, plan_tiles, stitch
    from training.data.photos import source_dir

    img = Image.open(source_dir("scikit-image") / "coffee.png").convert("L").crop((0, 0, 420, 300))
    response = post_image(server.url, encode_image(img, "PNG"))
    assert response.status_code == 200, response.text
    assert int(response.headers["x-purifier-batch-size"]) >= 2  # its tiles batched together
    served = np.asarray(decode_response(response), np.float32) / 255

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    onnx = REPO / "exported_models" / "fmnist-nrp" / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx), options, ["CPUExecutionProvider"])
    pixels = np.asarray(img, np.float32)[None] / 255
    plan = plan_tiles(300, 420, 4096, 0, 32, 8)
    (padded,) = cut(pixels, plan)
    whole = stitch([session.run(["purified"], {"image": padded[None]})[0][0]], plan)[0]
    assert served.shape == whole.shape == (300, 420)
    assert 255 * np.abs(served - whole).max() <= 2.5


EXPORTED = sorted(
    p.name for p in (REPO / "exported_models").iterdir() if (p / "config.pbtxt").exists()
)


def test_every_exported_model_is_served_by_name(start_server):
    """One server loading every committed purifier (NRP, ARN, ...): each answers
    /purify?model=NAME, and /models lists its card."""
    import json

    every = start_server(PURIFIER_MODELS=json.dumps(EXPORTED))
    img = fmnist_images(1)[0]
    cards = str(httpx.get(f"{every.url}/models", timeout=10).json())
    for model in EXPORTED:
        response = post_image(every.url, encode_image(img, "PNG"), model=model)
        assert response.status_code == 200, (model, response.text)
        assert response.headers["x-purifier-model"] == model
        assert decode_response(response).size == img.size
        assert model in cards
    every.stop()


@pytest.fixture(scope="module")
def rgb_server(start_server):
    """The same service with a three-channel model: the natural-image default."""
    return start_server(PURIFIER_MODELS='["photo-guided"]', PURIFIER_MAX_BATCH_SIZE="4")


def _modes() -> list[tuple[str, Image.Image, str]]:
    rgb = _rgb()
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    return [
        ("L", rgb.convert("L"), "PNG"),
        ("LA", rgb.convert("LA"), "PNG"),
        ("P", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        ("I;16", grey16, "PNG"),
        ("RGB", rgb, "PNG"),
        ("RGBA", rgb.convert("RGBA"), "PNG"),
        ("CMYK", rgb.convert("CMYK"), "JPEG"),
    ]


@pytest.mark.parametrize(("mode", "img", "fmt"), _modes(), ids=[m[0] for m in _modes()])
def test_every_mode_round_trips_through_a_three_channel_model(rgb_server, mode, img, fmt):
    """A grey PNG served by an RGB model came back as RGB: each mode must come back as
    itself, at its size, whichever kind of model purifies it."""
    content_type = {"PNG": "image/png", "JPEG": "image/jpeg"}[fmt]
    response = post_image(rgb_server.url, encode_image(img, fmt), content_type)
    assert response.status_code == 200, response.text
    assert response.headers["x-purifier-model"] == "photo-guided"
    out = decode_response(response)
    expected = {"I;16": ("I;16", "I")}.get(mode, (mode,))
    assert out.mode in expected and out.size == img.size
