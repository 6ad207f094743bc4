"""model.fp16.onnx beside an exported model.onnx: weights and arithmetic in float16 for
GPUs (half the memory traffic, tensor cores), with the model contract's float32 `image`
input and `purified` output kept (casts at the edges), so the service and Triton feed it
exactly as they feed model.onnx.

The conversion is onnxruntime's own (`onnxruntime.transformers.float16`, the converter
its GPU tooling uses). Parity is measured against the float32 ONNX model, itself within
1e-4 of torch: the half-precision output must stay within one 8-bit level (1/255) of it on
random and real inputs at several sizes, or nothing is written. The card records the
file's sha256 and the measured difference.

`purifier export` writes it; for a model exported before that:

    python -m training.export.fp16 training/configs/NAME.yaml [--output-root R] [--version V]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

from purifier.contract import (
    FP16_MODEL_FILE,
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_NAME,
    sha256_of,
)
from training.export.card import update_card

FP16_FILE = FP16_MODEL_FILE
FP16_TOLERANCE = 1 / 255  # one 8-bit level of the purified image


class FP16ParityError(RuntimeError):
    """The half-precision model's output is more than FP16_TOLERANCE from float32's."""


def fp16_parity(fp32_path: Path, fp16_path: Path, inputs: list[np.ndarray]) -> float:
    """Max |fp16 - fp32| over the inputs (CPU execution provider)."""
    import onnxruntime as ort

    cpu = ["CPUExecutionProvider"]
    full = ort.InferenceSession(str(fp32_path), providers=cpu)
    half = ort.InferenceSession(str(fp16_path), providers=cpu)
    worst = 0.0
    for x in inputs:
        expected = full.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        got = half.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if got.dtype != np.float32 or got.shape != expected.shape:
            raise FP16ParityError(f"{fp16_path}: output {got.dtype} {got.shape} for {x.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def add_fp16(version_dir: Path, inputs: list[np.ndarray]) -> dict[str, object]:
    """Write version_dir/model.fp16.onnx from model.onnx, check it, record it in card.json
    (key `fp16`). Returns that record; raises FP16ParityError (and writes nothing)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32_path, fp16_path = version_dir / MODEL_FILE, version_dir / FP16_FILE
    half = convert_float_to_float16(onnx.load(fp32_path), keep_io_types=True)
    partial = version_dir / f"{FP16_FILE}.partial"
    onnx.save(half, partial)
    try:
        diff = fp16_parity(fp32_path, partial, inputs)
        if diff > FP16_TOLERANCE:
            raise FP16ParityError(
                f"{fp16_path}: max abs diff {diff:.2e} from float32 > {FP16_TOLERANCE:.2e}"
            )
    except BaseException:
        partial.unlink()
        raise
    partial.replace(fp16_path)
    record: dict[str, object] = {
        "file": FP16_FILE,
        "sha256": sha256_of(fp16_path),
        "parity_max_abs_diff_vs_fp32": diff,
    }
    update_card(version_dir, fp16=record)
    return record


def main() -> None:
    from training.config import load_config
    from training.export.graph import parity_inputs, real_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the purifier's training config")
    parser.add_argument("--output-root", type=Path, default=Path("exported_models"))
    parser.add_argument("--version", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.config)
    version_dir = args.output_root / config["name"] / str(args.version)
    channels = int(config["purifier"].get("in_channels", 3))
    inputs = [x.numpy() for x in parity_inputs(channels, real_images(config))]
    record = add_fp16(version_dir, inputs)
    print(f"wrote {version_dir / FP16_FILE}: {record}")


if __name__ == "__main__":
    main()
