"""STA (Xiao et al. 2018): the warp, the flow smoothness loss, the margin, and the attack
on the committed LeNet."""

from __future__ import annotations

import torch

from tests.conftest import REPO
from training.attacks import build_attack
from training.attacks.stadv import flow_loss, margin_loss, warp
from training.evaluation import load_target


def test_zero_flow_is_the_identity_and_a_unit_flow_samples_the_next_pixel() -> None:
    x = torch.rand(2, 1, 6, 7)
    flow = torch.zeros(2, 2, 6, 7)
    assert torch.allclose(warp(x, flow), x, atol=1e-6)
    flow[:, 0] = 1.0  # sample one pixel to the right
    shifted = warp(x, flow)
    assert torch.allclose(shifted[..., :-1], x[..., 1:], atol=1e-5)
    assert torch.allclose(shifted[..., -1], x[..., -1], atol=1e-5)  # border repeated


def test_flow_loss_charges_differences_between_neighbours_not_a_uniform_shift() -> None:
    uniform = torch.full((1, 2, 8, 8), 0.7)
    rough = torch.zeros(1, 2, 8, 8)
    rough[:, :, ::2, ::2] = 0.7
    assert flow_loss(uniform).item() < 0.05  # only the sqrt guard
    assert flow_loss(rough).item() > 10 * flow_loss(uniform).item() + 1.0


def test_margin_is_positive_until_fooled_then_floored_at_minus_kappa() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 4.0, 1.0]])
    labels = torch.tensor([0, 0])
    untargeted = margin_loss(logits, labels, targeted=False, kappa=2.0)
    assert untargeted.tolist() == [4.0, -2.0]  # image 2 is fooled by 4: floored at -2
    targeted = margin_loss(logits, torch.tensor([1, 1]), targeted=True, kappa=0.0)
    assert targeted.tolist() == [4.0, 0.0]  # image 1: 5 - 1 to go; image 2 is there


def test_the_attack_fools_lenet_with_a_smooth_flow(fmnist_test) -> None:
    model = load_target(REPO / "training/configs/fmnist_lenet.yaml", torch.device("cpu"))
    x, y = fmnist_test[0][:20], fmnist_test[1][:20]
    attack = build_attack({"name": "STA", "kind": "stadv", "steps": 30, "chunk": 20})
    adv = attack(model, x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        clean_error = (model(x).argmax(1) != y).float().mean().item()
        adv_error = (model(adv).argmax(1) != y).float().mean().item()
    assert adv_error >= clean_error + 0.5, (clean_error, adv_error)
    # A flow only resamples: each pixel is a convex mix of the image's own pixels.
    assert (adv.flatten(1).amax(1) <= x.flatten(1).amax(1) + 1e-5).all()
    assert (adv.flatten(1).amin(1) >= x.flatten(1).amin(1) - 1e-5).all()


def test_the_targeted_attack_reaches_its_targets_more_often_than_chance(fmnist_test) -> None:
    model = load_target(REPO / "training/configs/fmnist_lenet.yaml", torch.device("cpu"))
    x, y = fmnist_test[0][:20], fmnist_test[1][:20]
    attack = build_attack({"kind": "stadv", "steps": 30, "targeted": True, "seed": 3})
    targets = attack.random_targets(model, x, y)
    assert (targets != y).all()
    with torch.no_grad():
        reached = (model(attack(model, x, y)).argmax(1) == targets).float().mean().item()
    assert reached >= 0.3  # chance is 1/10
