import subprocess
import sys

import httpx

from tests.conftest import REPO


def test_v2_server_and_health_routes(server):
    assert httpx.get(f"{server.url}/v2").json()["name"] == "purifier"
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    ready = httpx.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_v2_model_metadata_and_readiness(server):
    meta = httpx.get(f"{server.url}/v2/models/fmnist-nrp").json()
    assert meta["name"] == "fmnist-nrp" and meta["versions"] == ["1"]
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, -1, -1]}
    assert meta["outputs"][0]["name"] == "purified"
    assert httpx.get(f"{server.url}/v2/models/fmnist-nrp/ready").json()["ready"] is True
    assert httpx.get(f"{server.url}/v2/models/nope").status_code == 404


def test_models_lists_the_cards(server):
    body = httpx.get(f"{server.url}/models").json()
    assert body["default"] == "fmnist-nrp"
    card = body["models"][0]
    assert card["name"] == "fmnist-nrp" and card["provider"] == "CPUExecutionProvider"
    assert card["precision"] == "fp32"  # on a CPU "auto" keeps float32
    assert card["evaluation"]["num_images"] >= 2000


def test_metrics_are_prometheus_histograms_labelled_by_model(server):
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("request", "queue", "inference", "decode", "encode"):
        assert f"# TYPE purifier_{name}_seconds histogram" in text
    assert "# TYPE purifier_batch_size histogram" in text
    assert 'purifier_pending_requests{model="fmnist-nrp"}' in text
    assert (
        'purifier_model_info{method="nrp",model="fmnist-nrp",precision="fp32",'
        'provider="CPUExecutionProvider"' in text
    )


def test_service_imports_no_torch():
    code = (
        "import sys, service.app, service.serve, purifier.cli; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_index_page_uploads_to_purify(server):
    response = httpx.get(f"{server.url}/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "/purify?format=png" in response.text and "<canvas" in response.text


def test_require_gpu_fails_start_up_when_onnxruntime_runs_on_cpu(tmp_path):
    import os

    env = {
        **os.environ,
        "PURIFIER_REQUIRE_GPU": "true",
        "PURIFIER_WARMUP_SIZES": "[28]",
        "PURIFIER_MODEL_REPOSITORY": str(REPO / "exported_models"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "purifier.cli", "serve", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "a GPU is required" in run.stdout + run.stderr


def test_corrupt_model_is_refused_with_the_file_named(tmp_path):
    import shutil

    from service.registry import ModelLoadError, discover

    repo = tmp_path / "models"
    shutil.copytree(REPO / "exported_models" / "fmnist-nrp", repo / "fmnist-nrp")
    onnx = repo / "fmnist-nrp" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    try:
        discover(repo)
    except ModelLoadError as err:
        assert str(onnx) in str(err) and "sha256" in str(err)
    else:
        raise AssertionError("a model that does not match its card was accepted")


def test_a_corrupt_or_missing_half_precision_file_is_refused_with_the_file_named(tmp_path):
    import shutil

    import pytest

    from service.registry import ModelLoadError, discover

    repo = tmp_path / "models"
    shutil.copytree(REPO / "exported_models" / "fmnist-nrp", repo / "fmnist-nrp")
    half = repo / "fmnist-nrp" / "1" / "model.fp16.onnx"
    half.write_bytes(half.read_bytes()[:-4] + b"0123")
    with pytest.raises(ModelLoadError, match=r"model\.fp16\.onnx: sha256"):
        discover(repo)
    half.unlink()
    with pytest.raises(ModelLoadError, match=r"missing .*model\.fp16\.onnx"):
        discover(repo)


def test_the_natural_image_purifier_is_the_default_once_it_is_exported():
    from service.app import default_model_name

    assert (
        default_model_name(None, ["fmnist-arn-dp", "fmnist-nrp", "photo-guided"]) == "photo-guided"
    )
    assert default_model_name(None, ["fmnist-arn-dp", "fmnist-nrp"]) == "fmnist-nrp"
    assert default_model_name(None, ["fmnist-cafd", "fmnist-arn-dp"]) == "fmnist-cafd"
    assert default_model_name("fmnist-cafd", ["fmnist-cafd", "photo-guided"]) == "fmnist-cafd"


def test_the_default_model_serves_first_and_each_models_readiness_is_truthful(tmp_path):
    """Issue 25: the default model serves once it is warm; the others warm up after it,
    and until one has, its readiness says 503 and work sent to it gets 503
    `model_not_ready` with Retry-After - while the default already serves. Issue 39: the
    server's own readiness (/v2/health/ready, the protocol's server-ready) waits for
    every model."""
    from tests.live_server import Server, wait_for
    from tests.service.test_errors import assert_error, coffee_224

    server = Server({"PURIFIER_MODELS": '["fmnist-nrp", "photo-guided"]'}, tmp_path / "log")
    try:
        default_ready = f"{server.url}/v2/models/photo-guided/ready"
        assert wait_for(lambda: httpx.get(default_ready).is_success, 120)
        other = httpx.get(f"{server.url}/v2/models/fmnist-nrp/ready", timeout=5)
        server_ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        png = {"content": coffee_224(), "headers": {"Content-Type": "image/png"}}
        first = httpx.post(f"{server.url}/purify", **png, timeout=60)
        assert first.status_code == 200 and first.headers["x-purifier-model"] == "photo-guided"
        # fmnist-nrp's warm-up (batch 16 of 256x256 tiles, one thread) takes seconds.
        assert other.status_code == 503 and other.json()["ready"] is False
        assert server_ready.status_code == 503  # not every model is ready yet
        early = httpx.post(f"{server.url}/purify?model=fmnist-nrp", **png)
        if early.status_code == 503:
            assert_error(early, 503, "model_not_ready")
            assert early.headers["retry-after"] == "1"
        assert wait_for(
            lambda: httpx.get(f"{server.url}/v2/models/fmnist-nrp/ready").is_success, 120
        )
        assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
        late = httpx.post(f"{server.url}/purify?model=fmnist-nrp", **png, timeout=60)
        assert late.status_code == 200 and late.headers["x-purifier-model"] == "fmnist-nrp"
        assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    finally:
        server.stop()
