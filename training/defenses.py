"""Input-transformation defenses: the classic pre-processing baselines and the purifier.

Each defense maps a batch in [0, 1] NCHW to a batch of the same shape. The baselines use
maintained libraries (Pillow's JPEG codec, SciPy's median filter, scikit-image's
Chambolle TV denoiser); only bit-depth reduction is one line of arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from training.registry import DEFENSES

Defense = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


@DEFENSES.register("jpeg")
def jpeg(quality: int = 75) -> Defense:
    """JPEG re-compression (Das et al. 2017; Guo et al. 2018) with Pillow's codec."""
    import io

    from PIL import Image

    def roundtrip(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))

    def apply(x: torch.Tensor) -> torch.Tensor:
        u8 = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        hwc = u8.permute(0, 2, 3, 1).numpy()
        if hwc.shape[-1] == 1:
            out = np.stack([roundtrip(img[..., 0])[..., None] for img in hwc])
        else:
            out = np.stack([roundtrip(img) for img in hwc])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, torch.float32) / 255.0

    return apply


@DEFENSES.register("bit_depth")
def bit_depth(bits: int = 3) -> Defense:
    """Feature squeezing (Xu et al. 2018): quantise each pixel to 2**bits levels."""
    levels = 2**bits - 1

    def apply(x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.clamp(0, 1) * levels) / levels

    return apply


@DEFENSES.register("median")
def median(size: int = 3) -> Defense:
    from scipy.ndimage import median_filter

    def apply(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy()
        out = median_filter(arr, size=(1, 1, size, size), mode="reflect")
        return torch.from_numpy(out).to(x.device)

    return apply


@DEFENSES.register("tv")
def total_variation(weight: float = 0.1, max_num_iter: int = 200) -> Defense:
    """Chambolle TV denoising, each image and channel on its own (channels stacked on
    scikit-image's channel axis, which it denoises independently)."""
    from skimage.restoration import denoise_tv_chambolle

    def apply(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        stack = x.detach().cpu().reshape(n * c, h, w).permute(1, 2, 0).numpy().astype(np.float64)
        out = denoise_tv_chambolle(stack, weight=weight, max_num_iter=max_num_iter, channel_axis=-1)
        out_t = torch.from_numpy(out.astype(np.float32)).permute(2, 0, 1).reshape(n, c, h, w)
        return out_t.to(x.device)

    return apply


@DEFENSES.register("onnx")
def onnx_model(weights: str) -> Defense:
    """An exported purifier file as the service runs it: onnxruntime on the CPU (model.onnx,
    model.cpu.onnx or model.int8.onnx). Not differentiable: transfer rows only. The
    file is named `weights` so that cached cells are keyed by its content."""
    import onnxruntime as ort

    from purifier.contract import OUTPUT_NAME
    from purifier.noise import feed, is_stochastic

    session = ort.InferenceSession(weights, providers=["CPUExecutionProvider"])
    stochastic = is_stochastic(session)

    def apply(x: torch.Tensor) -> torch.Tensor:
        image = x.detach().cpu().numpy().astype(np.float32)
        # A stochastic file's noise from torch's RNG, which each table cell seeds.
        noise = torch.randn(image.shape).numpy() if stochastic else None
        out = session.run([OUTPUT_NAME], dict(feed(session, image, noise)))[0]
        return torch.from_numpy(out).to(x.device)

    return apply


class PurifierDefense(nn.Module):
    """A purifier network as a defense; differentiable, so white-box attacks go through it."""

    differentiable = True

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


DEFENSES.add("none", lambda: identity)


@DEFENSES.register("ffdnet")
def ffdnet(level_255: float = 25.0) -> PurifierDefense:
    """The pretrained prior alone (issue 37's baseline): FFDNet colour told the level
    level_255/255, no noise added. Differentiable: white-box rows go through it."""
    from training.models.ffdnet import NoisePrior

    return PurifierDefense(NoisePrior(sigma_255=0.0, level_255=level_255))


@DEFENSES.register("noise_then_denoise")
def noise_then_denoise(noise_255: float = 24.0, level_255: float = 30.0) -> PurifierDefense:
    """The pretrained prior as a randomised purifier (DiffPure's one-step form): fresh
    Gaussian noise of noise_255/255 (torch's RNG, which each table cell seeds), then
    FFDNet at level_255/255."""
    from training.models.ffdnet import NoisePrior

    return PurifierDefense(NoisePrior(sigma_255=noise_255, level_255=level_255))


def build_baseline(spec: dict[str, Any]) -> Defense:
    """The classic defense the spec names under `kind`, with its parameters."""
    return DEFENSES.build(spec)
