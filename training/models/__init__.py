"""Networks by name: `build_model({"arch": NAME, **kwargs})` (timm-style factories that
register themselves in `training.registry.MODELS`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

# Importing each family registers its builders in MODELS.
from training.models import (  # noqa: F401
    arn,
    cam,
    cas,
    critics,
    ffdnet,
    guided,
    imagenet,
    purifiers,
    targets,
)
from training.models.cam import ClassActivationFeatures
from training.models.targets import FeatureExtractor
from training.registry import MODELS


def build_model(spec: dict[str, Any]) -> nn.Module:
    """The network `spec["arch"]` names, built with the spec's other keys."""
    return MODELS.build(spec)


def load_weights(model: nn.Module, path: str | Path, new_layers: tuple[str, ...] = ()) -> nn.Module:
    """Load a state dict; `new_layers` names submodules the file may lack (a network
    grown from a trained one keeps their initialisation), every other key must match."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"weights not found: {path}. Train them first (`purifier train CONFIG`)."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not new_layers:
        model.load_state_dict(state)
        return model
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = [k for k in missing if not k.startswith(tuple(f"{n}." for n in new_layers))]
    if wrong or unexpected:
        raise RuntimeError(f"{path}: missing {wrong}, unexpected {unexpected}")
    return model


def build_feature_extractor(spec: dict[str, Any]) -> nn.Module:
    """spec: {model: {arch...}, weights: PATH (not for pretrained archs), layer: NAME};
    layer `class_activation` gives the class activation features (CAFD) instead."""
    model = build_model(spec["model"])
    if "weights" in spec:
        model = load_weights(model, spec["weights"])
    if spec["layer"] == "class_activation":
        return ClassActivationFeatures(model)
    return FeatureExtractor(model, spec["layer"])


__all__ = ["MODELS", "FeatureExtractor", "build_feature_extractor", "build_model", "load_weights"]
