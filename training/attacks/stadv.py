"""STA: spatially transformed adversarial examples (Xiao et al., ICLR 2018), the
spatially constrained attack of ARN's Table 2 (STA_N / STA_T).

Every pixel gets a flow vector f_p = (du, dv); the adversarial image samples the input
bilinearly at p + f_p (Eq. 1-2). The flow minimises
    L_adv(x, f) + tau * L_flow(f)                                   (Eq. 3 / Sec. 3)
with L_flow(f) = sum_p sum_{q in N(p)} sqrt(||du_p - du_q||^2 + ||dv_p - dv_q||^2)
(Eq. 4, N(p): the 4-neighbourhood) and the margin loss L_adv = max(Z_y - max_{i!=y} Z_i,
-kappa) (untargeted; targeted: max(max_{i!=t} Z_i - Z_t, -kappa)), by L-BFGS, tau = 0.05.
There is no L-p budget: the flow's smoothness is the constraint.

Ours, not a library's: advertorch 0.2.3 (last release 2020) has one, but it returns an
all-black image wherever it fails and penalises one whole-image norm of the flow
differences instead of Eq. 4's per-pixel sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SQRT_EPS = 1e-8  # keeps sqrt differentiable at zero flow difference (f starts at 0)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of x at p + flow_p (Eq. 1-2); flow in pixels, (N, 2, H, W) as
    (horizontal, vertical); outside the image the border pixel is repeated."""
    h, w = x.shape[2], x.shape[3]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=x.dtype, device=x.device),
        torch.arange(w, dtype=x.dtype, device=x.device),
        indexing="ij",
    )
    px = xs + flow[:, 0]
    py = ys + flow[:, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    grid = torch.stack((2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def flow_loss(flow: torch.Tensor) -> torch.Tensor:
    """Eq. 4 per image: each pixel against its right and lower neighbours (every
    4-neighbour pair once; Eq. 4's double sum counts each pair twice, a factor tau
    absorbs)."""
    dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    right = torch.sqrt((dx**2).sum(1) + _SQRT_EPS).flatten(1).sum(1)
    down = torch.sqrt((dy**2).sum(1) + _SQRT_EPS).flatten(1).sum(1)
    return right + down


def margin_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool, kappa: float
) -> torch.Tensor:
    """Carlini-Wagner's margin, as STA's L_adv: positive until the image is classified as
    wanted (any wrong class, or the target), then floored at -kappa."""
    label_logit = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    margin = others - label_logit if targeted else label_logit - others
    return margin.clamp_min(-kappa)


class SpatialTransformAttack:
    """`attack(model, x, y) -> x_adv`, y the true labels; targeted: towards a random
    wrong class per image (seeded), as the targeted PGD rows do."""

    def __init__(
        self,
        tau: float = 0.05,
        kappa: float = 0.0,
        steps: int = 200,
        targeted: bool = False,
        seed: int = 0,
        chunk: int = 50,
    ) -> None:
        self.tau, self.kappa, self.steps, self.targeted = tau, kappa, steps, targeted
        self.seed, self.chunk = seed, chunk

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model.eval()
        x = x.detach()
        if self.targeted:
            y = self.random_targets(model, x, y)
        # The images solved together share L-BFGS's line search, which slows each one's
        # progress (on LeNet, 100 steps: 97.5% fooled one at a time, 92.5% forty at a
        # time); chunks trade that against speed.
        return torch.cat(
            [
                self.attack_chunk(model, x[i : i + self.chunk], y[i : i + self.chunk])
                for i in range(0, len(x), self.chunk)
            ]
        )

    def attack_chunk(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        flow = torch.zeros(x.shape[0], 2, *x.shape[2:], device=x.device, requires_grad=True)
        # One L-BFGS over the batch: the objective is a sum of per-image terms with no
        # coupling, so this is each image's own problem, solved together.
        opt = torch.optim.LBFGS(
            [flow], max_iter=self.steps, history_size=10, line_search_fn="strong_wolfe"
        )
        # With kappa = 0 the optimum sits on the decision boundary, on either side of it;
        # like Carlini-Wagner, keep each image's smoothest flow that did fool the model.
        best_adv = x.clone()
        best_flow_loss = torch.full((x.shape[0],), float("inf"), device=x.device)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            adv = warp(x, flow)
            logits = model(adv)
            smoothness = flow_loss(flow)
            per_image = margin_loss(logits, y, self.targeted, self.kappa) + self.tau * smoothness
            loss = per_image.sum()
            loss.backward()
            with torch.no_grad():
                predicted = logits.argmax(1)
                fooled = predicted == y if self.targeted else predicted != y
                better = fooled & (smoothness < best_flow_loss)
                best_adv[better] = adv[better]
                best_flow_loss[better] = smoothness[better]
            return loss

        opt.step(closure)
        with torch.no_grad():
            never_fooled = torch.isinf(best_flow_loss)
            best_adv[never_fooled] = warp(x, flow)[never_fooled]  # the last try
            return best_adv.clamp(0.0, 1.0)

    def random_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        gen = torch.Generator().manual_seed(self.seed)
        shift = torch.randint(1, num_classes, y.shape, generator=gen).to(y.device)
        return (y + shift) % num_classes
