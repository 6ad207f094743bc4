"""Rewriting an Open Inference Protocol request on its way to another server (proxy mode,
issue 39): find its image inputs, replace their tensors with purified ones, and leave
every other byte of the request as it came - other inputs, `parameters`, `outputs`,
`id`, JSON or binary tensor extension. And the answer on its way back: the upstream's
body unchanged but for Purifier's figures added to its `parameters`.

Image inputs are the ones the operator names (PURIFIER_UPSTREAM_IMAGE_INPUTS), else every
input of an image's form: UINT8 NHWC with 1 or 3 channels; FP32 NCHW with 1 or 3
channels, every value in [0, 1] (a model that takes mean/std-normalised input is not
sent images, and is left alone); BYTES whose every element is an encoded image.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.v2_protocol import (
    HEADER,
    binary_parts,
    join_bytes,
    json_bytes,
    numeric,
    split_bytes,
    split_request,
)

# The first bytes of the formats the service decodes (service.imaging).
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00")
IMAGE_KINDS = ("FP32", "UINT8", "BYTES")


def _bad(message: str) -> ServiceError:
    return ServiceError(400, "bad_request", message)


@dataclass
class Tensor:
    """One input as sent: its JSON object (name, shape, datatype, parameters, data) and,
    with the binary extension, its bytes. Its contents are parsed once (finding the image
    inputs reads them, and purifying them reads them again)."""

    spec: dict[str, Any]
    raw: bytes | None
    _parsed: np.ndarray | list[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.spec.get("name"))

    @property
    def datatype(self) -> str:
        return str(self.spec.get("datatype"))

    @property
    def shape(self) -> list[int]:
        shape = self.spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _bad(f"input {self.name!r}: shape {shape!r} is not a list of integers")
        return shape

    def array(self) -> np.ndarray:
        """A numeric tensor (FP32 or UINT8) as numpy."""
        if self._parsed is None:
            if self.raw is None and "data" not in self.spec:
                raise _bad(f"input {self.name!r} has neither 'data' nor binary_data_size")
            self._parsed = numeric(self.datatype, self.shape, self.raw, self.spec.get("data"))
        return self._parsed  # type: ignore[return-value]

    def blobs(self) -> list[bytes]:
        """A BYTES tensor's elements (length-prefixed in binary, base64 strings in JSON)."""
        if self._parsed is None:
            raw, data = self.raw, self.spec.get("data")
            self._parsed = split_bytes(raw) if raw is not None else json_bytes(data)
        return self._parsed  # type: ignore[return-value]

    def replace(self, payload: np.ndarray | list[bytes]) -> None:
        """Put new contents in, in the form the input came in (binary stays binary)."""
        self._parsed = payload
        if self.raw is not None:
            if isinstance(payload, list):
                self.raw = join_bytes(payload)
            else:
                self.raw = payload.astype(payload.dtype.newbyteorder("<")).tobytes()
            self.spec["parameters"] = {**self.spec["parameters"], "binary_data_size": len(self.raw)}
        elif isinstance(payload, list):
            self.spec["data"] = [base64.b64encode(b).decode("ascii") for b in payload]
        else:
            self.spec["data"] = payload.reshape(-1).tolist()


@dataclass
class ForwardRequest:
    header: dict[str, Any]
    inputs: list[Tensor]

    def encode(self) -> tuple[bytes, dict[str, str]]:
        """(body, headers) to send: the binary extension when the request used it."""
        header_bytes = json.dumps(self.header).encode()
        raws = [t.raw for t in self.inputs if t.raw is not None]
        if not raws:
            return header_bytes, {"content-type": "application/json"}
        return header_bytes + b"".join(raws), {
            HEADER: str(len(header_bytes)),
            "content-type": "application/octet-stream",
        }


def parse_forward(body: bytes, header_length: str | None) -> ForwardRequest:
    """Any well-formed inference request (the upstream judges its inputs); refused here
    only what could not be forwarded faithfully."""
    header, binary = split_request(body, header_length)
    if not all(isinstance(i, dict) for i in header["inputs"]):
        raise _bad("each of 'inputs' must be a JSON object")
    names = [str(i.get("name")) for i in header["inputs"]]
    if len(set(names)) != len(names):
        raise _bad(f"input names repeat: {names}")
    raws = binary_parts(header["inputs"], binary)
    return ForwardRequest(
        header, [Tensor(i, raws.get(str(i.get("name")))) for i in header["inputs"]]
    )


def is_image(tensor: Tensor) -> bool:
    """Whether an input has an image's form (module docstring)."""
    kind, shape = tensor.datatype, tensor.spec.get("shape")
    if kind == "BYTES":
        try:  # text (not base64) in a JSON BYTES input is simply not an image
            blobs = tensor.blobs() if (tensor.raw is not None or "data" in tensor.spec) else []
        except ServiceError:
            return False
        return bool(blobs) and all(b.startswith(IMAGE_MAGIC) or _is_webp(b) for b in blobs)
    if not isinstance(shape, list) or len(shape) != 4:
        return False
    if kind == "UINT8":
        return shape[3] in (1, 3)
    if kind == "FP32" and shape[1] in (1, 3):
        array = tensor.array()
        return array.size > 0 and float(array.min()) >= 0.0 and float(array.max()) <= 1.0
    return False


def _is_webp(blob: bytes) -> bool:
    return blob[:4] == b"RIFF" and blob[8:12] == b"WEBP"


def image_inputs(request: ForwardRequest, named: list[str] | None) -> list[Tensor]:
    """The inputs to purify: those `named` (each must be there and be an image in one of
    the three forms), else every input of an image's form."""
    if named is None:
        return [t for t in request.inputs if t.datatype in IMAGE_KINDS and is_image(t)]
    by_name = {t.name: t for t in request.inputs}
    chosen = []
    for name in named:
        if name not in by_name:
            raise _bad(f"input {name!r} (PURIFIER_UPSTREAM_IMAGE_INPUTS) is not in the request")
        tensor = by_name[name]
        if tensor.datatype not in IMAGE_KINDS or not is_image(tensor):
            raise _bad(
                f"input {name!r} is not an image: send UINT8 NHWC, FP32 NCHW in [0, 1] "
                "(1 or 3 channels) or BYTES of encoded images"
            )
        chosen.append(tensor)
    return chosen


def with_parameters(
    body: bytes, header_length: str | None, parameters: dict[str, str]
) -> tuple[bytes, dict[str, str]]:
    """An upstream's inference answer with `parameters` added to its response-level
    parameters; its outputs (JSON or binary) untouched. (body, headers to set)."""
    split = int(header_length) if header_length and header_length.isdigit() else len(body)
    head = json.loads(body[:split])
    head["parameters"] = {**(head.get("parameters") or {}), **parameters}
    header_bytes = json.dumps(head).encode()
    if header_length is None:
        return header_bytes, {"content-type": "application/json"}
    return header_bytes + body[split:], {
        HEADER: str(len(header_bytes)),
        "content-type": "application/octet-stream",
    }
