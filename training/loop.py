"""What every trainer shares: device choice, seeded batch order that survives a resume,
checkpoints, a CSV metrics log, and a progress bar."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


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
