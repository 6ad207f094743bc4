"""Variant files beside an exported model.onnx: model.fp16.onnx (GPUs), model.cpu.onnx
(onnxruntime's CPU-optimised graph) and model.int8.onnx (quantised). Each is written to
a `.partial` file, compared with model.onnx on the same inputs, kept only within the
variant's tolerance, and recorded in card.json under its section with its sha256 and the
measured difference (purifier.contract.VARIANT_FILES names the sections and files)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from purifier.contract import MODEL_FILE, OUTPUT_NAME, VARIANT_FILES, sha256_of
from purifier.noise import feed
from training.export.card import export_dir, update_card


class VariantParityError(RuntimeError):
    """A variant's output is further from float32 model.onnx than its tolerance."""


def output_difference(reference: Path, variant: Path, inputs: list[np.ndarray]) -> dict[str, float]:
    """Max and mean |variant - reference| over the inputs (CPU execution provider)."""
    import onnxruntime as ort

    cpu = ["CPUExecutionProvider"]
    full = ort.InferenceSession(str(reference), providers=cpu)
    other = ort.InferenceSession(str(variant), providers=cpu)
    worst, total, count = 0.0, 0.0, 0
    for x in inputs:
        expected = full.run([OUTPUT_NAME], feed(full, x))[0]  # the same noise for both
        got = other.run([OUTPUT_NAME], feed(other, x))[0]
        if got.dtype != np.float32 or got.shape != expected.shape:
            raise VariantParityError(f"{variant}: output {got.dtype} {got.shape} for {x.shape}")
        diff = np.abs(got - expected)
        worst = max(worst, float(diff.max()))
        total, count = total + float(diff.sum()), count + diff.size
    return {"max": worst, "mean": total / count}


def write_variant(
    version_dir: Path,
    section: str,
    make: Callable[[Path, Path], None],
    inputs: list[np.ndarray],
    max_abs: float | None = None,
    mean_abs: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """make(model.onnx, partial) writes the variant; it is kept (and recorded in the card
    under `section`, with `extra`) only if its max and mean differences from model.onnx
    are within max_abs and mean_abs. Returns the record; raises VariantParityError and
    leaves no file otherwise."""
    name = VARIANT_FILES[section]
    path, partial = version_dir / name, version_dir / f"{name}.partial"
    make(version_dir / MODEL_FILE, partial)
    try:
        diff = output_difference(version_dir / MODEL_FILE, partial, inputs)
        for kind, limit in (("max", max_abs), ("mean", mean_abs)):
            if limit is not None and diff[kind] > limit:
                raise VariantParityError(
                    f"{path}: {kind} abs diff {diff[kind]:.2e} from float32 > {limit:.2e}"
                )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    record: dict[str, Any] = {
        "file": name,
        "sha256": sha256_of(path),
        "parity_max_abs_diff_vs_fp32": diff["max"],
        "parity_mean_abs_diff_vs_fp32": diff["mean"],
        **extra,
    }
    update_card(version_dir, **{section: record})
    return record


def variant_cli(add: Callable[[Path, list[np.ndarray]], dict[str, Any]], doc: str | None) -> None:
    """`python -m training.export.KIND CONFIG`: add one variant to an earlier export,
    checked on the export's parity inputs (random and real images at several sizes)."""
    from training.config import load_config
    from training.export.graph import parity_inputs, real_images

    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("config", help="the purifier's training config")
    parser.add_argument("--output-root", type=Path, default=Path("exported_models"))
    parser.add_argument("--version", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.config)
    version_dir = export_dir(config, args.output_root, args.version)
    channels = int(config["purifier"].get("in_channels", 3))
    record = add(version_dir, [x.numpy() for x in parity_inputs(channels, real_images(config))])
    print(f"wrote {version_dir / record['file']}: {record}")
