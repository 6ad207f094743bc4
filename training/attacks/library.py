"""Standard attacks from maintained libraries behind one registry.

`build_attack(spec)` returns `attack(model, x, y) -> x_adv`. torchattacks provides the
L-inf and CW attacks, Square and APGD; foolbox provides DDN (torchattacks has none) and
the rotation + translation attack. SSP (ssp.py; it needs the feature extractor, passed
in), STA (stadv.py), PGD on the CAS loss (cas_pgd.py) and the CAS stand-ins that any of them
can be crafted on (`surrogate`, cas_surrogates.py) are ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from training.attacks.cas_pgd import CASLossPGD
from training.attacks.cas_surrogates import SURROGATES
from training.attacks.ssp import SSP
from training.attacks.stadv import SpatialTransformAttack

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "torchattacks is not installed: `pip install --no-deps torchattacks==3.5.1` "
            "(make test installs it)"
        ) from err
    return torchattacks


def _fgsm(eps: float) -> Attack:
    return lambda model, x, y: _torchattacks().FGSM(model, eps=eps)(x, y)


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


def _mifgsm(eps: float, alpha: float, steps: int, decay: float = 1.0) -> Attack:
    return lambda model, x, y: _torchattacks().MIFGSM(
        model, eps=eps, alpha=alpha, steps=steps, decay=decay
    )(x, y)


def _dim(
    eps: float, alpha: float, steps: int, decay: float = 1.0, diversity_prob: float = 0.5
) -> Attack:
    """DIM: momentum + diverse inputs (random resize and pad each step; Xie et al.)."""
    return lambda model, x, y: _torchattacks().DIFGSM(
        model, eps=eps, alpha=alpha, steps=steps, decay=decay, diversity_prob=diversity_prob
    )(x, y)


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


def _cw(c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01) -> Attack:
    return lambda model, x, y: _torchattacks().CW(model, c=c, kappa=kappa, steps=steps, lr=lr)(x, y)


def _apgd(eps: float, steps: int = 100, n_restarts: int = 1) -> Attack:
    """APGD-CE then APGD-DLR on the images CE did not break (AutoAttack's first two)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ta = _torchattacks()
        ce = ta.APGD(model, eps=eps, steps=steps, n_restarts=n_restarts, loss="ce")
        dlr = ta.APGD(model, eps=eps, steps=steps, n_restarts=n_restarts, loss="dlr")
        return ta.MultiAttack([ce, dlr])(x, y)

    return run


def _square(eps: float, n_queries: int = 1000, p_init: float = 0.8) -> Attack:
    return lambda model, x, y: _torchattacks().Square(
        model, eps=eps, n_queries=n_queries, p_init=p_init, loss="margin"
    )(x, y)


def _ddn(steps: int = 100, l2_eps: float = 2.0, gamma: float = 0.05) -> Attack:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import foolbox

        fmodel = foolbox.PyTorchModel(model.eval(), bounds=(0, 1), device=x.device)
        attack = foolbox.attacks.DDNAttack(steps=steps, gamma=gamma)
        _, clipped, _ = attack(fmodel, x, y, epsilons=l2_eps)
        return clipped.detach()

    return run


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


def _uniform_noise(eps: float) -> Attack:
    """Not an attack: uniform noise in the L-inf ball, the control every purifier must
    also leave harmless (HGD trains on noise beside its attacks)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)

    return run


ATTACKS: dict[str, Callable[..., Attack]] = {
    "fgsm": _fgsm,
    "uniform_noise": _uniform_noise,
    "pgd": _pgd,
    "mifgsm": _mifgsm,
    "dim": _dim,
    "tidim": _tidim,
    "cw": _cw,
    "apgd": _apgd,
    "square": _square,
    "ddn": _ddn,
    "spatial": _spatial,
    "stadv": SpatialTransformAttack,  # ours: see training/attacks/stadv.py for why
    "pgd_cas": CASLossPGD,  # ours: PGD on the CAS loss, see training/attacks/cas_pgd.py
}
# Keys of an attack spec that describe the evaluation, not the attack's parameters.
_META_KEYS = ("name", "kind", "adaptive", "seen", "only", "feature_extractor")


def build_attack(spec: dict[str, Any], feature_extractor: nn.Module | None = None) -> Attack:
    """The spec's attack; with `surrogate` (training.attacks.cas_surrogates), crafted on
    that stand-in for the model it is given."""
    params = {k: v for k, v in spec.items() if k not in _META_KEYS}
    surrogate = params.pop("surrogate", None)
    kind = spec["kind"]
    if kind == "ssp":
        if feature_extractor is None:
            raise ValueError("the SSP attack needs the feature extractor")
        if surrogate is not None:
            raise ValueError("SSP attacks a feature extractor, not the model: no surrogate")
        ssp = SSP(feature_extractor, **params)
        return lambda model, x, y: ssp(x)
    if kind not in ATTACKS:
        raise KeyError(f"unknown attack {kind!r}; known: {sorted([*ATTACKS, 'ssp'])}")
    attack = ATTACKS[kind](**params)
    if surrogate is None:
        return attack
    if surrogate not in SURROGATES:
        raise KeyError(f"unknown surrogate {surrogate!r}; known: {sorted(SURROGATES)}")
    stand_in = SURROGATES[surrogate]
    return lambda model, x, y: attack(stand_in(model).eval(), x, y)
