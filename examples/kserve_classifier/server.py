"""A real model server upstream of Purifier's proxy mode: KServe's Python model server
(the `kserve` package from PyPI) serving an ONNX ImageNet classifier with onnxruntime.
The model is MobileNetV2 with the ImageNet weights the photo purifier was trained
against, exported by `python -m training.export.classifier DIR/model.onnx`.

    python examples/kserve_classifier/server.py --model_dir DIR --http_port 8081

Model `mobilenet_v2` (Open Inference Protocol, JSON and binary tensors):
- input `image`: FP32 NCHW in [0, 1], UINT8 NHWC, or BYTES of encoded images (PNG, JPEG,
  WebP: decoded to RGB) - each form Purifier purifies;
- input `temperature` (optional): FP32 [1], divides the logits before the softmax;
- outputs `probabilities` FP32 [N, 1000], `class` INT64 [N] (ImageNet index).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.errors import InvalidInput
from PIL import Image

MODEL_NAME = "mobilenet_v2"


class ImageNetClassifier(Model):
    def __init__(self, name: str, model_dir: Path, threads: int) -> None:
        super().__init__(name)
        self.model_dir, self.threads = model_dir, threads
        self.load()

    def load(self) -> bool:
        onnx_path = self.model_dir / "model.onnx"
        if not onnx_path.exists():
            raise FileNotFoundError(
                f"{onnx_path} is missing: python -m training.export.classifier {onnx_path}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(onnx_path), options, ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        return [
            {"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]},
            {"name": "temperature", "datatype": "FP32", "shape": [1]},
        ]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]},
            {"name": "class", "datatype": "INT64", "shape": [-1]},
        ]

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        inputs = {tensor.name: tensor for tensor in payload.inputs}
        if "image" not in inputs:
            raise InvalidInput("input 'image' is missing")
        images = as_images(inputs["image"])
        temperature = 1.0
        if "temperature" in inputs:
            temperature = float(inputs["temperature"].as_numpy().reshape(-1)[0])
            if not temperature > 0:
                raise InvalidInput(f"temperature must be positive, got {temperature}")
        logits = self.session.run(None, {self.input_name: images})[0]
        scaled = logits / temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        probabilities = np.exp(scaled)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        outputs = []
        for name, datatype, array in (
            ("probabilities", "FP32", probabilities.astype(np.float32)),
            ("class", "INT64", logits.argmax(axis=1).astype(np.int64)),
        ):
            output = InferOutput(name, list(array.shape), datatype)
            output.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            payload.id or uuid.uuid4().hex,  # KServe's JSON answer needs a string id
            self.name,
            outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def as_images(tensor: object) -> np.ndarray:
    """The `image` input as FP32 NCHW in [0, 1], from any of its three forms."""
    datatype = tensor.datatype  # type: ignore[attr-defined]
    if datatype == "BYTES":
        raw = tensor.as_numpy().reshape(-1)  # type: ignore[attr-defined]
        pixels = [
            np.asarray(Image.open(io.BytesIO(_as_bytes(b))).convert("RGB"), np.float32) / 255
            for b in raw
        ]
        if len({p.shape for p in pixels}) != 1:
            raise InvalidInput("BYTES images of one request must share a size")
        return np.stack(pixels).transpose(0, 3, 1, 2)
    array = tensor.as_numpy()  # type: ignore[attr-defined]
    if array.ndim != 4:
        raise InvalidInput(f"image must be 4-D, got shape {list(array.shape)}")
    if datatype == "UINT8":
        array = array.transpose(0, 3, 1, 2).astype(np.float32) / 255
    elif datatype != "FP32":
        raise InvalidInput(f"image datatype {datatype}: send FP32, UINT8 or BYTES")
    if array.shape[1] != 3:
        raise InvalidInput(f"image must have 3 channels, got {array.shape[1]}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _as_bytes(element: object) -> bytes:
    """A BYTES element: raw bytes (binary extension) or a base64 string (JSON)."""
    if isinstance(element, bytes):
        return element
    return base64.b64decode(str(element))


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument("--model_dir", type=Path, required=True)
    parser.set_defaults(model_name=MODEL_NAME)  # kserve's own --model_name
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args, _ = parser.parse_known_args()
    model = ImageNetClassifier(args.model_name, args.model_dir, args.threads)
    ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc
    ).start([model])


if __name__ == "__main__":
    main()
