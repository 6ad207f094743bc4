"""Open Inference Protocol conformance as a Triton user meets it (issue 39): NVIDIA's own
HTTP client (tritonclient) against a real server over loopback - readiness, metadata,
inference, and every /v2 error status surfacing as the client's exception with the
server's message and status (not a TypeError inside the client)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

API_KEY = "tritonclient-test-key"


def client_for(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def fp32_input(x: np.ndarray, name: str = "image") -> triton.InferInput:
    tensor = triton.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return tensor


def test_readiness_metadata_and_inference(server):
    client = client_for(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fmnist-nrp")
    meta = client.get_model_metadata("fmnist-nrp")
    assert meta["inputs"][0]["name"] == "image" and meta["outputs"][0]["name"] == "purified"
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    result = client.infer("fmnist-nrp", [fp32_input(x)])
    out = result.as_numpy("purified")
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def raised(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


@pytest.mark.parametrize(
    ("what", "status", "fragment"),
    [
        ("unknown model", "404", "no model named"),
        ("wrong channels", "400", "channels"),
        ("body too large", "413", "is over"),
        ("unknown version", "404", "serves version"),
    ],
)
def test_every_v2_error_reaches_the_client_as_its_exception(server, what, status, fragment):
    client = client_for(server)
    calls = {
        "unknown model": lambda: client.infer(
            "nope", [fp32_input(np.zeros((1, 1, 8, 8), np.float32))]
        ),
        "wrong channels": lambda: client.infer(
            "fmnist-nrp", [fp32_input(np.zeros((1, 2, 8, 8), np.float32))]
        ),
        "body too large": lambda: client.infer(
            "fmnist-nrp", [fp32_input(np.zeros((1, 1, 1, 45_000_000), np.float32))]
        ),
        "unknown version": lambda: client.infer(
            "fmnist-nrp", [fp32_input(np.zeros((1, 1, 8, 8), np.float32))], model_version="7"
        ),
    }
    err = raised(calls[what])
    assert err.status() == status, err
    assert fragment in err.message(), err.message()


def test_an_unauthorised_triton_user_reads_why(start_server):
    server = start_server(PURIFIER_API_KEY=API_KEY)
    client = client_for(server)
    err = raised(lambda: client.get_model_metadata("fmnist-nrp"))
    assert err.status() == "401" and "API key" in err.message()
    keyed = client.get_model_metadata("fmnist-nrp", headers={"Authorization": f"Bearer {API_KEY}"})
    assert keyed["name"] == "fmnist-nrp"
