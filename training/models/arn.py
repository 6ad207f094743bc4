"""ARN (Zhou et al., ICML 2021, "Towards Defending against Adversarial Examples via
Attack-Invariant Features"): encoder E, decoder G and the attack discriminator D_A.

The paper does not give the networks' layers; as in the authors' code, E is a
convolutional VAE encoder (mean and log-variance heads, so that the normalisation term of
Eq. 3 can pull each attack's code distribution to N(0, I)) and G a transposed-convolution
decoder. Unlike the authors' 1x1 code, the code here keeps a spatial map (stride 4), so
the purifier is fully convolutional and serves images of any size. The defense is
G(E(x)): the mean code at inference, a reparameterised sample in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.registry import MODELS


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())


class ARNAutoencoder(nn.Module):
    """G(E(x)). Any H and W: padded (edge replication) to a multiple of 4 inside the
    graph and cropped back, so the ONNX export takes any size."""

    size_multiple = 1

    def __init__(self, in_channels: int = 1, nf: int = 64, code_channels: int = 32) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = nn.Sequential(_down(in_channels, nf), _down(nf, 2 * nf))
        self.mu = nn.Conv2d(2 * nf, code_channels, 3, 1, 1)
        self.logvar = nn.Conv2d(2 * nf, code_channels, 3, 1, 1)
        self.decoder = nn.Sequential(
            _up(code_channels, 2 * nf),
            _up(2 * nf, nf),
            nn.Conv2d(nf, in_channels, 3, 1, 1),
            nn.Sigmoid(),
        )

    @staticmethod
    def pad(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        return F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4), mode="replicate")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E(x) as the mean and log-variance of a diagonal Gaussian code."""
        h = self.encoder(self.pad(x))
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(x)
        code = self.sample(mu, logvar) if self.training else mu
        return self.decode(code)[:, :, : x.shape[2], : x.shape[3]]


class AttackDiscriminator(nn.Module):
    """D_A: predicts which attack (of K seen types) produced a code E(x~) (Eq. 1).
    Global pooling after two convolutions lets it judge codes of any spatial size."""

    def __init__(self, code_channels: int = 32, num_attacks: int = 2, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(code_channels, width, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_attacks),
        )

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code)


@MODELS.register("arn")
def arn(in_channels: int = 1, nf: int = 64, code_channels: int = 32) -> ARNAutoencoder:
    return ARNAutoencoder(in_channels, nf, code_channels)


@MODELS.register("arn_attack_discriminator")
def arn_attack_discriminator(
    code_channels: int = 32, num_attacks: int = 2, width: int = 128
) -> AttackDiscriminator:
    return AttackDiscriminator(code_channels, num_attacks, width)
