import pytest
import torch

from training.attacks import SSP
from training.models import build_feature_extractor


@pytest.fixture
def extractor(tiny_models):
    spec = {
        "model": {"arch": "vgg_small", "in_channels": 1, "width": 8},
        "weights": tiny_models["vgg"],
        "layer": "relu2_2",
    }
    return build_feature_extractor(spec)


def test_ssp_stays_inside_eps_and_image_range(extractor, fmnist_test):
    x = fmnist_test[0][:32]
    torch.manual_seed(0)
    x_adv = SSP(extractor, eps=0.1, steps=5)(x)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_ssp_raises_feature_distortion_over_its_random_start(extractor, fmnist_test):
    x = fmnist_test[0][:32]
    one_step = SSP(extractor, eps=0.1, steps=1, step_size=1e-9)  # the random start only
    ssp = SSP(extractor, eps=0.1, steps=10)
    torch.manual_seed(0)
    random_start = one_step.feature_distortion(x, one_step(x))
    torch.manual_seed(0)
    attacked = ssp.feature_distortion(x, ssp(x))
    assert attacked.mean() > 2 * random_start.mean()
    assert (attacked > random_start).float().mean() > 0.9


def test_more_ssp_steps_distort_more(extractor, fmnist_test):
    x = fmnist_test[0][:32]
    values = []
    for steps in (1, 4, 12):
        torch.manual_seed(0)
        attack = SSP(extractor, eps=0.1, steps=steps, step_size=0.025)
        values.append(attack.feature_distortion(x, attack(x)).mean().item())
    assert values[0] < values[1] < values[2]


def test_ssp_uses_no_labels_and_no_classifier(extractor, fmnist_test):
    # The call takes images only: the perturbation is self-supervised (NRP Sec. 3.1).
    x = fmnist_test[0][:4]
    assert SSP(extractor, eps=0.05, steps=1)(x).shape == x.shape


def test_feature_extractor_rejects_unknown_layer(tiny_models):
    spec = {
        "model": {"arch": "vgg_small", "in_channels": 1, "width": 8},
        "weights": tiny_models["vgg"],
        "layer": "conv9_9",
    }
    with pytest.raises(ValueError, match="conv3_3"):
        build_feature_extractor(spec)


def test_feature_extractor_is_frozen(extractor):
    extractor.train()
    assert not extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())


def test_build_attack_hands_ssp_the_extractor_and_refuses_a_surrogate(extractor, fmnist_test):
    from training.attacks import build_attack

    x = fmnist_test[0][:4]
    spec = {"name": "SSP", "kind": "ssp", "eps": 0.1, "steps": 2, "seen": True}
    torch.manual_seed(0)
    x_adv = build_attack(spec, extractor)(None, x, None)  # no model, no labels
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_adv, x)
    with pytest.raises(ValueError, match="needs the feature extractor"):
        build_attack(spec)
    with pytest.raises(ValueError, match=r"ssp attacks a feature extractor.*no surrogate"):
        build_attack({**spec, "surrogate": "mobilenet_v2"}, extractor)
