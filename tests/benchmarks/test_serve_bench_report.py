"""The benchmark's bookkeeping (no timing here: timings live in benchmarks/results)."""

import argparse

import onnxruntime as ort
import pytest

from benchmarks.serve_bench import GPU_SYSTEMS, ONNX, markdown, server_command, summarise
from benchmarks.servers.sessions import open_session


def test_summarise_percentiles_and_throughput():
    row = summarise([i / 1000 for i in range(1, 101)], errors=2, elapsed=2.0, images=100)
    assert row["throughput"] == 50.0 and row["requests"] == 100 and row["errors"] == 2
    assert row["p50_ms"] == 51.0 and row["p99_ms"] == 100.0 and row["p95_ms"] == 96.0


def test_markdown_reports_the_target_ratios():
    text = report(28, {"in_process": 200.0, "purifier": 180.0, "litserve": 120.0}, p99=25.0)
    assert "purifier / ceiling = 0.90" in text and "purifier / litserve = 1.50" in text
    assert "purifier p99 / p50 = 2.50" in text


def test_the_gpu_run_measures_every_purifier_variant_on_cuda_or_not_at_all():
    layout = argparse.Namespace(instances=1, threads=2, max_batch=16, delay_ms=4.0, device="gpu")
    envs = {s: server_command(s, 1, layout)[1] for s in GPU_SYSTEMS if s.startswith("purifier")}
    assert set(envs) == {"purifier", "purifier_fp16", "purifier_io_binding"}
    for env in envs.values():
        assert env["PURIFIER_PROVIDERS"] == '["cuda"]' and env["PURIFIER_REQUIRE_GPU"] == "true"
    assert envs["purifier_fp16"]["PURIFIER_PRECISION"] == "fp16"
    assert envs["purifier_io_binding"]["PURIFIER_IO_BINDING"] == "true"
    for peer in ("naive_fastapi", "litserve"):
        assert server_command(peer, 1, layout)[0][-1] == "gpu"
    # Here, without onnxruntime-gpu, asking for the GPU fails instead of timing the CPU.
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            open_session(str(ONNX), 1, "gpu")


def test_markdown_reports_ratios_for_each_purifier_variant():
    text = report(224, {"in_process": 100.0, "purifier": 90.0, "purifier_fp16": 150.0}, p99=20.0)
    assert "purifier / ceiling = 0.90" in text and "purifier_fp16 / ceiling = 1.50" in text


def report(size: int, throughputs: dict[str, float], p99: float) -> str:
    """The markdown for one run per system at concurrency 32, p50 10 ms."""
    runs = [
        {
            "system": system,
            "size": size,
            "concurrency": 32,
            "throughput": throughput,
            "p50_ms": 10.0,
            "p95_ms": 20.0,
            "p99_ms": p99,
            "errors": 0,
        }
        for system, throughput in throughputs.items()
    ]
    return markdown(
        {
            "command": "x",
            "device": "cpu",
            "model": "m",
            "max_batch_size": 16,
            "max_queue_delay_ms": 4.0,
            "runs": runs,
        }
    )


def test_sizes_are_squares_or_width_x_height():
    from benchmarks.sizes import dims, label, pixels

    assert dims("224") == (224, 224) and dims(28) == (28, 28) and dims("640x480") == (640, 480)
    assert label("224") == "224x224" and pixels("640x480") == 307200


def test_the_contenders_answer_a_photo_as_purifier_does():
    """Same format back (a JPEG as a JPEG, at Purifier's default quality), RGB planes."""
    import io

    from PIL import Image

    from benchmarks.serve_bench import test_image
    from benchmarks.servers.codec import JPEG_QUALITY, decode, encode
    from service.config import Settings

    assert Settings().jpeg_quality == JPEG_QUALITY
    planes, fmt = decode(test_image("64x48", channels=3), 3)
    assert planes.shape == (3, 48, 64) and planes.dtype.name == "float32" and fmt == "JPEG"
    back = Image.open(io.BytesIO(encode(planes, fmt)))
    assert (back.format, back.mode, back.size) == ("JPEG", "RGB", (64, 48))
    grey, fmt = decode(test_image(28), 1)
    assert grey.shape == (1, 28, 28) and fmt == "PNG"
