"""One trainer per method; `purifier train` picks one by the config's `method`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import load_config

# Importing each method registers its trainer in TRAINERS.
from training.methods import adversarial, arn, classifier, guided, nrp, prior  # noqa: F401
from training.registry import TRAINERS


def train_from_config(
    path: str | Path, overrides: list[str] | None = None, resume: bool = True
) -> Any:
    """`purifier train CONFIG`: the config's method trains it (resuming its checkpoint)."""
    config = load_config(path, overrides)
    return TRAINERS[config["method"]](config, resume)
