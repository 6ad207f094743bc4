"""The photo-prior purifier's fine-tuning (issue 37): noise-then-denoise on FFDNet's
pretrained prior (training/models/ffdnet.py), trained with the guided objective (HGD, Liao
et al. 2018, Sec. 3.2: FGD on MobileNetV2's feature maps + LGD on its logits, plus the
clean-consistency terms of training/methods/guided.py) on the same bank of attacks.

What differs from the guided purifier is the noise (denoised smoothing, Salman et al.
2020, Sec. 3: the denoiser is trained under the noise it will be served with, through
the classifier's loss): each image of a step gets its own level s ~ U(lo, hi) and fresh
standard-normal noise from the trainer's generator (so a resumed run continues it), and
the denoiser is told the level s + margin, the margin leaving room for the attack's own
perturbation. Validation serves the configured (sigma, level) with noise drawn from a
fixed seed, so every point of the learning curve meets the same noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.methods.guided import GuidedTrainer, train_on_bank
from training.registry import TRAINERS


class PriorTrainer(GuidedTrainer):
    """GuidedTrainer whose purifier is a NoisePrior, trained under per-image noise."""

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        nc = config["noise"]
        low, high = (float(v) / 255 for v in nc["train_sigma_255"])
        if not 0 <= low <= high:
            raise ValueError(f"noise.train_sigma_255 {nc['train_sigma_255']}: want 0 <= lo <= hi")
        self.sigma_range = (low, high)
        self.level_margin = float(nc.get("level_margin_255", 8.0)) / 255
        self.validation_seed = int(config.get("seed", 0)) + 7

    def draw_noise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image level s ~ U(lo, hi) and standard-normal noise, from the trainer's RNG."""
        low, high = self.sigma_range
        sigma = low + (high - low) * torch.rand(len(x), generator=self.gen)
        noise = torch.randn(x.shape, generator=self.gen)
        return sigma.to(x.device), noise.to(x.device)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        sigma, noise = self.draw_noise(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.train_purifier(x, noise, sigma, sigma + self.level_margin)
        return out.float()

    @torch.no_grad()
    def validate(self, x: torch.Tensor, adversaries: torch.Tensor) -> dict[str, float]:
        # The served (sigma, level) with the same noise at every validation: the purifier
        # draws from torch's global RNG, seeded here inside a fork so training's is kept.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.validation_seed)
            return super().validate(x, adversaries)


@TRAINERS.register("prior")
def train_prior(config: dict[str, Any], resume: bool = True) -> Path:
    return train_on_bank(config, resume, PriorTrainer)
