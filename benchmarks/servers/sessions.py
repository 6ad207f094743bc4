"""One onnxruntime session of the benchmark model on the CPU or the GPU, shared by the
ceiling and the peer servers so that every system runs the model the same way."""

from __future__ import annotations

import onnxruntime as ort

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def open_session(onnx_path: str, threads: int, device: str = "cpu") -> ort.InferenceSession:
    """Fails (instead of quietly measuring the CPU) when the GPU was asked for and
    onnxruntime cannot run CUDA: onnxruntime falls back to the CPU without a word."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx_path, options, providers=PROVIDERS[device])
    if device == "gpu" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(
            f"the GPU was asked for but onnxruntime runs {session.get_providers()} "
            "(onnxruntime-gpu and CUDA are needed)"
        )
    return session
