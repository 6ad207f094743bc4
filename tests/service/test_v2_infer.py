"""The Open Inference Protocol infer route, JSON and binary, agrees with /purify."""

import base64
import json
import struct

import httpx
import numpy as np
import pytest

from tests.service.conftest import decode_response, encode_image, fmnist_images
from tests.service.test_errors import assert_error
from tests.service.test_purify import post_image

MODEL = "fmnist-nrp"


def infer_json(url: str, payload: dict) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{MODEL}/infer", json=payload, timeout=60)


def fp32_input(x: np.ndarray) -> dict:
    """The JSON input tensor `image` of an FP32 NCHW batch."""
    return {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}


def infer_binary(url: str, header: dict, data: bytes) -> httpx.Response:
    head = json.dumps(header).encode()
    return httpx.post(
        f"{url}/v2/models/{MODEL}/infer",
        content=head + data,
        timeout=60,
        headers={
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        },
    )


def split_binary(response: httpx.Response) -> tuple[dict, bytes]:
    n = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:n]), response.content[n:]


@pytest.fixture(scope="module")
def images() -> list:
    return fmnist_images(3)


@pytest.fixture(scope="module")
def via_purify(server, images) -> np.ndarray:
    """What /purify returns for the same images, uint8 (N, 28, 28)."""
    return np.stack(
        [
            np.asarray(decode_response(post_image(server.url, encode_image(img, "PNG"))))
            for img in images
        ]
    )


def test_fp32_nchw_json_agrees_with_purify(server, images, via_purify):
    x = np.stack([np.asarray(img, np.float32) / 255 for img in images])[:, None]
    response = infer_json(
        server.url,
        {"id": "r1", "inputs": [fp32_input(x)]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL and body["model_version"] == "1" and body["id"] == "r1"
    out = body["outputs"][0]
    assert (
        out["name"] == "purified" and out["datatype"] == "FP32" and out["shape"] == [3, 1, 28, 28]
    )
    y = np.asarray(out["data"], np.float32).reshape(3, 28, 28)
    assert np.abs(np.round(y * 255) - via_purify).max() <= 1


def test_fp32_binary_tensor_extension(server, images, via_purify):
    x = np.stack([np.asarray(img, np.float32) / 255 for img in images])[:, None]
    raw = x.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": list(x.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "purified", "parameters": {"binary_data": True}}],
    }
    response = infer_binary(server.url, header, raw)
    assert response.status_code == 200, response.text
    head, data = split_binary(response)
    assert head["outputs"][0]["parameters"]["binary_data_size"] == len(data) == len(raw)
    y = np.frombuffer(data, "<f4").reshape(3, 28, 28)
    assert np.abs(np.round(y * 255) - via_purify).max() <= 1


def test_uint8_nhwc(server, images, via_purify):
    x = np.stack([np.asarray(img) for img in images])[..., None]  # N, H, W, 1
    response = infer_json(
        server.url,
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["datatype"] == "UINT8" and out["shape"] == [3, 28, 28, 1]
    y = np.asarray(out["data"], np.int16).reshape(3, 28, 28)
    assert np.abs(y - via_purify).max() <= 1


def test_bytes_encoded_images_binary_and_json(server, images, via_purify):
    blobs = [encode_image(img, "PNG") for img in images]
    raw = b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head, data = split_binary(infer_binary(server.url, header, raw))
    assert head["outputs"][0]["datatype"] == "BYTES"
    outs, offset = [], 0
    while offset < len(data):
        (n,) = struct.unpack_from("<I", data, offset)
        outs.append(data[offset + 4 : offset + 4 + n])
        offset += 4 + n
    import io

    from PIL import Image

    got = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in outs])
    assert np.array_equal(got, via_purify)

    response = infer_json(
        server.url,
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(blobs[0]).decode()],
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    png = base64.b64decode(response.json()["outputs"][0]["data"][0])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), via_purify[0])


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"inputs": []}, "exactly one input"),
        (
            {"inputs": [{"name": "image", "datatype": "INT64", "shape": [1], "data": [1]}]},
            "datatype",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [0.5]}
                ]
            },
            "fill shape",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "datatype": "FP32", "shape": [1, 2, 2, 2], "data": [0.5] * 8}
                ]
            },
            "channels",
        ),
        (
            {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]},
            "base64",
        ),
    ],
)
def test_malformed_infer_requests_are_400(server, payload, fragment):
    response = infer_json(server.url, payload)
    assert_error(response, 400, "bad_request")
    assert fragment in response.json()["error"]


def test_bad_binary_header_length_is_400(server):
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        content=b"{}",
        headers={"Inference-Header-Content-Length": "999"},
    )
    assert_error(response, 400, "bad_request")


def test_infer_on_unknown_model_is_404(server):
    response = httpx.post(f"{server.url}/v2/models/nope/infer", json={"inputs": []})
    assert_error(response, 404, "unknown_model")
