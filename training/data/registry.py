"""Datasets by config name (`data.dataset`), registered in `training.registry.DATASETS`."""

from __future__ import annotations

from typing import Any

import torch

from training.data.fashion_mnist import load_fashion_mnist
from training.data.photos import PhotoCrops
from training.registry import DATASETS


@DATASETS.register("fashion_mnist")
def _fashion_mnist(spec: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_fashion_mnist(
        split, limit=spec.get("train_limit" if split == "train" else "test_limit")
    )


@DATASETS.register("photos")
def _photos(spec: dict[str, Any], split: str) -> tuple[Any, None]:
    crops = PhotoCrops(
        split,
        count=int(spec[f"{split}_crops"]),
        size=int(spec.get("crop", 128)),
        min_scale=float(spec.get("min_scale", 0.1)),
        seed=int(spec.get("seed", 0)) + (split == "test"),
    )
    return (crops if split == "train" else crops.tensor()), None


def load_dataset(spec: dict[str, Any], split: str) -> tuple[Any, torch.Tensor | None]:
    """(images, labels). Photos have no labels, and their training split is a PhotoCrops
    (crops made on demand, indexable like a tensor)."""
    return DATASETS[spec.get("dataset", "fashion_mnist")](spec, split)


def train_and_validation(config: dict[str, Any]) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """((train images, labels), (first `train.val_images` validation images, labels)) of
    a training config: the test split's first images, or for photos `val_images` crops of
    the val photos; labels are None for unlabelled data (photos)."""
    data = config["data"]
    n = int(config["train"].get("val_images", 1000))
    x_train, y_train = load_dataset(data, "train")
    if data.get("dataset") == "photos":  # the held-out val photos: the test ones are reported
        x_val, y_val = load_dataset({**data, "val_crops": n}, "val")
    else:
        x_val, y_val = load_dataset(data, "test")
    return (x_train, y_train), (x_val[:n], None if y_val is None else y_val[:n])
