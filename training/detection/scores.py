"""Scores of the residual P(x) - x over a set of images, and thresholds on them: what
the detection study (training/detection/study.py) and the export-time calibration
(training/export/detection.py) share."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from purifier.suspicion import STATISTICS
from training.attacks.bank import to_float, to_uint8
from training.data.registry import load_dataset
from training.defenses import Defense
from training.evaluation import wilson_interval


def quantized(x: torch.Tensor) -> torch.Tensor:
    """What a client can send: the image rounded to 8 bits."""
    return to_float(to_uint8(x))


def split_images(data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The split's images from `first` on (labels or None); `num_images` is applied by
    the caller, after any confidence filter."""
    x, y = load_dataset(data, data.get("split", "test"))
    if not isinstance(x, torch.Tensor):  # photos' train split: crops made on demand
        x = x.tensor()
    first = int(data.get("first", 0))
    return x[first:], None if y is None else y[first:]


def residual_statistics(purify: Defense, x: torch.Tensor, batch: int) -> dict[str, np.ndarray]:
    """Every statistic of every image's residual, {name: (N,) array}."""
    scores: dict[str, list[float]] = {name: [] for name in STATISTICS}
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        originals, purified = xb.cpu().numpy(), purify(xb).detach().cpu().numpy()
        for original, out in zip(originals, purified, strict=True):
            for name, statistic in STATISTICS.items():
                scores[name].append(statistic(original, out))
    return {name: np.asarray(v) for name, v in scores.items()}


def rate(flags: np.ndarray) -> dict[str, Any]:
    """The share of True in `flags` as a percentage, with its 95% Wilson interval and n."""
    hits, n = int(flags.sum()), len(flags)
    low, high = wilson_interval(hits, n)
    return {"percent": round(100.0 * hits / max(n, 1), 2), "ci95": [low, high], "n": n}


def threshold_at(clean: np.ndarray, fpr: float) -> float:
    """The least threshold that flags (score > threshold) at most `fpr` of `clean`."""
    return float(np.quantile(clean, 1.0 - fpr, method="higher"))
