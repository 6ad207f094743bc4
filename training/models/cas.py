"""Channel-wise Activation Suppressing (CAS; Bai et al., ICLR 2021), a module inserted
after a block of the classifier to defend.

The copy of the paper in ../shared/papers/ stops after the introduction, so this follows
the published method (Sec. 4.1 of the ICLR paper):
- the block's activation f (N, K, H, W) is globally average-pooled to f_hat (N, K);
- an auxiliary linear classifier M (K -> C classes, no bias) gives p_hat = softmax(f_hat M);
- the column M_c is the channel importance for class c, and the activation is
  re-weighted channel-wise: f_tilde = f * M_y with the true label y in training, and with
  the auxiliary prediction y_hat = argmax p_hat at test time (with `straight_through`,
  set only while an attack crafts on it, the backward pass differentiates the
  softmax-weighted sum_c p_hat_c M_c instead of the argmax: training.attacks.cas_surrogates);
- each CAS module adds a cross-entropy L_CAS(p_hat, y); the training loss is
  L = CE(p(x'), y) + beta / S * sum_s L_CAS^s with beta = 2 (`cas_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.targets import require_layers
from training.registry import MODELS


class CAS(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.importance = nn.Linear(channels, num_classes, bias=False)  # M: K -> C
        self.aux_logits: torch.Tensor | None = None  # p_hat's logits of the last forward
        self.straight_through = False  # BPDA through the argmax (cas_surrogates)

    def forward(self, f: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.importance(f.mean(dim=(2, 3)))  # f_hat M
        self.aux_logits = logits
        cls = labels if labels is not None else logits.argmax(1)
        weights = self.importance.weight[cls]  # (N, K): M_y, or M_y_hat at test time
        if labels is None and self.straight_through:  # forward M_y_hat, backward soft
            soft = logits.softmax(1) @ self.importance.weight
            weights = weights + soft - soft.detach()
        return f * weights[:, :, None, None]


def cas_modules_in(model: nn.Module) -> list[CAS]:
    """Every CAS module inside `model`, however it is wrapped (a purifier in front of it,
    an attack's stand-in around it)."""
    return [m for m in model.modules() if isinstance(m, CAS)]


def cas_loss(modules: list[CAS], labels: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """beta / S * sum_s CE(p_hat^s, y) over the S CAS modules' last forward."""
    losses = [F.cross_entropy(m.aux_logits, labels) for m in modules if m.aux_logits is not None]
    if not losses:
        raise ValueError("no CAS module has run a forward pass")
    return beta * torch.stack(losses).mean()


class CASClassifier(nn.Module):
    """A classifier with CAS modules after named layers of its `features` (the paper
    puts them after the last convolutional blocks). forward(x, labels) re-weights by the
    true class in training; forward(x) by the auxiliary prediction, as at test time."""

    def __init__(self, base: nn.Module, after: list[str], num_classes: int) -> None:
        super().__init__()
        require_layers(base, after, "CAS after unknown layers")
        self.base = base
        channels = self._channels(base, after)
        self.cas = nn.ModuleDict({name: CAS(channels[name], num_classes) for name in after})

    @staticmethod
    def _channels(base: nn.Module, after: list[str]) -> dict[str, int]:
        """Each CAS module's channel count: the latest conv's outputs before its layer."""
        out, last = {}, None
        for name, module in base.features.named_modules():
            convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
            if convs:
                last = convs[-1].out_channels
            if name in after:
                out[name] = last
        return out

    def cas_modules(self) -> list[CAS]:
        return list(self.cas.values())

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.base.normalize(x)
        for name, layer in self.base.features.named_children():
            h = layer(h)
            if name in self.cas:
                h = self.cas[name](h, labels)
        return self.base.head(h)


@MODELS.register("cas")
def cas_classifier(base: dict, after: list[str], num_classes: int = 10) -> CASClassifier:
    return CASClassifier(MODELS.build({**base, "num_classes": num_classes}), after, num_classes)
