"""`purifier train CONFIG`: dispatch a YAML experiment to its method's trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import load_config
from training.methods import get_trainer


def train_from_config(
    path: str | Path, overrides: list[str] | None = None, resume: bool = True
) -> Any:
    config = load_config(path, overrides)
    return get_trainer(config["method"])(config, resume)
