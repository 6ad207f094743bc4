"""The onnxruntime sessions of one model: providers from settings, thread settings,
model instances, warm-up.

The provider actually used (`session.get_providers()`) is what we report: onnxruntime
silently falls back to CPU when CUDA cannot load, so `require_gpu` turns that into an error.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from purifier.contract import INPUT_NAME, NOISE_CARD_FIELD, NOISE_INPUT_NAME, OUTPUT_NAME
from service.config import Settings
from service.registry import ModelEntry, ModelLoadError

log = logging.getLogger("purifier.engine")

_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class GPURequiredError(RuntimeError):
    """A GPU was required but onnxruntime runs the model on the CPU."""


def model_file(
    entry: ModelEntry, precision: str, on_gpu: bool, cpu_graph: bool = False
) -> tuple[Path, str]:
    """(file, "fp32" | "fp16" | "int8"): the half-precision or quantised model where asked
    for; the half-precision one under "auto" on a GPU. Float32 on a CPU is model.onnx, or
    with `cpu_graph` the card's CPU-optimised graph (model.cpu.onnx) where this
    onnxruntime version wrote it: the fusions a session makes, done once at export (on
    this project's models no faster: benchmarks/results/model_latency.md)."""
    if precision in ("fp16", "int8"):
        path = entry.fp16_path if precision == "fp16" else entry.int8_path
        if path is None:
            raise ModelLoadError(
                f"model {entry.name}: PURIFIER_PRECISION={precision} but its card lists no "
                f"model.{precision}.onnx (purifier export writes one)"
            )
        return path, precision
    if precision == "auto" and on_gpu and entry.fp16_path is not None:
        return entry.fp16_path, "fp16"
    if cpu_graph and not on_gpu and entry.cpu_graph_path is not None:
        written_by = entry.card["cpu_graph"].get("onnxruntime")
        if written_by == ort.__version__:
            return entry.cpu_graph_path, "fp32"
        log.warning(
            "model %s: %s was optimised by onnxruntime %s, this is %s: serving model.onnx",
            entry.name,
            entry.cpu_graph_path.name,
            written_by,
            ort.__version__,
        )
    return entry.onnx_path, "fp32"


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


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which container CPU sets narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cores_per_instance(instances: int) -> int:
    """The usable cores shared out among `instances` sessions: two sessions that each
    start a thread per core would fight over every core."""
    return max(1, usable_cores() // instances)


def threads_per_instance(settings: Settings) -> int:
    """intra_op_threads, or the cores shared out among the instances."""
    return settings.intra_op_threads or cores_per_instance(settings.instances)


class Engine:
    """`settings.instances` sessions of one model. `run` may be called from that many
    threads at once; each call takes a free session. Separate sessions, as Triton's
    onnxruntime backend makes per instance: concurrent runs share no intra-op thread
    pool (and on a GPU, no CUDA stream)."""

    def __init__(self, entry: ModelEntry, settings: Settings) -> None:
        self.entry = entry
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads_per_instance(settings)
        options.inter_op_num_threads = settings.inter_op_threads
        options.enable_cpu_mem_arena = settings.cpu_mem_arena
        spin = "1" if settings.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = provider_list(settings)
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        path, self.precision = model_file(
            entry, settings.precision, first in GPU_PROVIDERS, settings.cpu_graph
        )
        # One session first: the provider it actually got decides the file for the rest.
        first_session = self._open(path, options, providers, 1)[0]
        self.provider = first_session.get_providers()[0]
        if self.precision == "fp16" and settings.precision == "auto" and not self.on_gpu:
            # CUDA was installed but could not start: the CPU runs float32 faster.
            path, self.precision = model_file(entry, "fp32", False, settings.cpu_graph)
            first_session = self._open(path, options, providers, 1)[0]
        rest = self._open(path, options, providers, settings.instances - 1)
        self.path = path  # the file served (the suspicion thresholds are per file)
        self.sessions = [first_session, *rest]
        self._free: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in self.sessions:
            self._free.put(session)
        self.io_binding = settings.io_binding
        self._device = "cuda" if self.on_gpu else "cpu"
        names = [i.name for i in first_session.get_inputs()]
        self.stochastic = NOISE_INPUT_NAME in names
        if self.stochastic != (NOISE_CARD_FIELD in entry.card):
            raise ModelLoadError(
                f"model {entry.name}: the graph's inputs {names} and the card's "
                f"`{NOISE_CARD_FIELD}` field disagree on whether it is stochastic"
            )
        log.info(
            "model %s v%s runs on %s: %s (%s), %d instance(s) x %d thread(s)%s",
            entry.name,
            entry.version,
            self.provider,
            path.name,
            self.precision,
            len(self.sessions),
            options.intra_op_num_threads,
            ", IO binding" if self.io_binding else "",
        )
        if settings.require_gpu and not self.on_gpu:
            raise GPURequiredError(
                f"model {entry.name}: a GPU is required (PURIFIER_REQUIRE_GPU) but onnxruntime "
                f"uses {self.sessions[0].get_providers()}; install onnxruntime-gpu and check CUDA"
            )

    @staticmethod
    def _open(
        path: Path, options: ort.SessionOptions, providers: list, count: int
    ) -> list[ort.InferenceSession]:
        return [
            ort.InferenceSession(str(path), sess_options=options, providers=providers)
            for _ in range(count)
        ]

    @property
    def on_gpu(self) -> bool:
        return self.provider in GPU_PROVIDERS

    @property
    def channels(self) -> int:
        return self.entry.channels

    @property
    def input_channels(self) -> int:
        """Channels of one batched item: the image's, and for a stochastic model its
        noise field's after them (tiles of both are cut and batched together)."""
        return 2 * self.channels if self.stochastic else self.channels

    def feed(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The session's inputs for a batch of items of `input_channels` channels."""
        if not self.stochastic:
            return {INPUT_NAME: batch}
        c = self.channels
        return {
            INPUT_NAME: np.ascontiguousarray(batch[:, :c]),
            NOISE_INPUT_NAME: np.ascontiguousarray(batch[:, c:]),
        }

    @property
    def instances(self) -> int:
        return len(self.sessions)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """batch: float32 NCHW in [0, 1] (a stochastic model's noise in the channels after
        the image's) -> purified, the image's shape. Releases the GIL.
        Blocks while every instance is busy (the batcher never runs more batches at once
        than there are instances)."""
        session = self._free.get()
        try:
            inputs = self.feed(batch)
            if not self.io_binding:
                return session.run([OUTPUT_NAME], inputs)[0]
            binding = session.io_binding()
            for name, array in inputs.items():
                binding.bind_cpu_input(name, array)
            binding.bind_output(OUTPUT_NAME, self._device)
            session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        finally:
            self._free.put(session)

    def time_run(self, shape: tuple[int, int, int, int]) -> float:
        """Seconds one run of a batch of this shape takes on the first instance."""
        batch = np.zeros(shape, dtype=np.float32)
        start = time.perf_counter()
        self.sessions[0].run([OUTPUT_NAME], self.feed(batch))
        return time.perf_counter() - start

    def warm_up(self, shapes: list[tuple[int, int, int, int]]) -> float:
        """Every shape through every instance (each session tunes its own kernels)."""
        start = time.perf_counter()
        for session in self.sessions:
            for shape in shapes:
                session.run([OUTPUT_NAME], self.feed(np.zeros(shape, dtype=np.float32)))
        return time.perf_counter() - start
