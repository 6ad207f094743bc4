"""Supervised training of a classifier (the targets to defend, and the SSP feature
extractor). Adam with a cosine schedule; light augmentation (shift + flip)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.config import seed_everything
from training.data.registry import load_dataset
from training.device import pick_device
from training.loop import (
    Checkpoint,
    MetricsLog,
    batch_order,
    error_rate,
    progress,
    save_weights,
    steps_per_epoch,
)
from training.models import build_model
from training.registry import TRAINERS


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (pad + crop) and horizontal flips."""
    n, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    out = padded[:, :, dy : dy + h, dx : dx + w]
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


@TRAINERS.register("classifier")
def train_classifier(config: dict[str, Any], resume: bool = True) -> Path:
    seed = int(config.get("seed", 0))
    seed_everything(seed)
    device = pick_device(config.get("device", "auto"))
    tc = config["train"]
    # 60k 28x28 images are 188 MB: keep them on the device, batches are index views.
    x_train, y_train = (t.to(device) for t in load_dataset(config["data"], "train"))
    x_test, y_test = load_dataset(config["data"], "test")
    model = build_model(config["model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc["lr"], weight_decay=tc.get("weight_decay", 0))
    epochs, bs = int(tc["epochs"]), int(tc["batch_size"])
    per_epoch = steps_per_epoch(len(x_train), bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)

    ckpt, log = Checkpoint(config["output_dir"]), MetricsLog(config["output_dir"])
    epoch, step = 0, 0
    state = ckpt.load() if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        epoch, step = state["epoch"], state["step"]
    gen = torch.Generator().manual_seed(seed)

    while epoch < epochs:
        model.train()
        bar = progress(per_epoch, step, f"{config['name']} epoch {epoch + 1}/{epochs}")
        for idx in batch_order(len(x_train), bs, seed, epoch, start=step):
            idx = idx.to(device)
            xb = x_train[idx]
            if tc.get("augment", True):
                xb = augment(xb, gen)
            loss = F.cross_entropy(model(xb.to(device)), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        model.eval()
        test_err = error_rate(model, x_test, y_test)
        log.write(
            {"epoch": epoch + 1, "loss": round(loss.item(), 4), "test_error": round(test_err, 2)}
        )
        epoch, step = epoch + 1, 0
        ckpt.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "epoch": epoch,
                "step": 0,
            }
        )
        print(f"{config['name']}: epoch {epoch} test error {test_err:.2f}%")
    return save_weights(model.cpu(), config["weights"])
