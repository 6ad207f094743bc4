"""SSP: the Self-Supervised Perturbation of NRP (Algorithm 1).

No labels and no classifier: starting from a random transformation R(x) of the clean
batch, sign steps maximise the feature distortion Delta(x, x') = d(F(x)|_n, F(x')|_n)
(Eq. 1) at one layer of a fixed network, with an L-inf projection (Eq. 2, 3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from training.losses import get_distance


class SSP:
    def __init__(
        self,
        feature_extractor: nn.Module,
        eps: float = 16 / 255,
        step_size: float | None = None,
        steps: int = 10,
        distance: str = "l1",
        random_start: str = "uniform",
    ) -> None:
        if eps <= 0 or steps < 1:
            raise ValueError("SSP needs eps > 0 and steps >= 1")
        self.features = feature_extractor
        self.eps = eps
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        self.steps = steps
        self.distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = get_distance(distance)
        if random_start not in ("uniform", "normal"):
            raise ValueError("random_start must be 'uniform' or 'normal'")
        self.random_start = random_start

    def feature_distortion(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Delta(x, x') of Eq. 1, one value per sample."""
        with torch.no_grad():
            clean = self.features(x)
        return self.distance(clean, self.features(x_adv))

    def _random_start(self, x: torch.Tensor) -> torch.Tensor:
        # R(x) of Alg. 1 line 1: "a random step at the first iteration".
        if self.random_start == "uniform":
            noise = torch.empty_like(x).uniform_(-self.eps, self.eps)
        else:
            noise = (torch.randn_like(x) * self.eps / 2).clamp(-self.eps, self.eps)
        return (x + noise).clamp(0.0, 1.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        with torch.no_grad():
            clean_features = self.features(x)
        x_adv = self._random_start(x)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():  # callers may be inside no_grad (evaluation)
                delta = self.distance(clean_features, self.features(x_adv)).sum()
                (grad,) = torch.autograd.grad(delta, x_adv)
            with torch.no_grad():
                x_adv = x_adv + self.step_size * grad.sign()  # Eq. 2
                x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps)  # Eq. 3
                x_adv = x_adv.clamp(0.0, 1.0)  # stay a valid image
        return x_adv.detach()
