"""One onnxruntime session per model: providers from settings, thread settings, warm-up.

The provider actually used (`session.get_providers()`) is what we report: onnxruntime
silently falls back to CPU when CUDA cannot load, so `require_gpu` turns that into an error.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnxruntime as ort

from service.config import Settings
from service.registry import ModelEntry

log = logging.getLogger("purifier.engine")

_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class GPURequiredError(RuntimeError):
    """A GPU was required but onnxruntime runs the model on the CPU."""


def provider_list(settings: Settings) -> list[str | tuple[str, dict]]:
    available = set(ort.get_available_providers())
    chosen: list[str | tuple[str, dict]] = []
    for short in settings.providers:
        name = _PROVIDER_NAMES[short]
        if name not in available:
            continue
        if short == "cuda":
            options: dict[str, str] = {
                "arena_extend_strategy": "kSameAsRequested",
                "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
            }
            if settings.gpu_mem_limit_mb:
                options["gpu_mem_limit"] = str(settings.gpu_mem_limit_mb * 1024 * 1024)
            chosen.append((name, options))
        else:
            chosen.append(name)
    if not chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class Engine:
    def __init__(self, entry: ModelEntry, settings: Settings) -> None:
        self.entry = entry
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        spin = "1" if settings.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(entry.onnx_path), sess_options=options, providers=provider_list(settings)
        )
        self.provider = self.session.get_providers()[0]
        log.info("model %s v%s runs on %s", entry.name, entry.version, self.provider)
        if settings.require_gpu and self.provider not in (
            "CUDAExecutionProvider",
            "TensorrtExecutionProvider",
        ):
            raise GPURequiredError(
                f"model {entry.name}: a GPU is required (PURIFIER_REQUIRE_GPU) but onnxruntime "
                f"uses {self.session.get_providers()}; install onnxruntime-gpu and check CUDA"
            )

    @property
    def channels(self) -> int:
        return self.entry.channels

    def run(self, batch: np.ndarray) -> np.ndarray:
        """batch: float32 NCHW in [0, 1] -> purified, same shape. Releases the GIL."""
        return self.session.run(["purified"], {"image": batch})[0]

    def warm_up(self, shapes: list[tuple[int, int, int, int]]) -> float:
        start = time.perf_counter()
        for shape in shapes:
            self.run(np.zeros(shape, dtype=np.float32))
        return time.perf_counter() - start
