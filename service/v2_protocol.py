"""The Open Inference Protocol (KServe v2) request/response bodies, JSON and with the
binary tensor extension (`Inference-Header-Content-Length`), as Triton clients send them.

Input `image` is one of: FP32 NCHW in [0, 1]; UINT8 NHWC in [0, 255]; BYTES, one encoded
image per element (length-prefixed in binary, base64 strings in JSON). The output
`purified` has the input's datatype and layout. A stochastic model's `noise` (FP32 NCHW,
the image's shape, beside an FP32 image) is parsed here; the route decides whether the
operator allows callers to send it. With the binary extension, the inputs' bytes follow
the header in the inputs' order.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from purifier.contract import INPUT_NAME, NOISE_INPUT_NAME, OUTPUT_NAME
from service.errors import ServiceError

HEADER = "inference-header-content-length"
_NUMPY = {"FP32": np.float32, "UINT8": np.uint8}


@dataclass
class InferInput:
    datatype: str  # FP32 | UINT8 | BYTES
    shape: list[int]
    array: np.ndarray | None  # numeric tensors
    blobs: list[bytes] | None  # BYTES: encoded images
    binary_output: bool
    request_id: str | None
    noise: np.ndarray | None = None  # the caller's `noise` input, FP32 NCHW


def _bad(message: str) -> ServiceError:
    return ServiceError(400, "bad_request", message)


def split_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """(JSON header, the bytes after it) of an inference request, JSON or binary."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(f"{HEADER} {header_length!r} does not fit a body of {len(body)} bytes")
        split = int(header_length)
        header_bytes, binary = body[:split], body[split:]
    else:
        header_bytes, binary = body, b""
    try:
        header = json.loads(header_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _bad(f"inference header is not JSON: {err}") from err
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise _bad("inference request needs an 'inputs' list")
    return header, binary


def parse_request(body: bytes, header_length: str | None) -> InferInput:
    header, binary = split_request(body, header_length)
    if "seed" in (header.get("parameters") or {}):
        raise ServiceError(
            400,
            "seed_refused",
            "parameters.seed: the noise of stochastic models is keyed by the service, never "
            "chosen by the caller",
        )
    named = {
        n: [i for i in header["inputs"] if isinstance(i, dict) and i.get("name") == n]
        for n in (INPUT_NAME, NOISE_INPUT_NAME)
    }
    if len(named[INPUT_NAME]) != 1:
        raise _bad("inference request needs exactly one input named 'image'")
    if len(named[NOISE_INPUT_NAME]) > 1:
        raise _bad("inference request has more than one input named 'noise'")
    raws = binary_parts(header["inputs"], binary)
    spec = named[INPUT_NAME][0]
    datatype, shape = spec.get("datatype"), spec.get("shape")
    if datatype not in ("FP32", "UINT8", "BYTES"):
        raise _bad(f"datatype {datatype!r}: send FP32 (NCHW), UINT8 (NHWC) or BYTES")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _bad(f"shape {shape!r} is not a list of non-negative integers")
    raw = raws.get(INPUT_NAME)
    if raw is None and "data" not in spec:
        raise _bad("input 'image' has neither 'data' nor binary_data_size")
    outputs = header.get("outputs") or []
    binary_output = bool((header.get("parameters") or {}).get("binary_data_output")) or any(
        (o.get("parameters") or {}).get("binary_data") for o in outputs if isinstance(o, dict)
    )
    request_id = header.get("id")
    if datatype == "BYTES":
        blobs = split_bytes(raw) if raw is not None else json_bytes(spec["data"])
        if shape and int(np.prod(shape)) != len(blobs):
            raise _bad(f"shape {shape} does not match {len(blobs)} BYTES elements")
        return InferInput(datatype, shape, None, blobs, binary_output, request_id)
    array = numeric(datatype, shape, raw, spec.get("data"))
    noise = _noise(named[NOISE_INPUT_NAME], raws.get(NOISE_INPUT_NAME), datatype, shape)
    return InferInput(datatype, shape, array, None, binary_output, request_id, noise)


def binary_parts(inputs: list[Any], binary: bytes) -> dict[str, bytes]:
    """Each input's bytes after the header (binary extension): in the inputs' order, by
    their `binary_data_size`; the sizes must add up to what follows the header."""
    parts: dict[str, bytes] = {}
    offset = 0
    for spec in inputs:
        if not isinstance(spec, dict):
            continue
        params = spec.get("parameters") or {}
        if "binary_data_size" not in params:
            continue
        size = params["binary_data_size"]
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise _bad(f"binary_data_size {size!r} of input {spec.get('name')!r} does not fit")
        parts[str(spec.get("name"))] = binary[offset : offset + size]
        offset += size
    if parts and offset != len(binary):
        raise _bad(f"binary_data_size adds up to {offset}, not the {len(binary)} bytes sent")
    return parts


def _noise(
    specs: list[dict[str, Any]], raw: bytes | None, datatype: str, shape: list[int]
) -> np.ndarray | None:
    """The caller's `noise` input, if any: FP32 NCHW of the FP32 image's shape."""
    if not specs:
        return None
    spec = specs[0]
    if datatype != "FP32" or spec.get("datatype") != "FP32" or spec.get("shape") != shape:
        raise _bad(f"input 'noise' must be FP32 of the FP32 image's shape {shape}")
    if raw is None and "data" not in spec:
        raise _bad("input 'noise' has neither 'data' nor binary_data_size")
    return numeric("FP32", shape, raw, spec.get("data"))


def numeric(datatype: str, shape: list[int], raw: bytes | None, data: Any) -> np.ndarray:
    if len(shape) != 4:
        raise _bad(f"{datatype} input must be 4-D ({'NCHW' if datatype == 'FP32' else 'NHWC'})")
    dtype = np.dtype(_NUMPY[datatype]).newbyteorder("<")
    count = int(np.prod(shape))
    try:
        if raw is not None:
            if len(raw) != count * dtype.itemsize:
                raise _bad(f"{len(raw)} bytes do not hold {shape} {datatype}")
            array = np.frombuffer(raw, dtype=dtype)
        else:
            array = np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError) as err:
        raise _bad(f"data does not hold {shape} {datatype}: {err}") from err
    if array.size != count:
        raise _bad(f"{array.size} values do not fill shape {shape}")
    array = array.reshape(shape).astype(_NUMPY[datatype])
    if datatype == "FP32" and not np.isfinite(array).all():
        raise _bad("FP32 input holds NaN or infinity")
    return array


def tensor_images(datatype: str, array: np.ndarray, max_pixels: int) -> np.ndarray:
    """A numeric image tensor as float32 NCHW in [0, 1] (FP32 NCHW, or UINT8 NHWC),
    checked: 1 or 3 channels, not empty, at most `max_pixels` per image (413)."""
    if datatype == "FP32":  # NCHW in [0, 1]
        images = np.clip(array, 0.0, 1.0)
    else:  # UINT8 NHWC
        images = array.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise _bad(f"images must have 1 or 3 channels, got {c}")
    if n == 0 or h == 0 or w == 0:
        raise _bad(f"empty tensor of shape {list(array.shape)}")
    if h * w > max_pixels:
        raise ServiceError(
            413, "too_many_pixels", f"{w}x{h} is over the limit of {max_pixels} pixels"
        )
    return images


def images_tensor(images: np.ndarray, datatype: str) -> np.ndarray:
    """float32 NCHW in [0, 1] back to the tensor's own datatype and layout."""
    if datatype == "FP32":
        return images.astype(np.float32)
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def split_bytes(raw: bytes) -> list[bytes]:
    """Triton's binary BYTES: each element is a 4-byte little-endian length, then bytes."""
    blobs, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _bad("truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _bad("BYTES element runs past the body")
        blobs.append(raw[offset : offset + length])
        offset += length
    return blobs


def json_bytes(data: Any) -> list[bytes]:
    flat = np.asarray(data, dtype=object).reshape(-1).tolist()
    try:
        return [base64.b64decode(item, validate=True) for item in flat]
    except (ValueError, TypeError) as err:
        raise _bad("JSON BYTES elements must be base64-encoded images") from err


def join_bytes(blobs: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in blobs)


def build_response(
    model: str,
    version: int,
    request_id: str | None,
    datatype: str,
    shape: list[int],
    array: np.ndarray | None,
    blobs: list[bytes] | None,
    binary: bool,
    parameters: dict[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of an inference response."""
    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": datatype, "shape": shape}
    if binary:
        payload = (
            join_bytes(blobs)
            if blobs is not None
            else array.astype(array.dtype.newbyteorder("<")).tobytes()
        )
        output["parameters"] = {"binary_data_size": len(payload)}
    else:
        payload = b""
        if blobs is not None:
            output["data"] = [base64.b64encode(b).decode("ascii") for b in blobs]
        else:
            output["data"] = array.reshape(-1).tolist()
    head: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": [output]}
    if request_id is not None:
        head["id"] = request_id
    if parameters:
        head["parameters"] = parameters
    header_bytes = json.dumps(head).encode()
    if binary:
        return header_bytes + payload, {
            HEADER: str(len(header_bytes)),
            "content-type": "application/octet-stream",
        }
    return header_bytes, {"content-type": "application/json"}
