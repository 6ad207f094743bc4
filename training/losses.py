"""Losses of the purifier objectives (NRP Eq. 5-8) and the distances d(.) of Eq. 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).mean(1)


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample (NRP's choice of d for Delta and L_feat)."""
    return _per_sample_mean((a - b).abs())


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _per_sample_mean((a - b) ** 2)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": l1_distance,
    "mae": l1_distance,
    "l2": l2_distance,
    "mse": l2_distance,
    "cosine": cosine_distance,
}


def get_distance(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in DISTANCES:
        raise KeyError(f"unknown distance {name!r}; known: {sorted(DISTANCES)}")
    return DISTANCES[name]


def ragan_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss for the purifier (NRP Eq. 7, in the symmetric form of
    Jolicoeur-Martineau [23] that NRP cites): purified images should look more real than
    the average real image, and real images less real than the average purified one."""
    ones, zeros = torch.ones_like(fake_logits), torch.zeros_like(real_logits)
    fake_vs_real = F.binary_cross_entropy_with_logits(fake_logits - real_logits.mean(), ones)
    real_vs_fake = F.binary_cross_entropy_with_logits(real_logits - fake_logits.mean(), zeros)
    return 0.5 * (fake_vs_real + real_vs_fake)


def ragan_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The critic's side (Alg. 2 step 6): tell x from P(x'), relative to the other's mean."""
    ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
    real_vs_fake = F.binary_cross_entropy_with_logits(real_logits - fake_logits.mean(), ones)
    fake_vs_real = F.binary_cross_entropy_with_logits(fake_logits - real_logits.mean(), zeros)
    return 0.5 * (real_vs_fake + fake_vs_real)
