"""Purifier networks. NRP (paper Sec. 3.3): a convolution, then "basic blocks" of three
dense blocks (five 3x3 convs with leaky-ReLU and dense connections, the last conv back
to the block's width), and NO skip from the input image to the output: a skip would let
the adversarial pattern through. The output is clamped to [0, 1] inside the graph, as
the model contract requires."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.registry import MODELS


class DenseBlock(nn.Module):
    """Five convolutions, each seeing all previous outputs; residual-scaled by 0.2 as in
    ESRGAN's RDB, which NRP's generator follows (feature-level, not image-level, skip)."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc, 3, 1, 1) for i in range(4))
        self.conv_out = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.conv_out(torch.cat(feats, 1))


class BasicBlock(nn.Module):
    """Three dense blocks (NRP's "basic block", ESRGAN's RRDB)."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class NRPGenerator(nn.Module):
    """P_theta. Fully convolutional; any H, W; output = clamp(net(x), 0, 1)."""

    size_multiple = 1

    def __init__(
        self, in_channels: int = 3, nf: int = 64, gc: int = 32, num_basic_blocks: int = 23
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.trunk = nn.Sequential(*(BasicBlock(nf, gc) for _ in range(num_basic_blocks)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, in_channels, 3, 1, 1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.trunk(fea))
        out = self.conv_last(self.act(self.conv_hr(fea)))
        return out.clamp(0.0, 1.0)


@MODELS.register("nrp")
def nrp(
    in_channels: int = 3, nf: int = 64, gc: int = 32, num_basic_blocks: int = 23
) -> NRPGenerator:
    return NRPGenerator(in_channels, nf, gc, num_basic_blocks)


class NRPUNet(nn.Module):
    """A serving-sized NRP generator: NRP's dense basic blocks run at 1/4 resolution in a
    U-Net shape, so a 224x224 image costs a few GFLOPs instead of the released
    generator's ~1 TFLOP. Skips carry features between levels (as NRP's own trunk skip
    does), never the input image to the output. Any H and W: the input is padded (edge
    replication) to a multiple of 4 inside the graph and the output cropped back.

    `residual=True` adds the input back (out = x + net(x)): not NRP (a skip would let the
    adversarial pattern through), but the denoiser CAFD builds on (HGD's, whose network
    predicts the correction to its input), and the authors' CAFD code does the same.
    `identity_init=True` (with `residual`) zeroes the last convolution so training starts
    from the identity, which keeps every clean image's class on step 0 (HGD, whose
    residual U-Net is trained with the same high-level feature loss, Liao et al. 2018)."""

    size_multiple = 1

    def __init__(
        self,
        in_channels: int = 3,
        nf: int = 16,
        width: int = 48,
        gc: int = 24,
        blocks: int = 2,
        residual: bool = False,
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        if identity_init and not residual:
            raise ValueError("identity_init needs residual=True (out = x + net(x))")
        self.in_channels = in_channels
        self.residual = residual
        act = nn.LeakyReLU(0.2, inplace=True)
        self.head = nn.Sequential(nn.Conv2d(in_channels, nf, 3, 1, 1), act)
        self.down1 = nn.Sequential(nn.Conv2d(nf, width, 3, 2, 1), act)
        self.down2 = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), act)
        self.trunk = nn.Sequential(*(BasicBlock(width, gc) for _ in range(blocks)))
        self.trunk_conv = nn.Conv2d(width, width, 3, 1, 1)
        self.up2 = nn.Sequential(nn.Conv2d(width, 4 * width, 3, 1, 1), nn.PixelShuffle(2), act)
        self.up1 = nn.Sequential(nn.Conv2d(width, 4 * nf, 3, 1, 1), nn.PixelShuffle(2), act)
        self.tail = nn.Sequential(
            nn.Conv2d(nf, nf, 3, 1, 1), act, nn.Conv2d(nf, in_channels, 3, 1, 1)
        )
        if identity_init:
            nn.init.zeros_(self.tail[-1].weight)
            nn.init.zeros_(self.tail[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        padded = F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4), mode="replicate")
        f0 = self.head(padded)
        f1 = self.down1(f0)
        f2 = self.down2(f1)
        f2 = f2 + self.trunk_conv(self.trunk(f2))
        u1 = self.up2(f2) + f1
        out = self.tail(self.up1(u1) + f0)[:, :, :h, :w]
        if self.residual:
            # The unpadded input: its static channel count keeps the ONNX output shape
            # (N, C, H, W) with C known, as the model contract wants.
            out = out + x
        return out.clamp(0.0, 1.0)


@MODELS.register("nrp_unet")
def nrp_unet(**kwargs: Any) -> NRPUNet:
    """NRPUNet from a config's keyword arguments (see its constructor)."""
    return NRPUNet(**kwargs)
