"""What every trainer shares: device choice, seeded batch order that survives a resume,
checkpoints, a CSV metrics log, a progress bar, and `fit`, the epoch loop that drives a
trainer (NRP, ARN, adversarial training) with all of them."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from training.device import device_label, pick_device
from training.distributed import Distributed
from training.models import build_model, load_weights


def batch_order(
    n: int, batch_size: int, seed: int, epoch: int, start: int = 0
) -> Iterator[torch.Tensor]:
    """Index batches of one epoch; the order depends only on (seed, epoch), so a resumed
    run continues with exactly the batches it had not yet seen."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    steps = n // batch_size  # drop the ragged last batch (BatchNorm, RaGAN means)
    for step in range(start, steps):
        yield perm[step * batch_size : (step + 1) * batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size


def progress(total: int, initial: int, desc: str) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )


class Checkpoint:
    """One file holding every state needed to resume (models, optimisers, position)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / "checkpoint.pt"

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)  # never leave a half-written checkpoint


class MetricsLog:
    """Appends rows to OUTPUT_DIR/FILENAME (the header comes from the first row, so each
    file holds one kind of row)."""

    def __init__(self, output_dir: str | Path, filename: str = "metrics.csv") -> None:
        self.path = Path(output_dir) / filename
        self.start = time.time()

    def write(self, row: dict[str, Any]) -> None:
        row = {"wall_s": round(time.time() - self.start, 1), **row}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def start_over(self) -> None:
        """A fresh run's log holds only its own rows."""
        self.path.unlink(missing_ok=True)


def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@torch.no_grad()
def error_rate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500
) -> float:
    """Top-1 error in percent."""
    device = next(model.parameters()).device
    wrong = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(device))
        wrong += (logits.argmax(1).cpu() != y[i : i + batch_size]).sum().item()
    return 100.0 * wrong / len(x)


class Trainer(Protocol):
    """What `fit` drives: one gradient step per batch, a validation pass, resumable state,
    and `model`, the network whose weights the run produces (a purifier, a classifier)."""

    model: nn.Module

    def distribute(self, ctx: Distributed) -> None: ...
    def step(self, *batch: torch.Tensor) -> dict[str, float]: ...
    def validate(self, *batch: torch.Tensor) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def start_run(config: dict[str, Any]) -> Distributed:
    """Seed everything and join torchrun's process group when there is one."""
    from training.config import seed_everything

    seed_everything(int(config.get("seed", 0)))
    return Distributed.from_env(pick_device(config.get("device", "auto")))


def _to(device: torch.device, tensors: Sequence[Any], idx: torch.Tensor | None = None) -> list:
    return [(t if idx is None else t[idx]).to(device) for t in tensors]


def fit(
    config: dict[str, Any],
    trainer: Trainer,
    ctx: Distributed,
    train: Sequence[Any],
    val: Sequence[Any],
    resume: bool = True,
) -> Path:
    """Train for `train.epochs` over the tensors in `train` (images first, then e.g.
    labels), checkpointing every `train.checkpoint_every` steps; with `train.max_minutes`
    stop cleanly (checkpoint + weights) so that the next run resumes where this one
    stopped (across CPU sessions, or inside a GPU lease). Returns the weights' path."""
    seed, tc = int(config.get("seed", 0)), config["train"]
    device = ctx.device
    ckpt = Checkpoint(config["output_dir"])
    init = tc.get("init_weights")
    if init and not (resume and ckpt.path.exists()):
        # Fine-tuning: a new run starts from these weights of `trainer.model` (a resumed
        # run has its own). Before DDP wraps the model, which broadcasts rank 0's weights.
        if isinstance(init, dict):  # {model: SPEC, weights: PATH}: a smaller net, grown
            if not hasattr(trainer.model, "grow_from"):
                raise ValueError(
                    f"{config['name']}: train.init_weights {{model, weights}} grows a smaller "
                    f"net, which {type(trainer.model).__name__} cannot (no grow_from); give "
                    "init_weights as a path to weights of the same architecture"
                )
            trainer.model.grow_from(load_weights(build_model(init["model"]), init["weights"]))
        else:
            load_weights(trainer.model, init, tuple(tc.get("init_new_layers", ())))
    trainer.distribute(ctx)
    epochs, bs = int(tc["epochs"]), int(tc["batch_size"])
    n = len(train[0])
    per_epoch = steps_per_epoch(n, bs)
    every = int(tc.get("checkpoint_every", 200))
    validate_every = int(tc.get("validate_every", 1))  # epochs
    log = MetricsLog(config["output_dir"])
    val_log = MetricsLog(config["output_dir"], "validation.csv")
    val_batch = _to(device, val)

    epoch, step = 0, 0
    state = ckpt.load() if resume else None
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        epoch, step = state["epoch"], state["step"]
        print(f"{config['name']}: resuming at epoch {epoch + 1}, step {step}")
    elif ctx.is_main:
        log.start_over()
        val_log.start_over()
    if state is None and tc.get("validate_first", False):
        # The learning curve's first point: the untrained network (the identity, for
        # the guided purifier), so every later row has its reference.
        scores = trainer.validate(*val_batch)
        if ctx.is_main:
            val_log.write({"epoch": 0, "step": 0, **{k: round(v, 5) for k, v in scores.items()}})

    def save(epoch: int, step: int) -> None:
        if ctx.is_main:
            ckpt.save({"trainer": trainer.state_dict(), "epoch": epoch, "step": step})

    deadline = time.time() + 60 * float(tc.get("max_minutes", float("inf")))
    started = time.time()
    stopped_early = False
    while epoch < epochs and not stopped_early:
        bar = progress(per_epoch, step, f"{config['name']} epoch {epoch + 1}/{epochs}")
        running: dict[str, float] = {}
        for idx in batch_order(n, bs, seed, epoch, start=step):
            if ctx.any(time.time() > deadline):
                stopped_early = True
                break
            metrics = trainer.step(*_to(device, train, ctx.shard(idx)))
            running = {k: 0.98 * running.get(k, v) + 0.02 * v for k, v in metrics.items()}
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{running[k]:.4f}" for k in list(running)[:3]})
            if step % every == 0 and ctx.is_main:
                row = {k: round(v, 5) for k, v in running.items()}
                log.write({"epoch": epoch + 1, "step": step, **row})
                save(epoch, step)
        bar.close()
        if stopped_early:
            save(epoch, step)
            print(f"{config['name']}: time budget reached at epoch {epoch + 1}, step {step}")
            break
        epoch, step = epoch + 1, 0
        if epoch % validate_every and epoch < epochs:  # validation costs; not every epoch
            save(epoch, step)
            continue
        scores = trainer.validate(*val_batch)
        if ctx.is_main:
            row = {k: round(v, 5) for k, v in scores.items()}
            val_log.write({"epoch": epoch, "step": epoch * per_epoch, **row})
            print(
                f"{config['name']}: epoch {epoch} "
                + " ".join(f"{k}={v:.4f}" for k, v in scores.items())
            )
        save(epoch, step)
    summary = {
        "epochs_done": epoch + step / per_epoch,
        "epochs_planned": epochs,
        "finished": epoch >= epochs,
        "wall_s_this_run": round(time.time() - started, 1),
        "device": device_label(device),
        "steps_per_epoch": per_epoch,
        "batch_size": bs,
        "world_size": ctx.world_size,
    }
    weights = Path(config["weights"])
    if ctx.enabled:  # every rank's final weights, so that their agreement can be checked
        rank_dir = Path(config["output_dir"]) / "ranks"
        save_weights(trainer.model.cpu(), rank_dir / f"purifier_rank{ctx.rank}.pt")
    if ctx.is_main:
        weights = save_weights(trainer.model.cpu(), config["weights"])
        # Beside the weights: what the exporter copies into card.json's `training`.
        weights.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    ctx.barrier()
    ctx.close()
    return weights
