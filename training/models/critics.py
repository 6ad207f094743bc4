"""Critics (discriminators). NRP's C_phi (Sec. 3.3): VGG-style, five convolutional blocks
of conv + batch-norm + leaky-ReLU, then a fully connected layer. Global average pooling
before the FC layer lets one critic take 28x28 digits and 128x128 crops."""

from __future__ import annotations

import torch
from torch import nn

from training.registry import MODELS


def _conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]


class VGGCritic(nn.Module):
    def __init__(self, in_channels: int = 3, nf: int = 32) -> None:
        super().__init__()
        widths = [nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf]
        layers: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            layers += _conv_bn(cin, w, 1) + _conv_bn(w, w, 2)
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(cin, 100),
            nn.LeakyReLU(0.2),
            nn.Linear(100, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


@MODELS.register("vgg_critic")
def vgg_critic(in_channels: int = 3, nf: int = 32) -> VGGCritic:
    return VGGCritic(in_channels, nf)
