"""Baseline (c): a naive FastAPI endpoint, one onnxruntime call per request, no batching.

Run: python -m benchmarks.servers.naive_server MODEL.onnx PORT THREADS [cpu|gpu]
"""

from __future__ import annotations

import sys
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, Response, UploadFile

from benchmarks.servers.codec import decode, encode, input_channels, media_type
from benchmarks.servers.sessions import open_session


def create_app(onnx_path: str, threads: int, device: str = "cpu") -> FastAPI:
    session = open_session(onnx_path, threads, device)
    channels = input_channels(session)
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/purify")
    def purify(image: Annotated[UploadFile, File()]) -> Response:  # sync: runs in the threadpool
        x, fmt = decode(image.file.read(), channels)
        y = session.run(["purified"], {"image": x[None]})[0][0]
        return Response(encode(y, fmt), media_type=media_type(fmt))

    return app


if __name__ == "__main__":
    onnx_file, port, n_threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    app = create_app(onnx_file, n_threads, device)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
