"""`python -m training.studies.guided_trial CONFIG STEPS [--set KEY=VALUE ...]`: a short trial of
a guided-purifier recipe, to size and steer the long runs (what the loss weights, the
learning rate and the patch size do in a few hundred steps), without touching the run's
checkpoint or logs.

It trains a fresh purifier for STEPS steps on random pairs of a cached attack bank
(runs/banks/, made by a training run of the same config) and reports the training losses
over the first and the last quarter of the steps, then MobileNetV2's clean agreement,
fooling rate and the share of each perturbation left, |P(x*) - x| / |x* - x|, on the
first `--val` crops of the cached validation set (the `val` split: never `test`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from training.attacks.bank import top1
from training.config import load_config
from training.methods.guided import GuidedTrainer, validation_cache_path


def trial(config: dict, steps: int, bank_file: Path, val_images: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    bank = torch.load(bank_file, weights_only=False)
    val = torch.load(validation_cache_path(config), weights_only=False)
    x, adversaries = val["x"][:val_images], val["adv"][:, :val_images]
    trainer = GuidedTrainer(config, torch.device("cpu"))
    history = []
    started = time.time()
    for _ in range(steps):
        idx = torch.randint(0, len(bank["clean"]), (int(config["train"]["batch_size"]),))
        history.append(trainer.step(bank["clean"][idx], bank["adv"][idx]))
    quarter = max(steps // 4, 1)

    def mean(key: str, part: list[dict]) -> float:
        return round(sum(h[key] for h in part) / len(part), 4)

    keys = ("adv_pixel", "adv_feature", "adv_kl", "clean_loss", "residual_clean")
    out: dict = {
        "steps": steps,
        "s_per_step": round((time.time() - started) / steps, 3),
        **{k: [mean(k, history[:quarter]), mean(k, history[-quarter:])] for k in keys},
    }
    trainer.purifier.eval()
    guide = trainer.guide.model
    with torch.no_grad():
        reference = top1(guide, x)
        out["clean_agreement"] = (
            (top1(guide, trainer.purifier(x)) == reference).float().mean().item()
        )
        for i, adv in enumerate(adversaries):
            cleaned = trainer.purifier(adv)
            out[f"attack{i}_fooling"] = (top1(guide, cleaned) != reference).float().mean().item()
            left = (cleaned - x).abs().mean() / (adv - x).abs().mean()
            out[f"attack{i}_left"] = round(left.item(), 3)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("steps", type=int)
    parser.add_argument("--bank", type=Path, required=True, help="a cached bank file")
    parser.add_argument("--val", type=int, default=32, help="validation crops to score")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    result = trial(config, args.steps, args.bank, args.val)
    print(json.dumps({"overrides": args.overrides, **result}))


if __name__ == "__main__":
    main()
