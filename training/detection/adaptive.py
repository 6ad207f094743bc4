"""The adaptive attacker of the suspicion verdict (issue 24, item 4): PGD through the
purifier P and the classifier f that also keeps the residual statistic low,

    max_delta  CE(f(P(x + delta)), y) - lambda * s(x + delta, P(x + delta)) / t,
    |delta|_inf <= eps,

with s the card's statistic (here in torch, equal to purifier.suspicion's) and t its
threshold at 1% false positives, so that lambda = 1 weighs "one threshold of score"
like one nat of loss. lambda = 0 is plain white-box PGD. Each adversary is rounded to 8
bits and judged as served: the exported ONNX file purifies it, purifier.suspicion scores
it against the card's threshold, f classifies the purified image. Reported per lambda:
the detection rate, the fooling rate, and how often both fooled and undetected (the
attacker's real success), with n and 95% Wilson intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.defenses import Defense
from training.detection.scores import quantized, rate, residual_statistics


def _box3(x: torch.Tensor) -> torch.Tensor:
    """purifier.suspicion.box3 in torch: 3x3 mean per plane, edges replicated."""
    n, c, h, w = x.shape
    planes = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(planes, 3, stride=1).reshape(n, c, h, w)


def _rms(a: torch.Tensor) -> torch.Tensor:
    return a.square().flatten(1).mean(1).sqrt()


def torch_statistic(name: str, original: torch.Tensor, purified: torch.Tensor) -> torch.Tensor:
    """Per image (N,), differentiable; equal to purifier.suspicion's numpy statistic."""
    residual = purified - original
    if name == "rms":
        return _rms(residual)
    if name == "linf":
        return residual.abs().flatten(1).amax(1)
    if name == "hf_rms":
        return _rms(residual - _box3(residual))
    if name == "relative":
        return _rms(residual) / (_rms(original - _box3(original)) + 1e-6)
    raise KeyError(f"unknown suspicion statistic {name!r}")


def evading_pgd(
    purifier: nn.Module,
    classifier: nn.Module,
    statistic: str,
    threshold: float,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: dict[str, Any],
    weight: float,
) -> torch.Tensor:
    """The module docstring's attack on one batch; spec: eps, alpha, steps."""
    eps, alpha = float(spec["eps"]), float(spec["alpha"])
    delta = torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(int(spec["steps"])):
        adv = (x + delta).clamp(0, 1).requires_grad_(True)
        purified = purifier(adv)
        loss = F.cross_entropy(classifier(purified), y, reduction="sum")
        if weight:
            loss = loss - weight * torch_statistic(statistic, adv, purified).sum() / threshold
        (grad,) = torch.autograd.grad(loss, adv)
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def adaptive_rows(
    purifier: nn.Module,
    served: Defense,
    classifier: nn.Module,
    detection: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    adaptive: dict[str, Any],
    batch: int,
) -> list[dict[str, Any]]:
    """One row per lambda of `adaptive.weights`."""
    statistic = detection["statistic"]
    threshold = float(detection["thresholds"]["0.01"])
    rows = []
    for weight in adaptive["weights"]:
        torch.manual_seed(0)
        adv = torch.cat(
            [
                evading_pgd(
                    purifier,
                    classifier,
                    statistic,
                    threshold,
                    x[i : i + batch],
                    y[i : i + batch],
                    adaptive,
                    float(weight),
                )
                for i in range(0, len(x), batch)
            ]
        )
        adv = quantized(adv)
        scores = residual_statistics(served, adv, batch)[statistic]
        with torch.no_grad():
            pred = torch.cat(
                [classifier(served(adv[i : i + batch])).argmax(1) for i in range(0, len(x), batch)]
            )
        fooled = (pred != y).numpy()
        flagged = {f: scores > t for f, t in detection["thresholds"].items()}
        rows.append(
            {
                "weight": float(weight),
                "fooled": rate(fooled),
                "detected": {f: rate(v) for f, v in flagged.items()},
                "fooled_undetected": {f: rate(fooled & ~v) for f, v in flagged.items()},
                "mean_score_over_threshold": round(float(np.mean(scores)) / threshold, 3),
            }
        )
        print(f"adaptive lambda={weight}: {rows[-1]}", flush=True)
    return rows
