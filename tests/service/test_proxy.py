"""Proxy mode end to end (issue 39): Purifier in front of a real KServe model server
(examples/kserve_classifier: MobileNetV2 with the project's ImageNet weights, on
onnxruntime), both real processes on loopback. An attacked photo goes through the proxy;
the upstream's answer must be the one the purified photo gets, other inputs and
parameters must arrive untouched, and the upstream's failures must come back as the
documented JSON errors."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from benchmarks.serve_bench import stop
from benchmarks.upstream import UPSTREAM_MODEL, start_upstream
from tests.live_server import REPO, Server, wait_for
from tests.service.test_errors import assert_error

PURIFIER = "photo-guided"
CLASSIFY = f"/v2/models/{UPSTREAM_MODEL}/infer"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[str]:
    """The KServe classifier's URL."""
    proc, url = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def flagging_repo(tmp_path_factory) -> Path:
    """photo-guided with its 1% suspicion threshold below any score: every image is
    flagged, so that ?on_suspicious=reject has something to refuse."""
    repo = tmp_path_factory.mktemp("models")
    shutil.copytree(REPO / "exported_models" / PURIFIER, repo / PURIFIER)
    card_path = repo / PURIFIER / "1" / "card.json"
    card = json.loads(card_path.read_text())
    card["detection"]["thresholds"]["0.01"] = -1.0
    for thresholds in card["detection"].get("thresholds_by_file", {}).values():
        thresholds["0.01"] = -1.0
    card_path.write_text(json.dumps(card))
    return repo


def proxy_server(tmp_path_factory, upstream_url: str, repo: Path | None = None) -> Server:
    """A purifier serving photo-guided with PURIFIER_UPSTREAM_URL; ready once its own
    model is (its server-ready also needs the upstream)."""
    env = {
        "PURIFIER_UPSTREAM_URL": upstream_url,
        "PURIFIER_REQUEST_TIMEOUT_S": "20",
        "PURIFIER_WARMUP_SIZES": "[224]",
    }
    if repo is None:
        env["PURIFIER_MODELS"] = json.dumps([PURIFIER])
    else:
        env["PURIFIER_MODEL_REPOSITORY"] = str(repo)
    server = Server(env, tmp_path_factory.mktemp("proxy") / "log.txt")

    def own_model_ready() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(server.log.read_text()[-2000:])
        return httpx.get(f"{server.url}/v2/models/{PURIFIER}/ready", timeout=1).status_code == 200

    if not wait_for(own_model_ready, 120):
        server.stop()
        raise TimeoutError(server.log.read_text()[-2000:])
    return server


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, flagging_repo) -> Iterator[Server]:
    server = proxy_server(tmp_path_factory, upstream, flagging_repo)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def attacked() -> np.ndarray:
    """A real photo (scikit-image's chelsea, 224x224) after PGD-10 at 16/255 on the very
    classifier the upstream serves: FP32 NCHW in [0, 1]."""
    import torch
    import torchattacks
    from PIL import Image

    from training.data.photos import source_dir
    from training.models.imagenet import mobilenet_v2_imagenet

    img = Image.open(source_dir("scikit-image") / "chelsea.png").convert("RGB")
    x = torch.from_numpy(np.asarray(img.resize((224, 224)), np.float32) / 255).permute(2, 0, 1)
    model = mobilenet_v2_imagenet()
    label = model(x[None]).argmax(1)
    torch.manual_seed(0)
    attack = torchattacks.PGD(model, eps=16 / 255, alpha=4 / 255, steps=10)
    return attack(x[None], label).numpy()


def binary_infer(url: str, path: str, inputs: list[tuple[dict, bytes]], **head) -> httpx.Response:
    specs = [{**s, "parameters": {"binary_data_size": len(raw)}} for s, raw in inputs]
    header = json.dumps({"inputs": specs, **head}).encode()
    return httpx.post(
        f"{url}{path}",
        content=header + b"".join(raw for _, raw in inputs),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=60,
    )


def outputs_of(response: httpx.Response) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, outputs by name) of a binary inference answer."""
    assert response.status_code == 200, response.text[:500]
    split = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:split])
    arrays, offset = {}, split
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        dtype = {"FP32": np.float32, "INT64": np.int64}[out["datatype"]]
        arrays[out["name"]] = np.frombuffer(response.content[offset : offset + size], dtype)
        offset += size
    return head, arrays


def fp32_tensor(name: str, x: np.ndarray) -> tuple[dict, bytes]:
    return {"name": name, "datatype": "FP32", "shape": list(x.shape)}, x.astype("<f4").tobytes()


def test_an_attacked_photo_gets_the_answer_its_purified_image_gets(proxy, upstream, attacked):
    """The proxy's answer is the upstream's answer for the purified image, exactly; the
    other input (temperature), the request id and parameters reach the upstream."""
    temperature = np.array([2.0], np.float32)
    through = binary_infer(
        proxy.url,
        CLASSIFY,
        [fp32_tensor("image", attacked), fp32_tensor("temperature", temperature)],
        id="cat-1",
        parameters={"binary_data_output": True},
    )
    head, answer = outputs_of(through)
    assert head["id"] == "cat-1" and head["model_name"] == UPSTREAM_MODEL
    figures = head["parameters"]
    assert figures["purifier_model"] == PURIFIER and figures["purifier_inputs"] == "image"
    assert float(figures["purifier_linf"]) > 0 and float(figures["purifier_l2"]) > 0
    assert figures["purifier_suspicious"] == "true"  # the flagging copy flags everything
    # The purified image, asked of the purifier itself, then of the upstream directly.
    own = binary_infer(
        proxy.url,
        f"/v2/models/{PURIFIER}/infer",
        [fp32_tensor("image", attacked)],
        parameters={"binary_data_output": True},
    )
    split = int(own.headers["inference-header-content-length"])
    purified = np.frombuffer(own.content[split:], np.float32).reshape(attacked.shape)
    assert np.abs(purified - attacked).max() == pytest.approx(
        float(figures["purifier_linf"]), abs=1e-5
    )
    _, direct = outputs_of(
        binary_infer(
            upstream,
            CLASSIFY,
            [fp32_tensor("image", purified), fp32_tensor("temperature", temperature)],
            parameters={"binary_data_output": True},
        )
    )
    assert answer["class"].tolist() == direct["class"].tolist()
    np.testing.assert_allclose(answer["probabilities"], direct["probabilities"], atol=1e-6)
    # ... and not the answer the unpurified attack gets, nor the one at temperature 1.
    _, raw = outputs_of(
        binary_infer(
            upstream,
            CLASSIFY,
            [fp32_tensor("image", attacked)],
            parameters={"binary_data_output": True},
        )
    )
    assert not np.allclose(raw["probabilities"], direct["probabilities"], atol=1e-4)


def test_uint8_and_json_requests_are_purified_in_their_own_form(proxy, attacked):
    pixels = np.round(attacked[0].transpose(1, 2, 0) * 255).astype(np.uint8)[None]
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": list(pixels.shape),
                "data": pixels.ravel().tolist(),
            }
        ]
    }
    response = httpx.post(f"{proxy.url}{CLASSIFY}", json=body, timeout=60)
    assert response.status_code == 200, response.text[:500]
    answer = response.json()
    assert response.headers["content-type"] == "application/json"
    assert {o["name"] for o in answer["outputs"]} == {"probabilities", "class"}
    assert answer["parameters"]["purifier_inputs"] == "image"


def test_tritonclient_talks_to_the_proxy_as_to_any_model_server(proxy, attacked):
    client = triton.InferenceServerClient(url=proxy.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready(UPSTREAM_MODEL)
    meta = client.get_model_metadata(UPSTREAM_MODEL)
    assert meta["inputs"][0]["name"] == "image" and meta["purifier"]["model"] == PURIFIER
    tensor = triton.InferInput("image", list(attacked.shape), "FP32")
    tensor.set_data_from_numpy(attacked, binary_data=True)
    result = client.infer(
        UPSTREAM_MODEL, [tensor], outputs=[triton.InferRequestedOutput("class", binary_data=True)]
    )
    assert result.as_numpy("class").shape == (1,)
    assert result.get_response()["parameters"]["purifier_model"] == PURIFIER
    # The purifier's own models are still its own.
    assert client.is_model_ready(PURIFIER)


def model_sample(proxy: Server, sample: str, model: str) -> float:
    """One model's value of a sample (e.g. purifier_upstream_seconds_count) on /metrics,
    0 before the first observation."""
    metrics = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    prefix = f'{sample}{{model="{model}"}}'
    line = next((line for line in metrics.splitlines() if line.startswith(prefix)), None)
    return 0.0 if line is None else float(line.split()[-1])


def test_request_seconds_hold_purifiers_own_share_not_the_upstreams(proxy, attacked):
    """A proxied request's purifier_request_seconds is the whole request less the
    upstream's round trip (in purifier_upstream_seconds): the two add up to no more than
    the client's own wall time, which they would exceed if both held the round trip."""
    before = [
        model_sample(proxy, "purifier_request_seconds_sum", PURIFIER),
        model_sample(proxy, "purifier_upstream_seconds_sum", UPSTREAM_MODEL),
    ]
    started = time.perf_counter()
    for _ in range(3):  # one at a time: the sums are then comparable with the wall time
        response = binary_infer(proxy.url, CLASSIFY, [fp32_tensor("image", attacked)])
        assert response.status_code == 200
    wall = time.perf_counter() - started
    own = model_sample(proxy, "purifier_request_seconds_sum", PURIFIER) - before[0]
    upstream = model_sample(proxy, "purifier_upstream_seconds_sum", UPSTREAM_MODEL) - before[1]
    assert own > 0 and upstream > 0
    assert own + upstream <= wall


def upstream_posts(proxy: Server) -> int:
    return int(model_sample(proxy, "purifier_upstream_seconds_count", UPSTREAM_MODEL))


def test_reject_refuses_before_the_upstream_is_called(proxy, attacked):
    before = upstream_posts(proxy)
    response = binary_infer(
        proxy.url, f"{CLASSIFY}?on_suspicious=reject", [fp32_tensor("image", attacked)]
    )
    assert_error(response, 422, "suspicious")
    assert response.json()["model"] == PURIFIER
    assert upstream_posts(proxy) == before
    flagged = binary_infer(proxy.url, CLASSIFY, [fp32_tensor("image", attacked)])
    assert flagged.status_code == 200 and upstream_posts(proxy) == before + 1


def test_the_upstreams_own_4xx_pass_through_and_its_5xx_become_502(proxy):
    missing = httpx.post(
        f"{proxy.url}{CLASSIFY}",
        json={"inputs": [{"name": "temperature", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        timeout=30,
    )
    assert missing.status_code == 400 and missing.json() == {"error": "input 'image' is missing"}
    unknown = httpx.post(
        f"{proxy.url}/v2/models/resnet/infer",
        json={"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]},
        timeout=30,
    )
    assert unknown.status_code == 404 and "resnet" in unknown.json()["error"]
    # KServe 0.21's REST decoder answers 500 to a binary BYTES input that is not UTF-8
    # text (an encoded image): a real upstream failure, passed on as our 502.
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(png, "PNG")
    blob = png.getvalue()
    failed = binary_infer(
        proxy.url,
        CLASSIFY,
        [
            (
                {"name": "image", "datatype": "BYTES", "shape": [1]},
                len(blob).to_bytes(4, "little") + blob,
            )
        ],
    )
    assert_error(failed, 502, "upstream_error")
    assert failed.json()["upstream_status"] == 500
    assert failed.json()["error"].startswith("upstream answered 500")
    assert len(failed.json()["error"]) < 400  # the upstream's echo of the image is cut
    metrics = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    assert 'purifier_upstream_errors_total{reason="upstream_error"} 1.0' in metrics


class FaultyUpstream:
    """A deliberately broken upstream (fault injection, not a model server): a request for
    model `hang` is read and never answered; any other is answered by closing the
    connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            request = conn.recv(65536)
            if b"/models/hang/" in request:
                self.held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def broken_proxy(tmp_path_factory) -> Iterator[Server]:
    faulty = FaultyUpstream()
    server = proxy_server(tmp_path_factory, faulty.url)
    yield server
    server.stop()
    faulty.close()


def test_an_unreachable_or_silent_upstream_is_a_json_502_or_504(broken_proxy):
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    dropped = binary_infer(broken_proxy.url, "/v2/models/drop/infer", [fp32_tensor("image", x)])
    assert_error(dropped, 502, "upstream_unreachable")
    silent = binary_infer(broken_proxy.url, "/v2/models/hang/infer", [fp32_tensor("image", x)])
    assert_error(silent, 504, "upstream_timeout")
    # Not ready while the upstream is not; the purifier's own model still is.
    assert httpx.get(f"{broken_proxy.url}/v2/health/ready", timeout=5).status_code == 503
    model = httpx.get(f"{broken_proxy.url}/v2/models/drop/ready", timeout=5)
    assert model.status_code == 503 and model.json()["upstream_ready"] is False
    assert httpx.get(f"{broken_proxy.url}/v2/models/{PURIFIER}/ready", timeout=5).status_code == 200
    metrics = httpx.get(f"{broken_proxy.url}/metrics", timeout=5).text
    for reason in ("upstream_unreachable", "upstream_timeout"):
        assert f'purifier_upstream_errors_total{{reason="{reason}"}} 1.0' in metrics, reason
