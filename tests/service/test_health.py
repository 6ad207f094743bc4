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
