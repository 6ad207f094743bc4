"""Classifiers: the models to defend, and the fixed feature extractor for SSP.

Every model takes images in [0, 1] and normalises inside, so attacks, defenses and
the ONNX contract all work in [0, 1] pixel units.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from training.registry import MODELS

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


class Normalize(nn.Module):
    def __init__(self, mean: float | list[float], std: float | list[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FeatureClassifier(nn.Module):
    """normalize -> features (a named nn.Sequential, cut-able by layer name) -> head."""

    def __init__(self, normalize: nn.Module, features: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@MODELS.register("lenet")
def lenet(in_channels: int = 1, num_classes: int = 10) -> FeatureClassifier:
    """LeNet-style CNN, the MNIST target of the ARN paper (two 5x5 convs, two FC)."""
    features = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 32, 5, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 64, 5, padding=2),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
        )
    )
    head = nn.Sequential(
        nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, num_classes)
    )
    return FeatureClassifier(Normalize(FMNIST_MEAN, FMNIST_STD), features, head)


@MODELS.register("resnet_small")
def resnet_small(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> FeatureClassifier:
    """A small pre-pooling ResNet (three stages of two basic blocks): a different
    architecture family from LeNet, for cross-model evaluation."""
    w = width
    features = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(
                nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
            ),
            stage1=nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, w, 1)),
            stage2=nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w, 1)),
            stage3=nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w, 1)),
        )
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))
    return FeatureClassifier(Normalize(FMNIST_MEAN, FMNIST_STD), features, head)


@MODELS.register("vgg_small")
def vgg_small(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> FeatureClassifier:
    """A VGG-style network (blocks of 3x3 convs, named like VGG's conv3_3) used as the
    fixed SSP feature extractor, as NRP uses VGG. It is never an evaluated target."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    cin = in_channels
    for block, (mult, convs) in enumerate(((1, 2), (2, 2), (4, 3)), start=1):
        for i in range(1, convs + 1):
            layers[f"conv{block}_{i}"] = nn.Conv2d(cin, width * mult, 3, padding=1)
            layers[f"relu{block}_{i}"] = nn.ReLU()
            cin = width * mult
        layers[f"pool{block}"] = nn.MaxPool2d(2, ceil_mode=True)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    return FeatureClassifier(Normalize(FMNIST_MEAN, FMNIST_STD), nn.Sequential(layers), head)


def require_layers(model: nn.Module, layers: list[str], what: str = "layers") -> None:
    """Fail, naming the choices, unless every one of `layers` is a child of
    model.features (FeatureExtractor, FeatureTaps and CAS cut or tap there)."""
    names = [name for name, _ in model.features.named_children()]
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        raise ValueError(f"{what} {unknown} not in features; choose from {names}")


class FeatureExtractor(nn.Module):
    """A frozen network cut after one named layer of its `features` (NRP's F_psi|_n)."""

    def __init__(self, model: FeatureClassifier, layer: str) -> None:
        super().__init__()
        require_layers(model, [layer], "layer")
        kept = OrderedDict()
        for name, module in model.features.named_children():
            kept[name] = module
            if name == layer:
                break
        self.normalize = model.normalize
        self.body = nn.Sequential(kept)
        self.layer = layer
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Always frozen: BatchNorm statistics and dropout never change.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))


class FeatureTaps(nn.Module):
    """A frozen FeatureClassifier run once for several named feature maps and its logits
    (HGD's guide: the feature-guided loss at chosen layers, the logit-guided loss on the
    output). The last tapped layer may be the final one; the head still runs after it."""

    def __init__(self, model: FeatureClassifier, layers: list[str]) -> None:
        super().__init__()
        require_layers(model, layers)
        self.model = model
        self.layers = list(layers)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureTaps:
        return super().train(False)  # always frozen, like FeatureExtractor

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = self.model.normalize(x)
        taps = []
        for name, module in self.model.features.named_children():
            h = module(h)
            if name in self.layers:
                taps.append(h)
        return taps, self.model.head(h)
