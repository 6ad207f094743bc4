"""The suspicion verdict (issue 24): headers on /purify, parameters on /v2 infer, the
reject mode, the counter, and the card's thresholds chosen per served file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from purifier.suspicion import score
from service.detection import detector_for
from service.registry import ModelLoadError
from tests.conftest import REPO
from tests.live_server import in_process_server
from tests.service.conftest import encode_image, fmnist_images
from tests.service.test_errors import assert_error
from tests.service.test_purify import post_image
from tests.service.test_v2_infer import fp32_input, infer_json

CARD = json.loads((REPO / "exported_models/fmnist-nrp/1/card.json").read_text())


def test_purify_carries_the_score_and_verdict_at_the_cards_threshold(server):
    images = fmnist_images(8)
    x = np.stack([np.asarray(img, np.float32) / 255 for img in images])[:, None]
    v2 = infer_json(server.url, {"inputs": [fp32_input(x)]})
    assert v2.status_code == 200, v2.text
    body = v2.json()
    purified = np.asarray(body["outputs"][0]["data"], np.float32).reshape(x.shape)
    statistic = CARD["detection"]["statistic"]
    threshold = CARD["detection"]["thresholds"]["0.01"]  # the default false-positive rate
    # The service's score is purifier.suspicion's statistic of this very residual.
    expected = [score(statistic, a, b) for a, b in zip(x, purified, strict=True)]
    params = body["parameters"]
    assert params["suspicion_statistic"] == statistic
    served = [float(v) for v in params["suspicion"].split(",")]
    np.testing.assert_allclose(served, expected, atol=2e-6)
    assert params["suspicious"].split(",") == [str(s > threshold).lower() for s in expected]
    # /purify reports the same verdict in headers (the PNG round trip is exact for 8 bits).
    response = post_image(server.url, encode_image(images[0], "PNG"))
    assert float(response.headers["x-purifier-suspicion"]) == pytest.approx(expected[0], abs=2e-6)
    assert response.headers["x-purifier-suspicious"] == str(expected[0] > threshold).lower()


def test_a_bad_on_suspicious_value_is_a_400(server):
    response = post_image(
        server.url, encode_image(fmnist_images(1)[0], "PNG"), on_suspicious="drop"
    )
    assert_error(response, 400, "bad_request")
    assert "on_suspicious" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def always_suspicious(tmp_path_factory) -> Path:
    """fmnist-nrp with its 1% threshold below any score: every image is flagged."""
    repo = tmp_path_factory.mktemp("models")
    shutil.copytree(REPO / "exported_models/fmnist-nrp", repo / "fmnist-nrp")
    card_path = repo / "fmnist-nrp/1/card.json"
    card = json.loads(card_path.read_text())
    card["detection"]["thresholds"]["0.01"] = -1.0
    card["detection"]["thresholds_by_file"]["model.onnx"]["0.01"] = -1.0
    card_path.write_text(json.dumps(card))
    return repo


def test_reject_answers_422_with_the_reason_and_flag_counts(always_suspicious):
    body = encode_image(fmnist_images(1)[0], "PNG")
    with in_process_server(model_repository=always_suspicious) as (url, _):
        flagged = post_image(url, body)
        assert flagged.status_code == 200 and flagged.headers["x-purifier-suspicious"] == "true"
        rejected = post_image(url, body, on_suspicious="reject")
        assert_error(rejected, 422, "suspicious")
        reason = rejected.json()["error"]
        assert reason["threshold"] == -1.0 and reason["score"] > reason["threshold"]
        assert reason["statistic"] == CARD["detection"]["statistic"]
        assert reason["false_positive_rate"] == 0.01 and reason["model"] == "fmnist-nrp"
        metrics = httpx.get(f"{url}/metrics").text
        assert 'purifier_suspicious_total{model="fmnist-nrp"} 2.0' in metrics
        # a refusal harms nothing after it: the service answers the next request
        assert post_image(url, body).status_code == 200


def test_the_detector_follows_the_served_file_and_the_chosen_rate():
    card = {
        "name": "m",
        "detection": {
            "statistic": "hf_rms",
            "thresholds": {"0.01": 0.3, "0.05": 0.2},
            "thresholds_by_file": {
                "model.onnx": {"0.01": 0.3, "0.05": 0.2},
                "model.int8.onnx": {"0.01": 0.4, "0.05": 0.25},
            },
        },
    }
    assert detector_for(card, Path("model.int8.onnx"), "0.05").threshold == 0.25
    # fp16 and the CPU graph are model.onnx's graph: its thresholds
    assert detector_for(card, Path("model.fp16.onnx"), "0.01").threshold == 0.3
    assert detector_for({"name": "m"}, Path("model.onnx"), "0.01") is None
    card["detection"]["thresholds_by_file"] = {"model.onnx": {"0.05": 0.2}}
    with pytest.raises(ModelLoadError, match=r"SUSPICION_FPR=0\.01"):
        detector_for(card, Path("model.onnx"), "0.01")
