"""Selecting the images every classifier is sure of, and the agreement floor that says
why the photo table needs it."""

import json

import torch
from torch import nn

from tests.conftest import REPO
from tests.training.helpers import tiny_photo_overrides
from training.config import load_config
from training.evaluation import Evaluation, classifier_specs, load_target
from training.evaluation.confidence import confidence, confident_mask
from training.studies import agreement_floor


class FixedLogits(nn.Module):
    """A 'classifier' that returns given logits, one row per image, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_an_image_is_kept_only_when_every_model_is_sure_of_it():
    sure = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [5.0, 0.0]])
    unsure_on_last = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [0.0, 0.05]])
    x = torch.zeros(4, 3, 2, 2)
    conf = confidence(FixedLogits(sure), x, batch=4)
    assert torch.allclose(conf[0], torch.sigmoid(torch.tensor(5.0)))
    keep = confident_mask([FixedLogits(sure), FixedLogits(unsure_on_last)], x, 0.6, batch=4)
    assert keep.tolist() == [True, True, False, False]


def _tiny_photo_config(tmp_path, *extra):
    return tiny_photo_overrides(8, 32, f"output_dir={tmp_path}", "purifiers={}", *extra)


def test_the_photo_table_can_keep_only_the_confident_crops(tmp_path):
    path = REPO / "training" / "configs" / "photo_eval.yaml"
    full = Evaluation(load_config(path, _tiny_photo_config(tmp_path)))
    models = [full.source] + [
        load_target(spec, full.device) for spec in full.config["targets"].values()
    ]
    # The least sure model per crop; a threshold at their median keeps about half.
    least = torch.stack([confidence(m, full.x, 8) for m in models]).amin(0)
    threshold = least.median().item()
    picked = Evaluation(
        load_config(path, _tiny_photo_config(tmp_path, f"data.min_confidence={threshold}"))
    )
    assert len(picked.x) == int((least >= threshold).sum()) and 0 < len(picked.x) < 8
    assert torch.equal(picked.x, full.x[least >= threshold])
    for model in models:
        assert (confidence(model, picked.x, 8) >= threshold).all()


def test_agreement_floor_is_total_without_noise_and_falls_with_heavy_noise(tmp_path):
    path = REPO / "training" / "configs" / "photo_eval.yaml"
    overrides = _tiny_photo_config(tmp_path)
    args = [str(path), "--psnr", "200", "0", "--threshold", "0.0"]
    for item in overrides:
        args += ["--set", item]
    agreement_floor.main(args)
    result = json.loads((tmp_path / "agreement_floor.json").read_text())
    assert result["num_images"] == 8 and result["confident_images"] == 8
    for rows in result["targets"].values():
        # 200 dB: sigma 1e-10, far below a grey level: no top-1 can move.
        assert rows["200.0"] == {"all": 100.0, "confident": 100.0}
        # 0 dB: sigma 1, the crops are gone.
        assert rows["0.0"]["all"] < 100.0
    assert "| 200 dB |" in (tmp_path / "agreement_floor.md").read_text()


def test_the_photo_source_that_is_also_a_target_is_selected_on_once():
    config = load_config(REPO / "training" / "configs" / "photo_eval.yaml")
    assert classifier_specs(config) == [
        {"arch": "mobilenet_v2_imagenet"},
        {"arch": "efficientnet_lite0_imagenet"},
    ]
