"""Helpers shared by the purifier trainers' tests."""

from __future__ import annotations

import torch


def purifier_loss(trainer, x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """The NRP-style objective (NRP, CAFD) of the trainer's purifier on one batch."""
    trainer.purifier.train()
    with torch.no_grad():
        purified = trainer.purifier(x_adv)
        return trainer.objective.purifier_loss(trainer.critic, x, purified)["loss"].item()
