"""The detection study and the export-time calibration (issue 24), on the real exported
fmnist-nrp and real Fashion-MNIST test images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from purifier.contract_check import findings
from tests.conftest import REPO
from training.defenses import onnx_model
from training.detection.false_alarms import markdown as false_alarm_markdown
from training.detection.false_alarms import measure, record_in_cards
from training.detection.scores import quantized, residual_statistics, threshold_at
from training.detection.study import DetectionStudy, markdown, roc_figure, separation
from training.export.detection import add_detection, calibration_images

CALIBRATION = {"dataset": "fashion_mnist", "split": "test", "first": 5000, "num_images": 300}


def test_separation_of_two_known_distributions():
    rng = np.random.default_rng(0)
    clean, attacked = rng.normal(0, 1, 2000), rng.normal(3, 1, 2000)
    out = separation(clean, attacked, served={"0.01": threshold_at(clean, 0.01)})
    assert out["auroc"] == pytest.approx(0.983, abs=0.01)  # Phi(3 / sqrt(2))
    # at 1% false positives the threshold is ~2.33: a N(3, 1) passes it 75% of the time
    assert out["roc"]["0.01"]["percent"] == pytest.approx(75, abs=4)
    assert out["served"]["0.01"] == out["roc"]["0.01"]
    low, high = out["roc"]["0.05"]["ci95"]
    assert low <= out["roc"]["0.05"]["percent"] <= high
    # identical distributions do not separate
    assert separation(clean, rng.normal(0, 1, 2000))["auroc"] == pytest.approx(0.5, abs=0.03)


def test_threshold_flags_at_most_the_rate():
    scores = np.random.default_rng(1).random(1000)
    for rate in (0.01, 0.05):
        assert (scores > threshold_at(scores, rate)).mean() <= rate


@pytest.fixture
def export_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "exported_models/fmnist-nrp", tmp_path / "fmnist-nrp")
    return tmp_path / "fmnist-nrp"


def study_models(export_copy: Path) -> dict:
    """A detection study's source, feature space and models: LeNet, the VGG features, and
    the copy of fmnist-nrp."""
    return {
        "source": str(REPO / "training/configs/fmnist_lenet.yaml"),
        "feature_extractor": {
            "model": {"arch": "vgg_small", "in_channels": 1, "num_classes": 10, "width": 32},
            "weights": str(REPO / "weights/fmnist/vgg_features.pt"),
            "layer": "relu3_3",
        },
        "models": {"fmnist-nrp": str(export_copy / "1")},
    }


def test_calibration_writes_thresholds_that_hold_on_their_images(export_copy):
    version_dir = export_copy / "1"
    config = {"export": {"detection": {"statistic": "hf_rms", "data": CALIBRATION}}}
    section = add_detection(version_dir, config)
    card = json.loads((version_dir / "card.json").read_text())
    assert card["detection"] == section and section["calibration"]["n"] == 300
    t = section["thresholds"]
    assert t["0.01"] >= t["0.05"] > 0
    images = calibration_images(CALIBRATION)
    scores = residual_statistics(onnx_model(str(version_dir / "model.onnx")), images, 100)
    for rate, threshold in t.items():
        assert (scores["hf_rms"] > threshold).mean() <= float(rate)
    assert findings(export_copy) == []
    config["export"]["detection"]["statistic"] = "psnr"
    with pytest.raises(KeyError, match="known"):
        add_detection(version_dir, config)
    card["detection"]["thresholds"] = {"0.05": 0.1}
    (version_dir / "card.json").write_text(json.dumps(card))
    assert any("detection.thresholds" in f for f in findings(export_copy))


def test_a_small_study_reports_every_statistic_and_the_served_verdict(export_copy, tmp_path):
    add_detection(
        export_copy / "1", {"export": {"detection": {"statistic": "rms", "data": CALIBRATION}}}
    )
    fgsm = {"name": "FGSM 0.1", "kind": "fgsm", "eps": 0.1}
    config = {
        "name": "tiny",
        "seed": 0,
        "batch_size": 50,
        "data": {"dataset": "fashion_mnist", "split": "test", "first": 2000, "num_images": 60},
        **study_models(export_copy),
        "selection": {
            "data": {"dataset": "fashion_mnist", "split": "test", "first": 8000, "num_images": 40},
            "attacks": ["FGSM 0.1"],
        },
        "attacks": [fgsm],
        "adaptive": {
            "purifiers": {"fmnist-nrp": str(REPO / "training/configs/fmnist_nrp.yaml")},
            "num_images": 16,
            "eps": 0.1,
            "alpha": 0.02,
            "steps": 4,
            "weights": [0, 50],
        },
    }
    result = DetectionStudy(config).run()
    model = result["models"]["fmnist-nrp"]
    assert model["served"] == "rms" and result["n_clean"] == 60
    cell = model["attacks"]["FGSM 0.1"]
    assert set(cell) == {"rms", "linf", "hf_rms", "relative"}
    assert 0.0 <= cell["rms"]["auroc"] <= 1.0 and cell["rms"]["n_attacked"] == 60
    assert set(cell["rms"]["served"]) == {"0.01", "0.05"}
    assert result["source_fooled"]["FGSM 0.1"]["percent"] > 50  # FGSM 0.1 fools LeNet
    assert result["selection"]["fmnist-nrp"]["best"] in cell
    plain, evading = result["adaptive"]["models"]["fmnist-nrp"]
    # the penalty works: the evading attacker leaves a smaller residual score
    assert evading["mean_score_over_threshold"] < plain["mean_score_over_threshold"]
    assert plain["fooled"]["n"] == 16 and set(plain["detected"]) == {"0.01", "0.05"}
    text = markdown(result)
    assert "| FGSM 0.1 |" in text and "served statistic: rms" in text
    assert roc_figure(result, "fmnist-nrp", tmp_path / "roc.png").stat().st_size > 10_000


def test_false_alarms_of_the_served_thresholds_on_other_clean_sets(export_copy):
    """The calibration check (issue 37): the calibration set itself is flagged at most at
    the nominal rate (a deterministic purifier reproduces its scores exactly); another
    clean set gets its own measured rate, judged against 2x nominal."""
    add_detection(
        export_copy / "1", {"export": {"detection": {"statistic": "hf_rms", "data": CALIBRATION}}}
    )
    other = {"dataset": "fashion_mnist", "split": "test", "first": 1000, "num_images": 200}
    config = {
        "name": "tiny",
        "batch_size": 100,
        **study_models(export_copy),
    }
    study = DetectionStudy(config)
    raw: dict[str, np.ndarray] = {}
    result = measure(study, {"calibration": CALIBRATION, "other": other}, raw)["fmnist-nrp"]
    assert [len(raw[f"fmnist-nrp / {k}"]) for k in ("calibration", "other")] == [300, 200]
    own = result["calibration"]
    assert own["n"] == 300 and own["statistic"] == "hf_rms"
    for fpr, r in own["rates"].items():
        assert r["percent"] <= 100 * float(fpr) and own["holds"][fpr]
    # The other set's rate is what its own scores say of the card's thresholds.
    purify = onnx_model(str(export_copy / "1" / "model.onnx"))
    x, _ = study.selected(other)
    scores = residual_statistics(purify, quantized(x), 100)["hf_rms"]
    for fpr, r in result["other"]["rates"].items():
        flagged = 100 * (scores > result["other"]["thresholds"][fpr]).mean()
        assert r["percent"] == pytest.approx(flagged, abs=0.01) and r["n"] == 200
        assert result["other"]["holds"][fpr] == (flagged <= 200 * float(fpr))
    full = {"config_path": "c.yaml", "elapsed_s": 1, "models": {"fmnist-nrp": result}}
    text = false_alarm_markdown(full)
    assert "| calibration | 300 |" in text and "| other | 200 |" in text
    record_in_cards(full, study.models)
    card = json.loads((export_copy / "1" / "card.json").read_text())
    check = card["detection"]["calibration_check"]
    assert check["sets"]["other"]["rates"] == result["other"]["rates"]
    assert card["detection"]["thresholds"] == result["other"]["thresholds"]  # kept
    assert findings(export_copy) == []


def test_images_are_rounded_to_what_a_client_can_send():
    x = quantized(torch.full((1, 1, 2, 2), 0.5004))
    assert float(x[0, 0, 0, 0]) * 255 == pytest.approx(128.0)


def test_the_torch_statistics_equal_the_served_ones():
    from purifier.suspicion import STATISTICS
    from training.detection.adaptive import torch_statistic

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 20, 24, generator=g)
    p = (x + 0.05 * torch.randn(3, 3, 20, 24, generator=g)).clamp(0, 1)
    for name, statistic in STATISTICS.items():
        ours = torch_statistic(name, x, p)
        served = [statistic(a.numpy(), b.numpy()) for a, b in zip(x, p, strict=True)]
        np.testing.assert_allclose(ours.numpy(), served, rtol=1e-4, err_msg=name)


def test_the_detection_page_shows_the_measured_studies():
    from training.detection.summary import render

    studies = [
        "results/detection_photos/detection.json",
        "results/detection_photos_large/detection.json",
        "results/detection_fmnist/detection.json",
    ]
    results = [json.loads((REPO / p).read_text()) for p in studies]
    assert render(results) in (REPO / "docs/detection.md").read_text()
