"""Baseline (d): LitServe serving the same ONNX model with the same batch size and delay.
Requests: JSON {"image": base64 image file}; answers in the upload's format.

Run: python -m benchmarks.servers.litserve_server MODEL.onnx PORT THREADS MAX_BATCH DELAY_S \
        WORKERS [cpu|gpu]
(WORKERS inference processes, each with its own session of THREADS threads.)
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation
# object to decide how to parse the body.

import base64
import sys

import litserve as ls
import numpy as np
from fastapi import Request, Response

from benchmarks.servers.codec import decode, encode, input_channels, media_type
from benchmarks.servers.sessions import open_session

Planes = tuple[np.ndarray, str]  # (C, H, W) in [0, 1], and the format to answer in


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
        self.channels = input_channels(self.session)

    def decode_request(self, request: Request) -> Planes:
        # LitServe hands the parsed body to its inference process through a pickling
        # queue; uploaded files do not pickle, so images come as base64 in JSON.
        return decode(base64.b64decode(request["image"]), self.channels)

    def batch(self, inputs: list[Planes]) -> tuple[np.ndarray, list[str]]:
        return np.stack([x for x, _ in inputs]), [fmt for _, fmt in inputs]

    def predict(self, batch: tuple[np.ndarray, list[str]]) -> tuple[np.ndarray, list[str]]:
        x, formats = batch
        return self.session.run(["purified"], {"image": x})[0], formats

    def unbatch(self, output: tuple[np.ndarray, list[str]]) -> list[Planes]:
        return list(zip(output[0], output[1], strict=True))

    def encode_response(self, output: Planes) -> Response:
        planes, fmt = output
        return Response(encode(planes, fmt), media_type=media_type(fmt))


if __name__ == "__main__":
    onnx_file, port, n_threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batch, delay, workers = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    device = sys.argv[7] if len(sys.argv) > 7 else "cpu"
    api = PurifierAPI(onnx_file, n_threads, batch, delay, device)
    # accelerator "cpu" either way: LitServe's CUDA mode would pin torch devices; the
    # session above is what runs on the GPU.
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers, api_path="/purify")
    server.run(port=port, generate_client_file=False, log_level="warning")
