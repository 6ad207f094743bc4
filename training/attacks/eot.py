"""EOT, Expectation over Transformation (Athalye, Carlini and Wagner, ICML 2018, Sec. 4):
against a randomised defense t ~ T, attack the expectation E_t[f(t(x))] instead of one
draw. Here the randomness is the purifier's fresh noise: every forward pass runs `draws`
copies of each image through the front (each copy meets its own noise) and the model,
and returns the mean of their logits, so every gradient step of an attack averages its
gradient over `draws` noise draws (the loss of the mean logits: the logit-space form of
the expectation; Athalye et al. average the loss's gradients, which needs the attack's
own loop - ours are the libraries')."""

from __future__ import annotations

import torch
from torch import nn


class ExpectationOverNoise(nn.Module):
    """model(front(x)) averaged over `draws` noise draws per image, in logit space."""

    def __init__(self, front: nn.Module, model: nn.Module, draws: int = 8) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError("EOT needs at least one draw")
        self.front, self.model, self.draws = front, model, draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        repeated = x.repeat(self.draws, *([1] * (x.dim() - 1)))  # draw-major: [d0 all, d1 all, ...]
        logits = self.model(self.front(repeated))
        return logits.view(self.draws, n, -1).mean(0)
