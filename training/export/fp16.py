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

from pathlib import Path

import numpy as np
import onnx

from purifier.contract import FP16_MODEL_FILE
from training.export.variant import VariantParityError, variant_cli, write_variant

FP16_FILE = FP16_MODEL_FILE
FP16_TOLERANCE = 1 / 255  # one 8-bit level of the purified image
FP16ParityError = VariantParityError


def convert_fp16(fp32_path: Path, out: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(fp32_path), keep_io_types=True), out)


def add_fp16(version_dir: Path, inputs: list[np.ndarray]) -> dict[str, object]:
    """Write version_dir/model.fp16.onnx from model.onnx, check it, record it in card.json
    (key `fp16`). Returns that record; raises FP16ParityError (and writes nothing)."""
    return write_variant(version_dir, "fp16", convert_fp16, inputs, max_abs=FP16_TOLERANCE)


if __name__ == "__main__":
    variant_cli(add_fp16, __doc__)
