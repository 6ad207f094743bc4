"""BPDA (Athalye et al. 2018): run a defense forward, approximate its backward pass by
the identity, so gradient attacks see through non-differentiable pre-processing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class BPDAWrapper(nn.Module):
    """forward: defense(x); backward: d defense(x) / dx := I (straight-through)."""

    def __init__(self, defense: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.defense = defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            purified = self.defense(x.detach())
        return x + (purified - x).detach()
