"""Baseline (d): LitServe serving the same ONNX model with the same batch size and delay.
Requests: JSON {"image": base64 PNG}.

Run: python -m benchmarks.servers.litserve_server MODEL.onnx PORT THREADS MAX_BATCH DELAY_S \
        WORKERS [cpu|gpu]
(WORKERS inference processes, each with its own session of THREADS threads.)
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation
# object to decide how to parse the body.

import base64
import io
import sys

import litserve as ls
import numpy as np
from fastapi import Request, Response
from PIL import Image

from benchmarks.servers.sessions import open_session


class PurifierAPI(ls.LitAPI):
    def __init__(
        self,
        onnx_path: str,
        threads: int,
        max_batch_size: int,
        batch_timeout: float,
        device: str = "cpu",
    ):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.onnx_path, self.threads, self.on = onnx_path, threads, device

    def setup(self, device: str) -> None:
        # onnxruntime picks the GPU itself; LitServe's `device` names its worker's slot.
        self.session = open_session(self.onnx_path, self.threads, self.on)

    def decode_request(self, request: Request) -> np.ndarray:
        # LitServe hands the parsed body to its inference process through a pickling
        # queue; uploaded files do not pickle, so images come as base64 in JSON.
        data = base64.b64decode(request["image"])
        img = Image.open(io.BytesIO(data)).convert("L")
        return np.asarray(img, np.float32)[None] / 255.0

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["purified"], {"image": x})[0]

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> Response:
        out = io.BytesIO()
        Image.fromarray(np.round(np.clip(output[0], 0, 1) * 255).astype(np.uint8)).save(out, "PNG")
        return Response(out.getvalue(), media_type="image/png")


if __name__ == "__main__":
    onnx_file, port, n_threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batch, delay, workers = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    device = sys.argv[7] if len(sys.argv) > 7 else "cpu"
    api = PurifierAPI(onnx_file, n_threads, batch, delay, device)
    # accelerator "cpu" either way: LitServe's CUDA mode would pin torch devices; the
    # session above is what runs on the GPU.
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers, api_path="/purify")
    server.run(port=port, generate_client_file=False, log_level="warning")
