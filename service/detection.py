"""The suspicion verdict on each purified image (issue 24): the card's calibrated
statistic of the residual P(x) - x against its threshold at the configured false-positive
rate (training/export/detection.py calibrates it; purifier.suspicion computes it, for
training and service alike)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from purifier.contract import MODEL_FILE
from purifier.suspicion import score
from service.errors import ServiceError
from service.registry import ModelLoadError


@dataclass(frozen=True)
class Detector:
    statistic: str
    threshold: float
    false_positive_rate: str  # "0.01" or "0.05": the calibrated rate on clean images

    def judge(self, original: np.ndarray, purified: np.ndarray) -> Verdict:
        value = score(self.statistic, original, purified)
        return Verdict(value, value > self.threshold)


@dataclass(frozen=True)
class Verdict:
    score: float
    suspicious: bool


def detector_for(card: dict[str, Any], served_file: Path, rate: str) -> Detector | None:
    """The card's detector for the file the engine serves, or None where the card has no
    `detection` section. A file without thresholds of its own (the fp16 and CPU-graph
    variants: model.onnx's graph) takes model.onnx's."""
    section = card.get("detection")
    if not section:
        return None
    by_file = section.get("thresholds_by_file", {})
    thresholds = by_file.get(served_file.name) or by_file.get(MODEL_FILE) or section["thresholds"]
    if rate not in thresholds:
        raise ModelLoadError(
            f"model {card.get('name')}: PURIFIER_SUSPICION_FPR={rate} is not calibrated "
            f"(its card has {sorted(thresholds)})"
        )
    return Detector(section["statistic"], float(thresholds[rate]), rate)


ON_SUSPICIOUS = ("flag", "reject")


def rejects_suspicious(query: Mapping[str, str]) -> bool:
    """Whether the query asks ?on_suspicious=reject (default flag; 400 for another value)."""
    value = query.get("on_suspicious", "flag")
    if value not in ON_SUSPICIOUS:
        raise ServiceError(
            400, "bad_request", f"query.on_suspicious: must be one of {', '.join(ON_SUSPICIOUS)}"
        )
    return value == "reject"


def require_detector(detector: Detector | None, model: str) -> None:
    """?on_suspicious=reject needs a calibrated verdict: 400 for a model without one."""
    if detector is None:
        raise ServiceError(
            400,
            "bad_request",
            f"query.on_suspicious=reject: model {model} has no calibrated suspicion verdict "
            "(its card has no detection section)",
        )


def refuse_if_suspicious(
    detector: Detector | None, model: str, verdicts: Verdict | list[Verdict | None] | None
) -> None:
    """?on_suspicious=reject: 422 with the figures of the first suspicious verdict."""
    listed = verdicts if isinstance(verdicts, list) else [verdicts]
    verdict = next((v for v in listed if v is not None and v.suspicious), None)
    if verdict is None or detector is None:
        return
    raise ServiceError(
        422,
        "suspicious",
        f"the purifier's residual scores {verdict.score:.6f} ({detector.statistic}), above "
        f"{detector.threshold:.6f}: the threshold a clean image passes "
        f"{100 * (1 - float(detector.false_positive_rate)):g}% of the time",
        details={
            "score": verdict.score,
            "threshold": detector.threshold,
            "statistic": detector.statistic,
            "false_positive_rate": float(detector.false_positive_rate),
            "model": model,
        },
    )
