"""Proxy mode's request rewriting (service.v2_forward): which inputs are images, and that
replacing them leaves every other byte of the request as it came."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from service.errors import ServiceError
from service.v2_forward import image_inputs, parse_forward, with_parameters
from service.v2_protocol import HEADER, join_bytes


def png(color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, "PNG")
    return buffer.getvalue()


def binary_request(inputs: list[tuple[dict, bytes]], **extra) -> tuple[bytes, str]:
    specs = []
    for spec, raw in inputs:
        specs.append(
            {**spec, "parameters": {**spec.get("parameters", {}), "binary_data_size": len(raw)}}
        )
    header = json.dumps({"inputs": specs, **extra}).encode()
    return header + b"".join(raw for _, raw in inputs), str(len(header))


def test_every_image_form_is_found_and_other_inputs_are_not():
    rng = np.random.default_rng(0)
    fp32 = rng.random((1, 3, 4, 5), dtype=np.float32)
    normalised = fp32 * 4 - 2  # mean/std-normalised input: not an image in [0, 1]
    uint8 = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 3, 4, 5], "data": fp32.ravel().tolist()},
            {
                "name": "b",
                "datatype": "FP32",
                "shape": [1, 3, 4, 5],
                "data": normalised.ravel().tolist(),
            },
            {
                "name": "c",
                "datatype": "UINT8",
                "shape": [2, 4, 5, 3],
                "data": uint8.ravel().tolist(),
            },
            {
                "name": "d",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(png()).decode()],
            },
            {"name": "e", "datatype": "BYTES", "shape": [1], "data": ["a text prompt"]},
            {"name": "f", "datatype": "INT64", "shape": [1], "data": [5]},
            {"name": "g", "datatype": "UINT8", "shape": [1, 4, 5, 7], "data": [0] * 140},
        ]
    }
    request = parse_forward(json.dumps(header).encode(), None)
    assert [t.name for t in image_inputs(request, None)] == ["a", "c", "d"]
    assert [t.name for t in image_inputs(request, ["c"])] == ["c"]
    for refused in (["b"], ["e"], ["missing"]):
        with pytest.raises(ServiceError) as err:
            image_inputs(request, refused)
        assert err.value.status == 400 and refused[0] in err.value.message


def test_replacing_a_binary_image_keeps_the_other_inputs_bytes_and_the_parameters():
    image = np.full((1, 4, 5, 3), 7, np.uint8)
    other = np.arange(6, dtype=np.int64).tobytes()
    blobs = join_bytes([png(), png((1, 2, 3))])
    body, length = binary_request(
        [
            ({"name": "tokens", "datatype": "INT64", "shape": [6]}, other),
            ({"name": "image", "datatype": "UINT8", "shape": [1, 4, 5, 3]}, image.tobytes()),
            ({"name": "photos", "datatype": "BYTES", "shape": [2]}, blobs),
        ],
        id="r1",
        parameters={"binary_data_output": True, "custom": "kept"},
        outputs=[{"name": "logits", "parameters": {"binary_data": True}}],
    )
    request = parse_forward(body, length)
    chosen = image_inputs(request, None)
    assert [t.name for t in chosen] == ["image", "photos"]
    chosen[0].replace(np.full((1, 4, 5, 3), 9, np.uint8))
    chosen[1].replace([b"\x89PNG\r\n\x1a\nshort"])
    sent, headers = request.encode()
    header_length = int(headers[HEADER])
    head = json.loads(sent[:header_length])
    assert head["id"] == "r1" and head["parameters"] == {
        "binary_data_output": True,
        "custom": "kept",
    }
    assert head["outputs"] == [{"name": "logits", "parameters": {"binary_data": True}}]
    sizes = [i["parameters"]["binary_data_size"] for i in head["inputs"]]
    assert sizes == [len(other), 60, 4 + 13]
    rest = sent[header_length:]
    assert rest[: len(other)] == other  # untouched, byte for byte
    assert rest[len(other) : len(other) + 60] == bytes([9]) * 60
    assert rest[len(other) + 60 :] == join_bytes([b"\x89PNG\r\n\x1a\nshort"])


def test_a_json_request_stays_json_and_its_images_are_replaced_in_place():
    header = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [0.0, 0.25, 0.5, 1.0]},
            {"name": "k", "datatype": "INT32", "shape": [1], "data": [3]},
        ]
    }
    request = parse_forward(json.dumps(header).encode(), None)
    (image,) = image_inputs(request, None)
    np.testing.assert_array_equal(image.array(), np.array([[[[0, 0.25], [0.5, 1]]]], np.float32))
    image.replace(np.full((1, 1, 2, 2), 0.5, np.float32))
    sent, headers = request.encode()
    assert HEADER not in headers and headers["content-type"] == "application/json"
    body = json.loads(sent)
    assert body["inputs"][0]["data"] == [0.5] * 4
    assert body["inputs"][1] == {"name": "k", "datatype": "INT32", "shape": [1], "data": [3]}


def test_figures_join_the_answer_parameters_and_binary_outputs_stay_as_they_were():
    outputs = np.arange(4, dtype=np.float32).tobytes()
    head = json.dumps(
        {
            "model_name": "m",
            "parameters": {"theirs": 1},
            "outputs": [
                {
                    "name": "o",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
            ],
        }
    ).encode()
    body, headers = with_parameters(head + outputs, str(len(head)), {"purifier_model": "p"})
    split = int(headers[HEADER])
    assert json.loads(body[:split])["parameters"] == {"theirs": 1, "purifier_model": "p"}
    assert body[split:] == outputs
    plain, headers = with_parameters(b'{"outputs": []}', None, {"purifier_ms": "1.00"})
    assert json.loads(plain) == {"outputs": [], "parameters": {"purifier_ms": "1.00"}}
    assert HEADER not in headers


def test_requests_that_cannot_be_forwarded_faithfully_are_refused():
    for body, length in [
        (b"not json", None),
        (b'{"inputs": [1]}', None),
        (b'{"inputs": [{"name": "a"}, {"name": "a"}]}', None),
        (b'{"inputs": []}', "99"),
    ]:
        with pytest.raises(ServiceError) as err:
            parse_forward(body, length)
        assert err.value.status == 400
