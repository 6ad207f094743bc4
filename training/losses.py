"""Losses of the purifier objectives (NRP Eq. 5-8) and the distances d(.) of Eq. 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from training.registry import DISTANCES, GAN_LOSSES


def _per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).mean(1)


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample (NRP's choice of d for Delta and L_feat)."""
    return _per_sample_mean((a - b).abs())


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _per_sample_mean((a - b) ** 2)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


for _name, _distance in (
    ("l1", l1_distance),
    ("mae", l1_distance),
    ("l2", l2_distance),
    ("mse", l2_distance),
    ("cosine", cosine_distance),
):
    DISTANCES.add(_name, _distance)


def get_distance(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
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


# ARN (Zhou et al. 2021), Eq. 1-6. Sums over pixels / code units per image follow the
# paper's squared L2 norms; means are over the images of a batch.


def attack_classification_loss(logits: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
    """Eq. 1: D_A's cross-entropy against the one-hot attack-specific labels."""
    return F.cross_entropy(logits, attack)


def uniform_label_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 2: E's loss, the cross-entropy of D_A's prediction against the attack-confused
    label (1/K, ..., 1/K); smallest when D_A cannot tell the attacks apart."""
    return -F.log_softmax(logits, dim=1).mean(1).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 3's KL(P_k || N(0, I)) for a diagonal Gaussian code (closed form, as in a
    VAE), summed over code units, averaged over images."""
    kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())
    return kl.flatten(1).sum(1).mean()


def squared_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ||G(E(x~)) - x||_2^2 per image, averaged over images."""
    return (a - b).pow(2).flatten(1).sum(1).mean()


def image_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 5 (the standard GAN discriminator loss): natural images real, restored fake."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def image_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 6: -log D_I(G(E(x~)))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# NRP's relativistic average GAN (Eq. 7), or the standard GAN of an image discriminator
# (CAFD, ARN Eq. 5-6): (generator loss(real, fake), critic loss(real, fake)).
GAN_LOSSES.add("ragan", (ragan_generator_loss, ragan_critic_loss))
GAN_LOSSES.add(
    "standard", (lambda real, fake: image_generator_loss(fake), image_discriminator_loss)
)
