"""Differentiable stand-ins for a CAS classifier (Bai et al., ICLR 2021), for crafting
attacks on it: any attack that reads a model's logits (torchattacks, foolbox, ours) runs
on the stand-in, and the examples it returns are scored on the CAS classifier itself.

At test time a CAS module re-weights its channels by the argmax of its auxiliary head,
and the main head learns in training to read the class off those weights, so the
gradient of any loss on the main logits barely moves the prediction (gradient masking;
training.attacks.cas_pgd). Two stand-ins, both for the spec key `surrogate`:

- `cas_heads`: the model whose logits are the CAS modules' auxiliary logits (their mean
  over modules). Ascending CE on it is ascending the CAS loss without the masked CE term;
  the main head follows the auxiliary argmax, so it is the stronger attack for the
  loss-maximising attacks (PGD, MI-FGSM, APGD, DDN).
- `cas_straight_through`: the CAS classifier itself, with each module's argmax-picked
  weights M_y_hat passed forward and the softmax-weighted ones sum_c p_hat_c M_c passed
  backward (BPDA: Athalye et al., ICML 2018: the forward pass the classifier's, to float
  rounding, the backward a differentiable approximation). Attacks that stop at the
  first fooling point (CW) test success on the real forward pass here.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.cas import cas_modules_in
from training.registry import SURROGATES


class _CASStandIn(nn.Module):
    """Wraps a model with CAS modules (`heads`); a model without any is refused."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.heads = cas_modules_in(model)
        if not self.heads:
            raise ValueError("a CAS surrogate needs a model with CAS modules (training.models.cas)")


@SURROGATES.register("cas_heads")
class CASHeads(_CASStandIn):
    """The CAS modules' auxiliary logits as the model's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.model(x)  # fills each module's aux_logits
        return torch.stack([m.aux_logits for m in self.heads]).mean(0)


@SURROGATES.register("cas_straight_through")
class CASStraightThrough(_CASStandIn):
    """The CAS classifier's logits, with a straight-through gradient through each
    module's argmax (CAS.straight_through)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.heads:
            m.straight_through = True
        try:
            return self.model(x)
        finally:  # the classifier itself stays exact outside this stand-in
            for m in self.heads:
                m.straight_through = False
