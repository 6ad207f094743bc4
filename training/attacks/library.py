"""Standard attacks from maintained libraries behind one registry.

`build_attack(spec)` returns `attack(model, x, y) -> x_adv`. torchattacks provides the
L-inf and CW attacks, Square and APGD; foolbox provides DDN (torchattacks has none) and
the rotation + translation attack. SSP (ssp.py; it needs the feature extractor, passed
in), STA (stadv.py), PGD on the CAS loss (cas_pgd.py) and the CAS stand-ins that any of them
can be crafted on (`surrogate`, cas_surrogates.py) are ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from training.attacks import cas_surrogates  # noqa: F401  (registers the stand-ins)
from training.attacks.cas_pgd import CASLossPGD
from training.attacks.ssp import SSP
from training.attacks.stadv import SpatialTransformAttack
from training.registry import ATTACKS, SURROGATES

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
T = TypeVar("T")


def budget_label(label: Callable[[dict[str, Any]], str]) -> Callable[[T], T]:
    """Give an attack with no L-p budget the label its table rows print (`budget_text`)."""

    def attach(builder: T) -> T:
        builder.budget_text = label  # type: ignore[attr-defined]
        return builder

    return attach


def on_features(builder: T) -> T:
    """Mark an attack that distorts a feature extractor's output rather than the model's
    prediction: build_attack hands it the extractor, and it takes no surrogate."""
    builder.needs_features = True  # type: ignore[attr-defined]
    return builder


def _torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "torchattacks is not installed: `pip install --no-deps torchattacks==3.5.1` "
            "(make test installs it)"
        ) from err
    return torchattacks


@ATTACKS.register("fgsm")
def _fgsm(eps: float) -> Attack:
    return lambda model, x, y: _torchattacks().FGSM(model, eps=eps)(x, y)


@ATTACKS.register("pgd")
def _pgd(
    eps: float, alpha: float, steps: int, targeted: bool = False, random_start: bool = True
) -> Attack:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        atk = _torchattacks().PGD(
            model, eps=eps, alpha=alpha, steps=steps, random_start=random_start
        )
        if targeted:
            atk.set_mode_targeted_random()  # a random wrong class per image
        return atk(x, y)

    return run


@ATTACKS.register("mifgsm")
def _mifgsm(eps: float, alpha: float, steps: int, decay: float = 1.0) -> Attack:
    return lambda model, x, y: _torchattacks().MIFGSM(
        model, eps=eps, alpha=alpha, steps=steps, decay=decay
    )(x, y)


@ATTACKS.register("dim")
def _dim(
    eps: float, alpha: float, steps: int, decay: float = 1.0, diversity_prob: float = 0.5
) -> Attack:
    """DIM: momentum + diverse inputs (random resize and pad each step; Xie et al.)."""
    return lambda model, x, y: _torchattacks().DIFGSM(
        model, eps=eps, alpha=alpha, steps=steps, decay=decay, diversity_prob=diversity_prob
    )(x, y)


@ATTACKS.register("tidim")
def _tidim(
    eps: float,
    alpha: float,
    steps: int,
    decay: float = 1.0,
    len_kernel: int = 15,
    diversity_prob: float = 0.5,
) -> Attack:
    """TI-DIM: DIM with translation-invariant (Gaussian-smoothed) gradients (Dong et al.)."""
    return lambda model, x, y: _torchattacks().TIFGSM(
        model,
        eps=eps,
        alpha=alpha,
        steps=steps,
        decay=decay,
        len_kernel=len_kernel,
        diversity_prob=diversity_prob,
    )(x, y)


@budget_label(lambda spec: f"L2 min (c={spec.get('c', 1.0)})")
@ATTACKS.register("cw")
def _cw(c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01) -> Attack:
    return lambda model, x, y: _torchattacks().CW(model, c=c, kappa=kappa, steps=steps, lr=lr)(x, y)


@ATTACKS.register("apgd")
def _apgd(eps: float, steps: int = 100, n_restarts: int = 1) -> Attack:
    """APGD-CE then APGD-DLR on the images CE did not break (AutoAttack's first two)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ta = _torchattacks()
        ce = ta.APGD(model, eps=eps, steps=steps, n_restarts=n_restarts, loss="ce")
        dlr = ta.APGD(model, eps=eps, steps=steps, n_restarts=n_restarts, loss="dlr")
        return ta.MultiAttack([ce, dlr])(x, y)

    return run


@ATTACKS.register("square")
def _square(eps: float, n_queries: int = 1000, p_init: float = 0.8) -> Attack:
    return lambda model, x, y: _torchattacks().Square(
        model, eps=eps, n_queries=n_queries, p_init=p_init, loss="margin"
    )(x, y)


@ATTACKS.register("ddn")
def _ddn(steps: int = 100, l2_eps: float = 2.0, gamma: float = 0.05) -> Attack:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import foolbox

        fmodel = foolbox.PyTorchModel(model.eval(), bounds=(0, 1), device=x.device)
        attack = foolbox.attacks.DDNAttack(steps=steps, gamma=gamma)
        _, clipped, _ = attack(fmodel, x, y, epsilons=l2_eps)
        return clipped.detach()

    return run


@budget_label(
    lambda spec: (
        f"rot {spec.get('max_rotation', 30.0)} deg, shift {spec.get('max_translation', 3.0)} px"
    )
)
@ATTACKS.register("spatial")
def _spatial(
    max_translation: float = 3.0,
    max_rotation: float = 30.0,
    num_translations: int = 5,
    num_rotations: int = 5,
) -> Attack:
    """Rotation + translation grid search (Engstrom et al.; foolbox's SpatialAttack): a
    spatially constrained attack with no L-p budget, like ARN's STA rows."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import foolbox

        fmodel = foolbox.PyTorchModel(model.eval(), bounds=(0, 1), device=x.device)
        attack = foolbox.attacks.SpatialAttack(
            max_translation=max_translation,
            max_rotation=max_rotation,
            num_translations=num_translations,
            num_rotations=num_rotations,
            grid_search=True,
        )
        _, adv, _ = attack(fmodel, x, y)
        return adv.detach()

    return run


@ATTACKS.register("uniform_noise")
def _uniform_noise(eps: float) -> Attack:
    """Not an attack: uniform noise in the L-inf ball, the control every purifier must
    also leave harmless (HGD trains on noise beside its attacks)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)

    return run


# Ours, registered here beside the library ones: see stadv.py and cas_pgd.py for why.
ATTACKS.add(
    "stadv",
    budget_label(lambda spec: f"flow smoothness (tau={spec.get('tau', 0.05)})")(
        SpatialTransformAttack
    ),
)
ATTACKS.add("pgd_cas", CASLossPGD)


@ATTACKS.register("ssp")
@on_features
def _ssp(feature_extractor: nn.Module | None = None, **params: Any) -> Attack:
    """SSP (ssp.py) distorts a feature extractor's output, not the model's prediction."""
    if feature_extractor is None:
        raise ValueError("the SSP attack needs the feature extractor")
    ssp = SSP(feature_extractor, **params)
    return lambda model, x, y: ssp(x)


# Keys of an attack spec that describe the evaluation, not the attack's parameters.
# `eot` (noise draws averaged per step) and `batch` (images per attack batch) are the
# evaluation's, for adaptive rows against randomised purifiers (training.attacks.eot).
_META_KEYS = ("name", "kind", "adaptive", "seen", "only", "feature_extractor", "eot", "batch")


def build_attack(spec: dict[str, Any], feature_extractor: nn.Module | None = None) -> Attack:
    """The spec's attack; with `surrogate` (training.attacks.cas_surrogates), crafted on
    that stand-in for the model it is given."""
    params = {k: v for k, v in spec.items() if k not in _META_KEYS}
    surrogate = params.pop("surrogate", None)
    builder = ATTACKS[spec["kind"]]
    if getattr(builder, "needs_features", False):
        if surrogate is not None:
            raise ValueError(
                f"{spec['kind']} attacks a feature extractor, not the model: no surrogate"
            )
        return builder(feature_extractor, **params)
    attack = builder(**params)
    if surrogate is None:
        return attack
    stand_in = SURROGATES[surrogate]
    return lambda model, x, y: attack(stand_in(model).eval(), x, y)


def budget_text(spec: dict[str, Any]) -> str:
    """The row's budget as the tables print it: the L-p ball, else the attack's own label."""
    if "eps" in spec:
        return f"Linf {spec['eps']}"
    if "l2_eps" in spec:
        return f"L2 {spec['l2_eps']}"
    label = getattr(ATTACKS[spec["kind"]], "budget_text", None)
    return label(spec) if label else "-"
