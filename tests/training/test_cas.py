"""CAS keeps shapes, suppresses channels by the class's importance weights (the label in
training, the auxiliary prediction at test), and its loss trains the auxiliary head; PGD
on that loss (the CAS authors' attack) stays in budget and breaks what CE alone masks,
and the stand-ins for crafting on CAS (the CAS heads; straight-through) unmask more."""

import pytest
import torch

from tests.conftest import REPO
from training.models.cas import CAS, cas_loss


def test_shape_and_suppression_follow_the_class_weights():
    cas = CAS(channels=4, num_classes=3)
    with torch.no_grad():
        cas.importance.weight.copy_(
            torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
        )
    f = torch.ones(2, 4, 5, 5)
    out = cas(f, labels=torch.tensor([1, 2]))
    assert out.shape == f.shape
    assert out[0, :, 0, 0].tolist() == [0.0, 2.0, 0.0, 0.0]  # only class 1's channel, x2
    assert out[1, :, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_without_labels_the_auxiliary_prediction_chooses_the_weights():
    cas = CAS(channels=2, num_classes=2)
    with torch.no_grad():
        cas.importance.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    f = torch.zeros(1, 2, 3, 3)
    f[:, 1] = 5.0  # channel 1 is active: the auxiliary head predicts class 1
    out = cas(f)
    assert cas.aux_logits.argmax(1).item() == 1
    assert torch.equal(out, f * torch.tensor([0.0, 1.0])[None, :, None, None])


def test_cas_loss_is_beta_times_the_mean_cross_entropy_and_trains_the_head():
    torch.manual_seed(0)
    modules = [CAS(8, 3), CAS(8, 3)]
    f = torch.randn(16, 8, 4, 4)
    y = torch.randint(0, 3, (16,))
    for m in modules:
        m(f, y)
    loss = cas_loss(modules, y, beta=2.0)
    expected = (
        2.0
        * torch.stack([torch.nn.functional.cross_entropy(m.aux_logits, y) for m in modules]).mean()
    )
    assert torch.allclose(loss, expected)
    opt = torch.optim.SGD([p for m in modules for p in m.parameters()], lr=0.5)
    first = loss.item()
    for _ in range(20):
        for m in modules:
            m(f, y)
        loss = cas_loss(modules, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_cas_loss_needs_a_forward_pass():
    with pytest.raises(ValueError):
        cas_loss([CAS(2, 2)], torch.tensor([0]))


def _cas_lenet() -> torch.nn.Module:
    from training.models import build_model

    return build_model(
        {"arch": "cas", "base": {"arch": "lenet", "in_channels": 1}, "after": ["relu2"]}
    )


def test_cas_classifier_reweights_by_label_in_training_and_prediction_at_test():
    torch.manual_seed(0)
    model = _cas_lenet().eval()
    x = torch.rand(4, 1, 28, 28)
    assert model.cas["relu2"].importance.in_features == 64  # LeNet's conv2 channels
    predicted = model.cas["relu2"]
    logits = model(x)
    y_hat = predicted.aux_logits.argmax(1)
    assert torch.allclose(model(x, y_hat), logits)  # test time = its own prediction's weights
    other = (y_hat + 1) % 10
    assert not torch.allclose(model(x, other), logits)


def test_cas_classifier_rejects_an_unknown_layer():
    from training.models import build_model

    with pytest.raises(ValueError, match="unknown layers"):
        build_model({"arch": "cas", "base": {"arch": "lenet"}, "after": ["conv9"]})


@pytest.mark.parametrize("cas", [False, True])
def test_one_adversarial_training_step_lowers_the_loss_on_its_adversaries(cas, fmnist_test):
    from training.methods.adversarial import AdversarialTrainer

    base = {"arch": "lenet", "in_channels": 1, "num_classes": 10}
    model = {"arch": "cas", "base": {"arch": "lenet", "in_channels": 1}, "after": ["relu2"]}
    config = {
        "model": model if cas else base,
        # as the configs: CAS models train on adversaries of the CAS loss
        "attack": {"kind": "pgd_cas" if cas else "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2},
        "train": {"lr": 1e-3},
    }
    torch.manual_seed(0)
    trainer = AdversarialTrainer(config, torch.device("cpu"))
    assert trainer.cas is cas
    x, y = fmnist_test[0][:64], fmnist_test[1][:64]
    trainer.model.eval()
    x_adv = trainer.attack(trainer.model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6

    def loss() -> float:
        trainer.model.train()  # BatchNorm-free LeNet: train mode only routes CAS by label
        with torch.no_grad():
            logits = trainer.model(x_adv, y) if cas else trainer.model(x_adv)
            total = torch.nn.functional.cross_entropy(logits, y)
            if cas:
                total = total + cas_loss(trainer.model.cas_modules(), y)
        return total.item()

    before = loss()
    for _ in range(3):
        metrics = trainer.step(x, y)
    assert loss() < before
    if cas:  # the auxiliary heads' cross-entropy is part of the loss
        assert metrics["cas"] > 0 and metrics["loss"] > metrics["ce"]
    else:
        assert metrics["loss"] == metrics["ce"]
    scores = trainer.validate(x[:16], y[:16])
    assert 0 <= scores["val_clean_err"] <= 100 and 0 <= scores["val_attacked_err"] <= 100


def test_pgd_on_the_cas_loss_is_torchattacks_pgd_on_a_model_without_cas(fmnist_test):
    """No CAS modules: the objective is CE alone and the steps are torchattacks'."""
    from training.attacks import build_attack
    from training.evaluation import load_target

    model = load_target(REPO / "training/configs/fmnist_lenet.yaml", torch.device("cpu"))
    x, y = fmnist_test[0][:32], fmnist_test[1][:32]
    budget = {"eps": 0.1, "alpha": 0.01, "steps": 10}
    torch.manual_seed(0)
    x_ours = build_attack({"kind": "pgd_cas", **budget})(model, x, y)
    torch.manual_seed(0)
    x_theirs = build_attack({"kind": "pgd", **budget})(model, x, y)
    assert torch.allclose(x_ours, x_theirs, atol=1e-6)
    assert not torch.allclose(x_ours, x)


@pytest.fixture(scope="module")
def at_cas_lenet() -> torch.nn.Module:
    from training.evaluation import load_target

    return load_target(REPO / "training/configs/fmnist_lenet_at_cas.yaml", torch.device("cpu"))


def _errors(model: torch.nn.Module, images: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(images).argmax(1) != y).sum())


def test_pgd_on_the_cas_loss_stays_in_budget_raises_it_and_beats_plain_pgd(
    fmnist_test, at_cas_lenet
):
    """On the committed AT+CAS LeNet, CE alone barely moves the argmax-chosen weights
    (gradient masking); the CAS authors' objective flips them and fools more images."""
    from training.attacks.cas_pgd import CASLossPGD
    from training.attacks.library import build_attack

    model = at_cas_lenet
    x, y = fmnist_test[0][:128], fmnist_test[1][:128]
    attack = CASLossPGD(eps=0.1, alpha=0.01, steps=20)
    torch.manual_seed(0)
    adv = attack(model, x, y)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert attack.loss(model, adv, y) > attack.loss(model, x, y) + 0.5
    torch.manual_seed(0)
    plain = build_attack({"kind": "pgd", "eps": 0.1, "alpha": 0.01, "steps": 20})(model, x, y)
    errors = (_errors(model, x, y), _errors(model, plain, y), _errors(model, adv, y))
    assert errors[2] >= errors[1] + 10, errors


def test_crafting_on_the_cas_heads_fools_more_than_the_authors_loss(fmnist_test, at_cas_lenet):
    """PGD on the CAS heads' logits is the CAS loss without the masked CE term, which
    dilutes the authors' gradient: more of the AT+CAS LeNet's own predictions flip."""
    from training.attacks.library import build_attack

    model = at_cas_lenet
    x, y = fmnist_test[0][:128], fmnist_test[1][:128]
    budget = {"eps": 0.1, "alpha": 0.01, "steps": 20}
    torch.manual_seed(0)
    authors = build_attack({"kind": "pgd_cas", **budget})(model, x, y)
    torch.manual_seed(0)
    heads = build_attack({"kind": "pgd", "surrogate": "cas_heads", **budget})(model, x, y)
    assert (heads - x).abs().max() <= 0.1 + 1e-6 and heads.min() >= 0 and heads.max() <= 1
    assert _errors(model, heads, y) >= _errors(model, authors, y) + 10


def test_the_straight_through_stand_in_is_exact_forward_and_unmasks_the_gradient(
    fmnist_test, at_cas_lenet
):
    """Forward: the CAS classifier's logits (to float rounding). Backward: the argmax's soft
    stand-in carries a gradient that the argmax does not. The classifier is left exact;
    CW on the stand-in fools more than CW on the classifier."""
    from training.attacks.cas_surrogates import CASStraightThrough
    from training.attacks.library import build_attack

    model = at_cas_lenet
    x, y = fmnist_test[0][:64], fmnist_test[1][:64]
    stand_in = CASStraightThrough(model).eval()

    def input_grad(net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        xg = x.clone().requires_grad_(True)
        out = net(xg)
        # The true class's logit margin over the others' mean: not saturated like CE.
        margin = (out.gather(1, y[:, None]) - out.mean(1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(margin, xg)
        return out.detach(), grad

    out_model, grad_model = input_grad(model)
    out_stand_in, grad_stand_in = input_grad(stand_in)
    assert torch.allclose(out_model, out_stand_in, atol=1e-4)  # w + soft - soft: rounding
    assert not torch.allclose(grad_model, grad_stand_in)
    assert not any(m.straight_through for m in stand_in.heads)
    cw = {"kind": "cw", "c": 1.0, "steps": 50, "lr": 0.01}
    plain = build_attack(cw)(model, x, y)
    through = build_attack({**cw, "surrogate": "cas_straight_through"})(model, x, y)
    assert _errors(model, through, y) >= _errors(model, plain, y) + 5


def test_a_surrogate_needs_cas_modules_and_a_known_name(fmnist_test):
    from training.attacks.library import build_attack
    from training.evaluation import load_target

    model = load_target(REPO / "training/configs/fmnist_lenet.yaml", torch.device("cpu"))
    x, y = fmnist_test[0][:4], fmnist_test[1][:4]
    with pytest.raises(ValueError, match="needs a model with CAS modules"):
        build_attack({"kind": "fgsm", "eps": 0.1, "surrogate": "cas_heads"})(model, x, y)
    with pytest.raises(KeyError, match="unknown surrogate"):
        build_attack({"kind": "fgsm", "eps": 0.1, "surrogate": "logits"})


def test_batch_augment_shifts_and_mirrors_each_image_on_its_own():
    """The CAS authors' recipe: every output is its image zero-padded by 4 and cropped back
    at some offset, maybe mirrored; offsets are drawn per image, not per batch."""
    from torch.nn.functional import pad

    from training.methods.adversarial import batch_augment

    image = torch.arange(1.0, 1.0 + 28 * 28).reshape(1, 28, 28)  # every pixel distinct
    padded = pad(image, (4, 4, 4, 4))
    crops = [padded[:, i : i + 28, j : j + 28] for i in range(9) for j in range(9)]
    candidates = torch.stack([*crops, *(c.flip(-1) for c in crops)])
    torch.manual_seed(0)
    out = batch_augment({"crop_padding": 4, "hflip": True})(image.expand(64, 1, 28, 28))
    assert out.shape == (64, 1, 28, 28)
    matches = [(candidates == o).flatten(1).all(1).nonzero().flatten().tolist() for o in out]
    assert all(len(m) == 1 for m in matches)
    assert len({m[0] for m in matches}) > 20  # per-image draws, some of them mirrored
    assert any(m[0] >= len(crops) for m in matches)
    x = torch.rand(4, 1, 28, 28)
    assert batch_augment(None)(x) is x
    with pytest.raises(KeyError, match=r"unknown train\.augment"):
        batch_augment({"rotate": 10})
