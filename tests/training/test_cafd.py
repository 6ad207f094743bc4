"""CAFD's parts: class activation features follow CAM (predicted class's output weights
on the last conv features), CAFA stays in budget and raises the CAF distance, and one
CAFD step lowers its objective."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.helpers import purifier_loss_before_and_after_one_step
from training.attacks.ssp import SSP
from training.methods.nrp import NRPTrainer
from training.models import build_feature_extractor, build_model
from training.models.cam import ClassActivationFeatures


@pytest.fixture
def caf(tiny_models: dict[str, Path]) -> ClassActivationFeatures:
    spec = {"arch": "vgg_small", "in_channels": 1, "width": 8}
    return build_feature_extractor(
        {"model": spec, "weights": str(tiny_models["vgg"]), "layer": "class_activation"}
    )


def test_features_are_the_predicted_class_weights_on_the_last_conv_features(caf, fmnist_test):
    x = fmnist_test[0][:4]
    c = caf.classifier
    with torch.no_grad():
        features = c.features(c.normalize(x))
        predicted = c.head(features).argmax(1)
        out = caf(x)
    assert out.shape == features.shape and out.min() >= 0 and out.amax() <= 1
    for i in range(4):
        manual = torch.relu(features[i] * c.head[-1].weight[predicted[i]][:, None, None])
        assert torch.allclose(out[i], manual / manual.max(), atol=1e-6)


def test_a_head_without_global_pooling_is_refused():
    with pytest.raises(ValueError, match="global-average-pooling"):
        ClassActivationFeatures(build_model({"arch": "lenet", "in_channels": 1}))


def test_cafa_stays_in_budget_and_disrupts_class_activation_features(caf, fmnist_test):
    x = fmnist_test[0][:16]
    cafa = SSP(caf, eps=0.1, steps=5, step_size=0.03, distance="l2")
    torch.manual_seed(0)
    x_adv = cafa(x)
    noise = (x + torch.empty_like(x).uniform_(-0.1, 0.1)).clamp(0, 1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        moved = cafa.distance(caf(x), caf(x_adv)).mean()
        random = cafa.distance(caf(x), caf(noise)).mean()
    assert moved > random


def test_one_cafd_step_lowers_its_objective(nrp_config, fmnist_test, tiny_models):
    nrp_config["method"] = "cafd"
    nrp_config["feature_extractor"]["layer"] = "class_activation"
    nrp_config["ssp"].update(distance="l2")
    nrp_config["loss"] = {"alpha": 1e-3, "gamma": 0.0, "lambda": 1.0,
                          "feature_distance": "l2", "gan": "standard"}  # fmt: skip
    before, after = purifier_loss_before_and_after_one_step(nrp_config, fmnist_test[0][:32])
    assert after < before


def test_unknown_gan_loss_is_refused(nrp_config):
    nrp_config["loss"] = {"gan": "wasserstein"}
    with pytest.raises(KeyError, match="unknown gan loss"):
        NRPTrainer(nrp_config, torch.device("cpu"))


def test_the_residual_denoiser_adds_its_correction_to_the_input_and_nrp_does_not(fmnist_test):
    x = fmnist_test[0][:2, :, :27, :26]  # odd sizes: the padding path too
    spec = {"arch": "nrp_unet", "in_channels": 1, "nf": 8, "width": 8, "gc": 8, "blocks": 1}
    for residual in (True, False):
        net = build_model({**spec, "residual": residual}).eval()
        last = net.tail[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        with torch.no_grad():
            out = net(x)
        # With a zero correction CAFD's denoiser is the identity; NRP's generator (no
        # input-to-output skip) outputs nothing of the input.
        expected = x if residual else torch.zeros_like(x)
        assert torch.allclose(out, expected, atol=1e-6)


def test_the_cafd_config_uses_the_residual_denoiser_and_the_authors_loss_weights():
    from training.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "training/configs/fmnist_cafd.yaml")
    assert cfg["purifier"]["residual"] is True
    assert cfg["loss"]["gamma"] == 0  # no pixel loss: the paper trains in CAF space
    assert cfg["loss"]["alpha"] / cfg["loss"]["lambda"] == pytest.approx(5e-6)
