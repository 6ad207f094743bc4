"""Which images a classifier is sure of: its top-1 softmax probability, and the images
every one of several classifiers is sure of (a label-free stand-in for the usual
"evaluate on correctly classified images")."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def confidence(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """The model's top-1 softmax probability per image."""
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch]).softmax(1).amax(1) for i in range(0, len(x), batch)]
        )


def confident_mask(
    models: Iterable[nn.Module], x: torch.Tensor, threshold: float, batch: int
) -> torch.Tensor:
    """True where every model's top-1 probability is at least `threshold`."""
    keep = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for model in models:
        keep &= confidence(model, x, batch) >= threshold
    return keep
