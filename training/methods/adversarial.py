"""PGD adversarial training (Madry et al.) of a classifier, with or without CAS
(Bai et al., ICLR 2021): the robust-classifier rows of the methods table.

Each step crafts the config's attack on the current model in eval mode (so CAS weights
channels by its own prediction, as an attacker would meet it), then minimises
CE(f(x'), y), plus beta/S * sum_s CE(p_hat^s, y) over the CAS modules when the model has
any, with CAS re-weighting by the true class in this training forward.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.attacks.library import build_attack
from training.data.registry import train_and_validation
from training.distributed import Distributed
from training.loop import fit, start_run
from training.models import build_model
from training.models.cas import CASClassifier, cas_loss
from training.registry import TRAINERS


class AdversarialTrainer:
    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        self.model: nn.Module = build_model(config["model"]).to(device)
        self.attack = build_attack(config["attack"])
        self.beta = float(config.get("cas_beta", 2.0))  # the CAS paper's beta
        tc = config["train"]
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=tc["lr"], weight_decay=tc.get("weight_decay", 0.0)
        )
        self.train_model: nn.Module = self.model
        self.augment = batch_augment(tc.get("augment"))

    @property
    def cas(self) -> bool:
        return isinstance(self.model, CASClassifier)

    def distribute(self, ctx: Distributed) -> None:
        self.train_model = ctx.wrap(self.model)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        x = self.augment(x)
        self.model.eval()
        x_adv = self.attack(self.model, x, y).detach()
        self.model.train()
        if self.cas:
            logits = self.train_model(x_adv, y)
            ce = F.cross_entropy(logits, y)
            aux = cas_loss(self.model.cas_modules(), y, self.beta)
            loss = ce + aux
        else:
            logits = self.train_model(x_adv)
            ce = aux = loss = F.cross_entropy(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        wrong = (logits.argmax(1) != y).float().mean().item()
        return {"loss": loss.item(), "ce": ce.item(), "cas": aux.item(), "adv_err": 100 * wrong}

    def validate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Clean and attacked top-1 error (%) of the model as it is served (eval mode)."""
        self.model.eval()
        x_adv = self.attack(self.model, x, y)
        with torch.no_grad():
            clean = (self.model(x).argmax(1) != y).float().mean().item()
            attacked = (self.model(x_adv).argmax(1) != y).float().mean().item()
        return {"val_clean_err": 100 * clean, "val_attacked_err": 100 * attacked}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])


def batch_augment(spec: dict[str, Any] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`train.augment: {crop_padding: P, hflip: true}`: each image zero-padded by P and
    cropped back at a random offset, then mirrored half the time - the CAS authors'
    adversarial-training recipe (their train.py: pad 4, RandomCrop, RandomHorizontalFlip).
    torchvision draws one crop per call, so it is called per image. None: unchanged."""
    if not spec:
        return lambda x: x
    from torchvision.transforms import v2

    pad = int(spec.get("crop_padding", 0))
    flip = [v2.RandomHorizontalFlip()] if spec.get("hflip") else []
    unknown = set(spec) - {"crop_padding", "hflip"}
    if unknown:
        raise KeyError(f"unknown train.augment keys {sorted(unknown)}: crop_padding, hflip")

    def run(x: torch.Tensor) -> torch.Tensor:
        size = list(x.shape[-2:])  # crops come back at the batch's own size
        crop = [v2.RandomCrop(size, padding=pad)] if pad else []
        transform = v2.Compose([*crop, *flip])
        return torch.stack([transform(image) for image in x])

    return run


@TRAINERS.register("adversarial")
def train_adversarial(config: dict[str, Any], resume: bool = True) -> Path:
    ctx = start_run(config)
    train, val = train_and_validation(config)
    return fit(config, AdversarialTrainer(config, ctx.device), ctx, train, val, resume)
