"""Dataset lookup by config name."""

from __future__ import annotations

from typing import Any

import torch

from training.data.fashion_mnist import load_fashion_mnist
from training.data.photos import PhotoCrops


def load_dataset(spec: dict[str, Any], split: str) -> tuple[Any, torch.Tensor | None]:
    """(images, labels). Photos have no labels, and their training split is a PhotoCrops
    (crops made on demand, indexable like a tensor)."""
    name = spec.get("dataset", "fashion_mnist")
    limit_key = "train_limit" if split == "train" else "test_limit"
    if name == "fashion_mnist":
        return load_fashion_mnist(split, limit=spec.get(limit_key))
    if name == "photos":
        crops = PhotoCrops(
            split,
            count=int(spec[f"{split}_crops"]),
            size=int(spec.get("crop", 128)),
            min_scale=float(spec.get("min_scale", 0.1)),
            seed=int(spec.get("seed", 0)) + (split == "test"),
        )
        return (crops if split == "train" else crops.tensor()), None
    raise KeyError(f"unknown dataset {name!r}")


def train_and_validation(config: dict[str, Any]) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """((train images, labels), (first `train.val_images` test images, labels)) of a
    training config; labels are None for unlabelled data (photos)."""
    x_train, y_train = load_dataset(config["data"], "train")
    x_val, y_val = load_dataset(config["data"], "test")
    n = int(config["train"].get("val_images", 1000))
    return (x_train, y_train), (x_val[:n], None if y_val is None else y_val[:n])
