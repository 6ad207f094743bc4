"""L-inf PGD on the CAS training loss (Bai et al., ICLR 2021): the attack the CAS authors
both train and evaluate with.

A CAS classifier at test time re-weights its channels by the auxiliary head's argmax.
The main head learns, in training, to read the class off those weights, so the gradient
of CE(main) alone barely moves it: plain PGD stalls (gradient masking). The authors'
attack (their `FastGradientSignUntargeted.perturb` and `_pgd_whitebox`) instead ascends

    CE(p(x'), y) + beta / S * sum_s CE(p_hat^s(x'), y)

- the very loss CAS trains on (training.models.cas) - which flips the auxiliary
prediction and with it the weights. On a model without CAS modules the second term is
absent and this is plain PGD (random start, alpha * sign(grad) steps, projection).
No library has it: torchattacks' and foolbox's PGD take the model's logits only.
Training uses it; the evaluation crafts on the CAS heads alone, which the masked CE term
no longer dilutes (training.attacks.cas_surrogates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.cas import cas_loss, cas_modules_in


class CASLossPGD:
    def __init__(
        self,
        eps: float,
        alpha: float,
        steps: int,
        beta: float = 2.0,
        random_start: bool = True,
        targeted: bool = False,
    ) -> None:
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.beta = beta  # the CAS paper's beta, as in training
        self.random_start = random_start
        self.targeted = targeted  # towards a random wrong class per image, as torchattacks'

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective ascended: CE on the output plus the CAS modules' loss, if any."""
        total = F.cross_entropy(model(x), y)
        modules = cas_modules_in(model)
        if modules:
            total = total + cas_loss(modules, y, self.beta)
        return total

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        x_adv = x.clone()
        sign = 1.0  # ascend the loss of the label
        if self.targeted:  # descend the loss of a random other class
            with torch.no_grad():
                classes = model(x).shape[1]
            y = (y + torch.randint(1, classes, y.shape, device=y.device)) % classes
            sign = -1.0
        if self.random_start:
            x_adv = (x_adv + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.loss(model, x_adv, y), x_adv)
            step = x_adv.detach() + sign * self.alpha * grad.sign()
            x_adv = (x + (step - x).clamp(-self.eps, self.eps)).clamp(0, 1)
        return x_adv.detach()
