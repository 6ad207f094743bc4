"""Faults: broken models at start-up, an inference error, a dead batching worker, and
SIGTERM with 100 requests in flight."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.live_server import free_port, in_process_server
from tests.service.conftest import encode_image, fmnist_images, post_concurrently
from tests.service.test_errors import assert_error

GOOD = REPO / "exported_models" / "fmnist-nrp"


def write_model(repo: Path, name: str, onnx_bytes: bytes, **card) -> Path:
    version = repo / name / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(onnx_bytes)
    card = {
        "name": name,
        "version": 1,
        "method": "test",
        "channels": 1,
        "min_size": 8,
        "recommended_tile": 64,
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        **card,
    }
    (version / "card.json").write_text(json.dumps(card))
    return version / "model.onnx"


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The good model, one whose bytes differ from its card, one onnxruntime cannot load."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(GOOD, repo / "fmnist-nrp")
    mismatched = write_model(repo, "mismatched", (GOOD / "1" / "model.onnx").read_bytes())
    mismatched.write_bytes(mismatched.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    garbage = write_model(repo, "garbage", b"this is not an onnx file")
    return repo, mismatched, garbage


def test_by_default_a_broken_model_stops_start_up_naming_the_files(broken_repo):
    repo, mismatched, garbage = broken_repo
    run = subprocess.run(
        [sys.executable, "-m", "purifier.cli", "serve", "--port", str(free_port())],
        cwd=REPO,
        env={**os.environ, "PURIFIER_MODEL_REPOSITORY": str(repo), "PURIFIER_WARMUP_SIZES": "[28]"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert str(mismatched) in output and "sha256" in output
    assert str(garbage) in output and "onnxruntime cannot load it" in output


def test_with_exit_on_model_error_off_the_others_are_served(start_server, broken_repo):
    repo, mismatched, garbage = broken_repo
    server = start_server(
        PURIFIER_MODEL_REPOSITORY=str(repo),
        PURIFIER_EXIT_ON_MODEL_ERROR="false",
        PURIFIER_DEFAULT_MODEL="fmnist-nrp",
    )
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    png = encode_image(fmnist_images(1)[0], "PNG")
    assert httpx.post(f"{server.url}/purify", content=png).status_code == 200
    for name, path in (("mismatched", mismatched), ("garbage", garbage)):
        ready = httpx.get(f"{server.url}/v2/models/{name}/ready")
        assert ready.status_code == 503 and str(path) in ready.json()["error"]
        refused = httpx.post(f"{server.url}/purify", params={"model": name}, content=png)
        assert_error(refused, 503, "model_unavailable")
    listed = {m["name"]: m for m in httpx.get(f"{server.url}/models").json()["models"]}
    assert listed["fmnist-nrp"]["ready"] is True
    assert listed["garbage"]["ready"] is False and "onnxruntime" in listed["garbage"]["error"]


def fails_on_white_model() -> bytes:
    """Identity, except that a batch whose darkest pixel is white makes onnxruntime fail
    (Gather index out of range): a real runtime error that depends on the batch's data."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMin", ["image"], ["low"], keepdims=0),
        helper.make_node("Mul", ["low", "two"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["floored"]),
        helper.make_node("Cast", ["floored"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["zeros", "index"], ["zero"]),
        helper.make_node("Add", ["image", "zero"], ["purified"]),
    ]
    shape = ["n", 1, "h", "w"]
    graph = helper.make_graph(
        nodes,
        "fails_on_white",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("purified", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("zeros", TensorProto.FLOAT, [2], [0.0, 0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_an_inference_error_fails_only_its_batch_and_the_service_stays_up(start_server, tmp_path):
    write_model(tmp_path, "fragile", fails_on_white_model())
    server = start_server(
        PURIFIER_MODEL_REPOSITORY=str(tmp_path), PURIFIER_MAX_QUEUE_DELAY_MS="100"
    )
    white = encode_image(Image.new("L", (20, 20), 255), "PNG")  # bucket 32
    normal = [encode_image(img.resize((40, 40)), "PNG") for img in fmnist_images(8)]  # 64

    responses = asyncio.run(post_concurrently(server.url, [white, *normal]))
    assert_error(responses[0], 500, "inference_failed")
    assert [r.status_code for r in responses[1:]] == [200] * 8
    # The purified normal images are the identity of their inputs (a working model).
    out = np.asarray(Image.open(io.BytesIO(responses[1].content)))
    assert np.array_equal(out, np.asarray(Image.open(io.BytesIO(normal[0]))))
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.post(f"{server.url}/purify", content=normal[0]).status_code == 200


def test_a_dead_batching_worker_is_reported_by_liveness():
    with in_process_server() as (url, app):
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        batcher = app.state.purifier.models["fmnist-nrp"].batcher
        batcher._task.get_loop().call_soon_threadsafe(batcher._task.cancel)
        time.sleep(0.3)
        assert_error(httpx.get(f"{url}/v2/health/live"), 503, "batcher_dead")


def test_sigterm_with_100_requests_in_flight_loses_none(start_server):
    # A drain long enough that every client has connected before uvicorn stops accepting
    # (requests that arrive while draining are served: only readiness is off).
    server = start_server(
        PURIFIER_SHUTDOWN_DRAIN_S="2.0",
        PURIFIER_MAX_QUEUE_WAIT_S="120",
        PURIFIER_MAX_BATCH_SIZE="4",
    )
    images = fmnist_images(100)
    bodies = [encode_image(img.resize((56, 56)), "PNG") for img in images]
    finished: list[float] = []

    async def one(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
        response = await client.post(
            f"{server.url}/purify", content=body, headers={"Content-Type": "image/png"}
        )
        finished.append(time.perf_counter())
        return response

    async def scenario() -> tuple[list[httpx.Response], float, int]:
        async with httpx.AsyncClient(timeout=120) as client:
            tasks = [asyncio.create_task(one(client, b)) for b in bodies]
            await asyncio.sleep(0.3)
            sent_at = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            ready = (await client.get(f"{server.url}/v2/health/ready")).status_code
            return await asyncio.gather(*tasks), sent_at, ready

    responses, sigterm_at, ready_status = asyncio.run(scenario())
    assert ready_status == 503  # readiness flipped first
    refused = [r.text for r in responses if r.status_code != 200]
    assert not refused, refused[:3]  # every accepted request answered
    assert sum(t > sigterm_at for t in finished) >= 10  # they really were in flight
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
