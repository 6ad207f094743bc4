"""Helpers shared by the purifier trainers' tests."""

from __future__ import annotations

import torch


def purifier_loss(trainer, x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """The NRP-style objective (NRP, CAFD) of the trainer's purifier on one batch."""
    trainer.purifier.train()
    with torch.no_grad():
        purified = trainer.purifier(x_adv)
        return trainer.objective.purifier_loss(trainer.critic, x, purified)["loss"].item()


def purifier_loss_before_and_after_one_step(config: dict, x: torch.Tensor) -> tuple[float, float]:
    """An NRP-style trainer (NRP, CAFD) from config: its purifier's loss on SSP inputs
    made from x, before and after one purifier step on them."""
    from training.methods.nrp import NRPTrainer

    torch.manual_seed(0)
    trainer = NRPTrainer(config, torch.device("cpu"))
    x_adv = trainer.ssp(x)
    before = purifier_loss(trainer, x, x_adv)
    trainer.update_purifier(x, x_adv)
    return before, purifier_loss(trainer, x, x_adv)


def tiny_photo_overrides(crops: int, crop: int, *extra: str) -> list[str]:
    """`--set` overrides that shrink a photo eval config to `crops` crops of `crop` px,
    one batch."""
    return [
        f"data.test_crops={crops}",
        f"data.num_images={crops}",
        f"data.crop={crop}",
        f"batch_size={crops}",
        *extra,
    ]
