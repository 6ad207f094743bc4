"""A real uvicorn server on loopback, started as `purifier serve` in a subprocess. The
fixtures are registered in tests/conftest.py, for the service and the deployment tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

# One model per test server on the project's repository: each loaded model holds its own
# warmed-up onnxruntime arenas, and several servers run at once on a 24 GiB CI machine
# (the every-model test asks for all of them). The service tests are written for the
# small Fashion-MNIST model, whatever the project's default.
TEST_SERVER_MODELS = ["fmnist-nrp"]
# Two 256x256 tiles per batch at most (the default holds 16): fmnist-nrp is a heavy
# network (38 GFLOPs at 224x224), and warming up a batch of 16 of its tiles took 11 of
# the 13.5 s each test server spent starting. Small images still batch 16 at a time and
# a tiled photo's tiles still share batches.
TEST_MAX_BATCH_PIXELS = 2 * 256 * 256

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `condition` (HTTP errors count as not yet) until true or `timeout` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    return False


def is_ready(url: str) -> bool:
    return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200


def all_models_ready(url: str, api_key: str | None = None) -> bool:
    """The server serves its default model and every other loaded model has warmed up
    (they follow the default in the background; /models needs the key when one is set)."""
    if not is_ready(url):
        return False
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    models = httpx.get(f"{url}/models", headers=headers, timeout=1).json()["models"]
    return all(m["ready"] for m in models if "error" not in m)


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "PURIFIER_MODEL_REPOSITORY": str(REPO / "exported_models"),
            "PURIFIER_INTRA_OP_THREADS": "1",
            "PURIFIER_WARMUP_SIZES": "[28]",
            "PURIFIER_MAX_BATCH_PIXELS": str(TEST_MAX_BATCH_PIXELS),
            "PURIFIER_CODEC_THREADS": "2",
            "OMP_NUM_THREADS": "1",
            **env,
        }
        if "PURIFIER_MODEL_REPOSITORY" not in env and "PURIFIER_MODELS" not in env:
            full_env["PURIFIER_MODELS"] = json.dumps(TEST_SERVER_MODELS)
        self.log = log
        self.api_key = full_env.get("PURIFIER_API_KEY")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "purifier.cli", "serve", "--port", str(self.port)],
            cwd=REPO,
            env=full_env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            return all_models_ready(self.url, self.api_key)

        if not wait_for(ready, timeout):
            raise TimeoutError(f"server not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(env, tmp_path_factory.mktemp("server") / "log.txt")
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """The default server; a 50 ms queue delay makes concurrent requests share batches, and
    a generous wait limit keeps admission control (tested on its own) out of the way of
    64-way bursts on a slow, shared CI machine."""
    return start_server(PURIFIER_MAX_QUEUE_DELAY_MS="50", PURIFIER_MAX_QUEUE_WAIT_S="60")


@contextlib.contextmanager
def in_process_server(**settings) -> Iterator[tuple[str, object]]:
    """uvicorn in a thread of this process (still real HTTP on loopback), for tests that
    must reach inside the app: yields (url, app)."""
    import threading

    import uvicorn

    from service.app import create_app
    from service.config import Settings

    defaults = {
        "model_repository": REPO / "exported_models",
        "warmup_sizes": [28],
        "intra_op_threads": 1,
        "max_batch_pixels": TEST_MAX_BATCH_PIXELS,
    }
    if "model_repository" not in settings:
        defaults["models"] = list(TEST_SERVER_MODELS)  # as Server: one model's memory per server
    app = create_app(Settings(**(defaults | settings)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for(lambda: is_ready(url), 60):
            raise TimeoutError(f"in-process server at {url} not ready after 60 s")
        yield url, app
    finally:
        server.should_exit = True
        thread.join(20)
