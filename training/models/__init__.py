"""Model registry: `build_model({"arch": NAME, **kwargs})` (timm-style factories)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.models.arn import arn, arn_attack_discriminator
from training.models.cam import ClassActivationFeatures
from training.models.cas import cas_classifier
from training.models.critics import vgg_critic
from training.models.guided import guided_unet
from training.models.imagenet import efficientnet_lite0_imagenet, mobilenet_v2_imagenet
from training.models.purifiers import nrp, nrp_unet
from training.models.targets import FeatureExtractor, lenet, resnet_small, vgg_small

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": lenet,
    "resnet_small": resnet_small,
    "vgg_small": vgg_small,
    "cas": cas_classifier,
    "nrp": nrp,
    "nrp_unet": nrp_unet,
    "guided_unet": guided_unet,
    "arn": arn,
    "arn_attack_discriminator": arn_attack_discriminator,
    "vgg_critic": vgg_critic,
    # pretrained ImageNet classifiers: their weights come with their packages
    "mobilenet_v2_imagenet": mobilenet_v2_imagenet,
    "efficientnet_lite0_imagenet": efficientnet_lite0_imagenet,
}


def build_model(spec: dict[str, Any]) -> nn.Module:
    spec = dict(spec)
    arch = spec.pop("arch")
    if arch not in MODELS:
        raise KeyError(f"unknown arch {arch!r}; known: {sorted(MODELS)}")
    return MODELS[arch](**spec)


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
