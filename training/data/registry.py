"""Dataset lookup by config name."""

from __future__ import annotations

from typing import Any

import torch

from training.data.fashion_mnist import load_fashion_mnist


def load_dataset(spec: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    name = spec.get("dataset", "fashion_mnist")
    limit_key = "train_limit" if split == "train" else "test_limit"
    if name == "fashion_mnist":
        return load_fashion_mnist(split, limit=spec.get(limit_key))
    raise KeyError(f"unknown dataset {name!r}")
