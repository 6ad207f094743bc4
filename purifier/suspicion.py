"""Suspicion scores: statistics of the residual P(x) - x that a purification already
computes (issue 24). Training measures and calibrates them (training/detection/study.py), the
service scores every request with the same functions, so the served verdict is the one
that was measured.

Every statistic is per pixel (independent of the image's size) on (C, H, W) float arrays
in [0, 1]:
- `rms`: the residual's root mean square (the L2 norm over sqrt(C H W));
- `linf`: its largest magnitude;
- `hf_rms`: the root mean square of its high-pass part, r - box3(r): an adversarial
  perturbation is mostly high-frequency, a purifier's correction of a clean photo is not;
- `relative`: rms over the image's own high-pass energy, x - box3(x): a textured photo
  is moved more than a flat one, with or without an attack.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# The calibrated false-positive rates: card `detection.thresholds` keys.
FALSE_POSITIVE_RATES = ("0.01", "0.05")
_EPS = 1e-6


def box3(planes: np.ndarray) -> np.ndarray:
    """3x3 mean of each (H, W) plane, edges replicated (separable: rows, then columns)."""
    padded = np.pad(planes, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = planes.shape[-2:]
    rows = padded[:, :, :w] + padded[:, :, 1 : w + 1] + padded[:, :, 2 : w + 2]
    total = rows[:, :h] + rows[:, 1 : h + 1] + rows[:, 2 : h + 2]
    total *= 1.0 / 9.0
    return total


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0


def rms(original: np.ndarray, purified: np.ndarray) -> float:
    return _rms(purified - original)


def linf(original: np.ndarray, purified: np.ndarray) -> float:
    diff = purified - original
    return float(np.abs(diff).max()) if diff.size else 0.0


def hf_rms(original: np.ndarray, purified: np.ndarray) -> float:
    residual = (purified - original).astype(np.float32)
    return _rms(residual - box3(residual))


def relative(original: np.ndarray, purified: np.ndarray) -> float:
    image = original.astype(np.float32)
    return rms(original, purified) / (_rms(image - box3(image)) + _EPS)


STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rms": rms,
    "linf": linf,
    "hf_rms": hf_rms,
    "relative": relative,
}


def score(statistic: str, original: np.ndarray, purified: np.ndarray) -> float:
    """The named statistic of one image's residual; (C, H, W) arrays in [0, 1]."""
    if statistic not in STATISTICS:
        raise KeyError(f"unknown suspicion statistic {statistic!r}; known: {sorted(STATISTICS)}")
    return STATISTICS[statistic](original, purified)
