"""The exported ONNX graph: written per the model contract (opset, dynamic N/H/W) and
checked against the torch model it came from; its cost in FLOPs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from purifier.contract import INPUT_NAME, NOISE_INPUT_NAME, OPSET, OUTPUT_NAME
from purifier.noise import feed, seeded_noise
from training.data.registry import load_dataset

PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported graph does not behave like the torch model."""


def is_stochastic(net: nn.Module) -> bool:
    """A purifier whose forward takes (image, noise): exported with a `noise` input."""
    return bool(getattr(net, "stochastic", False))


def run_torch(net: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """net on x, fed what the ONNX graph is fed: for a stochastic net, the noise
    `purifier.noise.feed` draws from the same seed."""
    if not is_stochastic(net):
        return net(x)
    return net(x, torch.from_numpy(seeded_noise(seed, tuple(x.shape))))


def export_onnx(net: nn.Module, path: Path, channels: int, sample_hw: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(1, channels, *sample_hw)
    axes = {0: "batch", 2: "height", 3: "width"}
    names = [INPUT_NAME]
    args: tuple[torch.Tensor, ...] = (dummy,)
    if is_stochastic(net):
        names.append(NOISE_INPUT_NAME)
        args = (dummy, torch.randn_like(dummy))
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it handles
        # dynamic H/W of a plain conv net without onnxscript rewrites; parity is checked.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            net.eval(),
            args,
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes={**{name: axes for name in names}, OUTPUT_NAME: axes},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def check_parity(net: nn.Module, onnx_path: Path, inputs: list[torch.Tensor]) -> float:
    """Max |onnxruntime - torch| over the inputs; raises ExportError past the tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = run_torch(net, x).numpy()
        got = session.run([OUTPUT_NAME], feed(session, x.numpy()))[0]
        if got.shape != expected.shape:
            raise ExportError(
                f"ONNX output {got.shape} != torch {expected.shape} for {tuple(x.shape)}"
            )
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        if diff > PARITY_TOLERANCE:
            raise ExportError(
                f"parity failed for input {tuple(x.shape)}: max abs diff {diff:.2e} > "
                f"{PARITY_TOLERANCE:.0e} ({onnx_path})"
            )
    return worst


def count_gflops(net: nn.Module, channels: int, size: int = 224) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run_torch(net, torch.zeros(1, channels, size, size))
    return round(counter.get_total_flops() / 1e9, 3)


def parity_inputs(channels: int, real: torch.Tensor | None, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs at two sizes, and real images at two sizes (native and upscaled)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = [
        torch.rand(2, channels, 28, 28, generator=gen),
        torch.rand(3, channels, 45, 61, generator=gen),
    ]
    if real is not None:
        inputs.append(real)
        inputs.append(nn.functional.interpolate(real, scale_factor=2, mode="bilinear"))
    return inputs


def real_images(config: dict[str, Any]) -> torch.Tensor | None:
    """Eight test images of the purifier's dataset for the parity checks, if installed."""
    try:
        return load_dataset(config["data"], "test")[0][:8]
    except FileNotFoundError:
        print("no dataset found: parity checked on random inputs only")
        return None
