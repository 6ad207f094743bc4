"""One trainer per method; `purifier train` picks one by the config's `method`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def get_trainer(method: str) -> Callable[[dict[str, Any], bool], Any]:
    if method == "classifier":
        from training.methods.classifier import train_classifier

        return train_classifier
    if method in ("nrp", "cafd"):  # CAFD: NRP's self-supervised loop in CAF space
        from training.methods.nrp import train_nrp

        return train_nrp
    if method == "arn":
        from training.methods.arn import train_arn

        return train_arn
    if method == "adversarial":
        from training.methods.adversarial import train_adversarial

        return train_adversarial
    if method == "guided":
        from training.methods.guided import train_guided

        return train_guided
    raise KeyError(
        f"unknown method {method!r}; known: classifier, nrp, cafd, arn, adversarial, guided"
    )
