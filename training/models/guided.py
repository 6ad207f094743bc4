"""The guided purifier's denoiser: HGD's residual U-Net (Liao et al. 2018, Sec. 3.1, Fig. 3:
the network predicts the perturbation and subtracts it), shrunk for a CPU and guarded
against the collapse that CPU-length runs met (issue 27: a learned pattern that steers
the guide's features instead of removing noise):

- y = clip(x + max_residual * tanh(r(x)), 0, 1): the correction is bounded per pixel, so
  the purifier can undo an L-inf perturbation but never repaint the image;
- the last convolution starts at zero, so at step 0 the purifier is the identity (every
  clean image keeps its class before any training);
- downsampling is a pixel-unshuffle and strided convolutions; upsampling is bilinear
  followed by a convolution, never a transposed convolution or a pixel-shuffle, which
  make checkerboards;
- no BatchNorm (a sidecar purifies one image at a time), fully convolutional: any H, W
  (edge-padded inside the graph to a multiple of 8, cropped back);
- optionally (`gate`) the correction is scaled by a local gate in [0, 1] read at 1/8 of
  the side from the bottleneck and from the log energy of the image's high frequencies
  there (an L-inf perturbation adds high-frequency energy everywhere): the network can
  then leave clean regions untouched and still correct perturbed ones, instead of one
  compromise for both (stage 3 of issue 27: clean agreement fell as removal grew).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.registry import MODELS

# A pixel-unshuffle (2) and two stride-2 levels: the padded side is a multiple of this.
PAD_MULTIPLE = 8


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def _conv_pair(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions (HGD's "C2" block), the first optionally strided."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1), _act(), nn.Conv2d(cout, cout, 3, 1, 1), _act()
    )


class UpFuse(nn.Module):
    """HGD's backward-path fuse: upsample the coarse map (bilinear: no checkerboard),
    project it, concatenate the skip from the forward path, convolve."""

    def __init__(self, coarse: int, skip: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(coarse, skip, 3, 1, 1), _act())
        self.fuse = _conv_pair(2 * skip, skip)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([self.project(up), skip], 1))


class GuidedUNet(nn.Module):
    """Residual U-Net on a pixel-unshuffled input; widths per level (1/2, 1/4, 1/8 of the
    input side), a `full_res`-channel stage at the input's resolution that sees the image
    itself, and the bounded, zero-initialised correction."""

    size_multiple = 1

    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, ...] | list[int] = (48, 96, 192),
        bottleneck_convs: int = 2,
        full_res: int = 16,
        max_residual: float = 24 / 255,
        gate: bool = False,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError("widths: three levels (1/2, 1/4, 1/8 of the input side)")
        if not 0 < max_residual <= 1:
            raise ValueError("max_residual must be in (0, 1]")
        w0, w1, w2 = widths
        self.in_channels = in_channels
        self.max_residual = float(max_residual)
        self.unshuffle = nn.PixelUnshuffle(2)
        self.enc0 = _conv_pair(4 * in_channels, w0)
        self.enc1 = _conv_pair(w0, w1, stride=2)
        middle: list[nn.Module] = [nn.Conv2d(w1, w2, 3, 2, 1), _act()]
        for _ in range(bottleneck_convs):
            middle += [nn.Conv2d(w2, w2, 3, 1, 1), _act()]
        self.enc2 = nn.Sequential(*middle)
        self.dec1 = UpFuse(w2, w1)
        self.dec0 = UpFuse(w1, w0)
        self.to_full = nn.Sequential(nn.Conv2d(w0, full_res, 3, 1, 1), _act())
        self.full = nn.Sequential(nn.Conv2d(full_res + in_channels, full_res, 3, 1, 1), _act())
        self.out = nn.Conv2d(full_res, in_channels, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # the identity at step 0
        nn.init.zeros_(self.out.bias)
        self.gate: nn.Sequential | None = None
        if gate:
            self.gate = nn.Sequential(
                nn.Conv2d(w2 + in_channels, 16, 3, 1, 1), _act(), nn.Conv2d(16, 1, 1)
            )
            nn.init.zeros_(self.gate[-1].weight)  # starts open everywhere: sigmoid(3) = 0.95
            nn.init.constant_(self.gate[-1].bias, 3.0)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The bounded correction r with y = clip(x + r, 0, 1); |r| <= max_residual."""
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        f0 = self.enc0(self.unshuffle(padded))
        f1 = self.enc1(f0)
        f2 = self.enc2(f1)
        d0 = self.dec0(self.dec1(f2, f1), f0)
        up = F.interpolate(
            self.to_full(d0), size=padded.shape[2:], mode="bilinear", align_corners=False
        )
        r = self.max_residual * torch.tanh(self.out(self.full(torch.cat([up, padded], 1))))
        if self.gate is not None:
            r = r * self._gate(padded, f2)
        return r[:, :, :h, :w]

    def _gate(self, padded: torch.Tensor, bottleneck: torch.Tensor) -> torch.Tensor:
        """The local gate at the input's resolution (module docstring)."""
        high = padded - F.avg_pool2d(padded, 3, 1, 1, count_include_pad=False)
        energy = torch.log(F.avg_pool2d(high * high, PAD_MULTIPLE) + 1e-6)
        logit = self.gate(torch.cat([bottleneck, energy], 1))
        # By a fixed factor, not to a computed size: the exported graph then keeps its
        # static channel count (a Resize to computed sizes leaves every output dim unknown).
        up = F.interpolate(logit, scale_factor=PAD_MULTIPLE, mode="bilinear", align_corners=False)
        return torch.sigmoid(up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.residual(x)).clamp(0.0, 1.0)

    @torch.no_grad()
    def grow_from(self, small: GuidedUNet) -> GuidedUNet:
        """Become a wider copy of `small` that computes the same function (Net2Net's
        function-preserving widening, Chen et al. 2016, with zeros in place of Net2Net's
        copies): each of small's weights goes to its channel here, and every weight
        from a new input channel to an old output channel is zero, so the new channels
        start with their own random weights but change nothing until training gives
        their outgoing weights a value. The larger size then starts where the smaller
        one's training stopped instead of from the identity."""
        if self.in_channels != small.in_channels or (self.gate is None) != (small.gate is None):
            raise ValueError("grow_from: same input channels and gate setting needed")
        if len(self.enc2) != len(small.enc2):
            raise ValueError("grow_from: same number of bottleneck convolutions needed")
        c = self.in_channels
        (w0, w1, w2), fr = _widths(small), small.full[0].out_channels
        (big0, big1, big2), big_fr = _widths(self), self.full[0].out_channels
        if min(big0 - w0, big1 - w1, big2 - w2, big_fr - fr) < 0:
            raise ValueError("grow_from: every width must be at least the small network's")
        keep = [(self.enc0[0], small.enc0[0], _first(4 * c), _first(w0))]
        keep += [(self.enc0[2], small.enc0[2], _first(w0), _first(w0))]
        keep += [(self.enc1[0], small.enc1[0], _first(w0), _first(w1))]
        keep += [(self.enc1[2], small.enc1[2], _first(w1), _first(w1))]
        keep += [(self.enc2[0], small.enc2[0], _first(w1), _first(w2))]
        for i in range(2, len(self.enc2), 2):
            keep.append((self.enc2[i], small.enc2[i], _first(w2), _first(w2)))
        for big, old, coarse, skip, big_skip in (
            (self.dec1, small.dec1, w2, w1, big1),
            (self.dec0, small.dec0, w1, w0, big0),
        ):
            keep.append((big.project[0], old.project[0], _first(coarse), _first(skip)))
            # fuse reads cat([projected, skip]): the skip's channels start at big_skip here
            joined = _first(skip) + [big_skip + i for i in range(skip)]
            keep.append((big.fuse[0], old.fuse[0], joined, _first(skip)))
            keep.append((big.fuse[2], old.fuse[2], _first(skip), _first(skip)))
        keep.append((self.to_full[0], small.to_full[0], _first(w0), _first(fr)))
        image = [big_fr + i for i in range(c)]  # full reads cat([upsampled, image])
        keep.append((self.full[0], small.full[0], _first(fr) + image, _first(fr)))
        keep.append((self.out, small.out, _first(fr), _first(c)))
        if self.gate is not None and small.gate is not None:
            energy = [big2 + i for i in range(c)]  # the gate reads cat([bottleneck, energy])
            keep.append((self.gate[0], small.gate[0], _first(w2) + energy, _first(16)))
            keep.append((self.gate[2], small.gate[2], _first(16), _first(1)))
        for big_conv, old_conv, inputs, outputs in keep:
            rows, cols = torch.tensor(outputs)[:, None], torch.tensor(inputs)[None, :]
            big_conv.weight[outputs] = 0.0  # old outputs read nothing from new inputs
            big_conv.weight[rows, cols] = old_conv.weight
            big_conv.bias[outputs] = old_conv.bias
        self.max_residual = small.max_residual
        return self


def _widths(net: GuidedUNet) -> tuple[int, int, int]:
    return net.enc0[0].out_channels, net.enc1[0].out_channels, net.enc2[0].out_channels


def _first(n: int) -> list[int]:
    return list(range(n))


@MODELS.register("guided_unet")
def guided_unet(**kwargs: object) -> GuidedUNet:
    """GuidedUNet from a config's keyword arguments (see its constructor)."""
    return GuidedUNet(**kwargs)  # type: ignore[arg-type]
