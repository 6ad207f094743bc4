"""Class activation features (CAFD; Zhou et al., ICCV 2021), after class activation
mapping (Zhou et al., CVPR 2016): the last convolutional features of a classifier, each
channel weighted by the output layer's weight for the class the classifier predicts on
that input, then rectified. CAM needs a global-average-pooling + linear head, whose
weights are exactly the channel importances; other heads are refused.

No labels: the class is the classifier's own top-1 (so CAFA and CAFD stay
self-supervised, as the paper's training is).
"""

from __future__ import annotations

import torch
from torch import nn


class ClassActivationFeatures(nn.Module):
    """x -> ReLU(A(x) * w_{c(x)}), scaled to [0, 1] per image (the authors scale the
    map to [0, 1] too). A: the last convolutional features; c(x): the predicted class."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        head = classifier.head
        pooled = isinstance(head, nn.Sequential) and isinstance(head[0], nn.AdaptiveAvgPool2d)
        if not pooled or not isinstance(head[-1], nn.Linear):
            raise ValueError(
                "class activation features need a global-average-pooling + linear head "
                "(class activation mapping); this classifier's head is not one"
            )
        self.classifier = classifier.eval().requires_grad_(False)
        self.layer = "class_activation"

    def train(self, mode: bool = True) -> ClassActivationFeatures:
        return super().train(False)  # frozen, like every feature extractor here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.classifier
        features = c.features(c.normalize(x))
        predicted = c.head(features).argmax(1)  # no gradient flows through the choice
        weights = c.head[-1].weight[predicted]  # (N, channels)
        caf = torch.relu(features * weights[:, :, None, None])
        scale = caf.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]
        return caf / scale
