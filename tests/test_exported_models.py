"""Every committed model in exported_models/ holds the model contract, and its card
carries the measured evaluation that `purifier eval` wrote (never a hand-made one)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

MODEL_DIRS = sorted(p for p in (REPO / "exported_models").iterdir() if p.is_dir())


def test_there_is_an_exported_model():
    assert any(d.name == "fmnist-nrp" for d in MODEL_DIRS)


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_model_holds_the_contract(model_dir: Path):
    run = subprocess.run(
        [sys.executable, "-m", "purifier.contract_check", str(model_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _measured_table(card: dict) -> dict:
    """The table.json that the card's evaluation command wrote (its config's output_dir)."""
    config_path = next(a for a in card["evaluation"]["command"].split() if a.endswith(".yaml"))
    config = yaml.safe_load((REPO / config_path).read_text())
    return json.loads((REPO / config["output_dir"] / "table.json").read_text())


def test_fmnist_card_is_measured_on_at_least_2000_images():
    card = json.loads((REPO / "exported_models/fmnist-nrp/1/card.json").read_text())
    assert card["evaluation"]["num_images"] >= 2000


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_card_matches_the_measured_table(model_dir: Path):
    card = json.loads((model_dir / "1" / "card.json").read_text())
    table = _measured_table(card)
    assert card["evaluation"]["command"] == table["command"]
    assert card["evaluation"]["num_images"] == table["num_images"]
    assert card["evaluation"]["purifier_column"] in table["purifiers"]
    for target, block in table["targets"].items():
        assert [r["error"] for r in card["evaluation"]["targets"][target]] == [
            r["error"] for r in block["rows"]
        ]


def test_the_methods_page_shows_the_generated_methods_table():
    readme = (REPO / "docs" / "methods.md").read_text()
    generated = (REPO / "results/fmnist_methods/methods.md").read_text()
    assert generated in readme


def _card(model_dir: Path) -> dict:
    return json.loads((model_dir / "1" / "card.json").read_text())


QUANTISED = [d for d in MODEL_DIRS if "int8" in _card(d)]


@pytest.mark.parametrize("model_dir", QUANTISED, ids=lambda p: p.name)
def test_the_int8_section_is_the_measured_table_of_this_very_file(model_dir: Path):
    """Issue 25: an INT8 model carries its agreement and fooling rates against FP32, as
    the table measured them with this file (and this model.onnx) as the columns."""
    from purifier.contract import sha256_of
    from training.export.int8 import int8_summary

    card = _card(model_dir)
    summary = card["int8"]["evaluation"]
    config_path = next(a for a in summary["command"].split() if a.endswith(".yaml"))
    config = yaml.safe_load((REPO / config_path).read_text())
    weights = {k: REPO / config["defenses"][k]["weights"] for k in ("fp32", "int8")}
    assert sha256_of(weights["int8"]) == card["int8"]["sha256"]
    assert sha256_of(weights["fp32"]) == card["sha256"]
    table = json.loads((REPO / config["output_dir"] / "table.json").read_text())
    assert int8_summary(table) == summary
    assert summary["num_images"] >= 200


DETECTING = [d for d in MODEL_DIRS if "detection" in _card(d)]


@pytest.mark.parametrize("model_dir", DETECTING, ids=lambda p: p.name)
def test_the_detection_section_is_calibrated_and_its_study_measured_it(model_dir: Path):
    """Issue 24: the card's thresholds are those its config calibrates, and its
    `evaluation` is what the detection study measured at exactly those thresholds."""
    from training.detection.study import card_summary

    section = _card(model_dir)["detection"]
    assert set(section["thresholds"]) == {"0.01", "0.05"}
    assert section["thresholds"]["0.01"] >= section["thresholds"]["0.05"]
    assert section["calibration"]["rounded_to_8_bits"] and section["calibration"]["n"] >= 1000
    evaluation = section["evaluation"]
    config_path = next(a for a in evaluation["command"].split() if a.endswith(".yaml"))
    config = yaml.safe_load((REPO / config_path).read_text())
    result = json.loads((REPO / config["output_dir"] / "detection.json").read_text())
    name = model_dir.name
    assert result["models"][name]["served"] == section["statistic"]
    assert result["models"][name]["thresholds"] == section["thresholds"]
    assert card_summary(result, name) == evaluation
    assert evaluation["n_clean"] >= 200
