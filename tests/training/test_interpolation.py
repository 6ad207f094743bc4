"""Weight interpolation between two purifiers (training/studies/interpolation.py)."""

import json

import pytest
import torch

from tests.conftest import REPO, write_yaml
from training.config import load_config
from training.evaluation import Evaluation, load_target
from training.studies.interpolation import interpolate_state, main


def test_the_line_between_two_weight_sets_starts_and_ends_at_them():
    first = {"w": torch.zeros(3), "steps": torch.tensor(7)}
    second = {"w": torch.tensor([2.0, 4.0, 6.0]), "steps": torch.tensor(9)}
    assert torch.equal(interpolate_state(first, second, 0.0)["w"], first["w"])
    assert torch.equal(interpolate_state(first, second, 1.0)["w"], second["w"])
    half = interpolate_state(first, second, 0.5)
    assert torch.equal(half["w"], torch.tensor([1.0, 2.0, 3.0]))
    assert half["steps"] == 7  # integer buffers are not blended
    with pytest.raises(ValueError, match="one architecture"):
        interpolate_state(first, {"w": second["w"]}, 0.5)


def test_the_ends_of_the_line_measure_as_the_two_purifiers(tmp_path, monkeypatch):
    # The committed NRP purifiers (paper recipe and clean-share fine-tune) on the trained
    # LeNet: unlike random weights, they differ measurably, so the wiring is checked.
    monkeypatch.chdir(REPO)  # the configs name their weights relative to the repository
    config = load_config(REPO / "training/configs/fmnist_eval_cpu.yaml")
    config.pop("_path")
    config |= {
        "output_dir": str(tmp_path / "results"),
        "threads": 1,
        "batch_size": 128,
        "data": {"dataset": "fashion_mnist", "split": "test", "num_images": 128},
        "targets": {"lenet": "training/configs/fmnist_lenet.yaml"},
        "attacks": [{"name": "FGSM", "kind": "fgsm", "eps": 0.1}],
    }
    config_path = write_yaml(tmp_path / "eval.yaml", config)

    main(
        [
            str(config_path),
            "--pair",
            "nrp",
            "nrp_clean",
            "--weights",
            "0",
            "0.5",
            "1",
            "--attacks",
            "FGSM",
        ]
    )
    result = json.loads((tmp_path / "results" / "interpolation.json").read_text())
    assert result["defenses"] == ["none", "t=0", "t=0.5", "t=1"]
    assert result["command"].endswith("--pair nrp nrp_clean --weights 0 0.5 1 --attacks FGSM")
    rows = {r["attack"]: r["error"] for r in result["targets"]["lenet"]["rows"]}
    assert rows["FGSM"]["t=0"] != rows["FGSM"]["t=1"]

    # The same cells from the table itself: t = 0 is nrp, t = 1 is nrp_clean.
    ev = Evaluation(config)
    table: list[dict] = []
    ev.evaluate_target(load_target(config["targets"]["lenet"], ev.device), table)
    for row in table:
        measured = rows[row["attack"]]
        assert measured["t=0"] == row["error"]["nrp"], row["attack"]
        assert measured["t=1"] == row["error"]["nrp_clean"], row["attack"]
        assert measured["none"] == row["error"]["none"], row["attack"]
    assert (tmp_path / "results" / "interpolation.md").read_text().startswith("Weights (1 - t)")

    with pytest.raises(SystemExit, match="no purifier named"):
        main([str(config_path), "--pair", "nrp", "arn"])
