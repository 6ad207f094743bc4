"""The proxy's real upstream as a process: KServe's Python model server running
examples/kserve_classifier/server.py (MobileNetV2 on onnxruntime), for the proxy
benchmark and tests. Its ONNX file is exported from the project's MobileNetV2 weights on
first use (python -m training.export.classifier), never downloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.serve_bench import REPO, free_port, start

SERVER = REPO / "examples" / "kserve_classifier" / "server.py"
UPSTREAM_MODEL = "mobilenet_v2"


def upstream_model_dir(model_dir: Path) -> Path:
    """model_dir holding model.onnx, exported there if it is not yet."""
    if not (model_dir / "model.onnx").exists():
        from training.export.classifier import export_classifier

        export_classifier(model_dir / "model.onnx")
    return model_dir


def start_upstream(model_dir: Path, threads: int = 1) -> tuple[subprocess.Popen, str]:
    """The KServe classifier on a free loopback port (HTTP only), once its model is
    ready: (process, base URL)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        str(SERVER),
        f"--model_dir={upstream_model_dir(model_dir)}",
        f"--http_port={port}",
        "--enable_grpc=false",
        f"--threads={threads}",
        "--enable_latency_logging=false",
    ]
    env = {"OMP_NUM_THREADS": str(threads)}
    return start(cmd, env, f"{base}/v2/models/{UPSTREAM_MODEL}/ready"), base
