"""model.int8.onnx beside an exported model.onnx: onnxruntime's static quantisation
(QDQ format; int8 weights per output channel, uint8 activations with min-max ranges)
calibrated on training crops, served with PURIFIER_PRECISION=int8.

Calibration crops: training photos (never val or test), half of them clean and half
FGSM 16/255 versions crafted on the purifier's guide network, so that the activation
ranges cover the adversarial inputs the purifier exists for (a purifier calibrated on
clean crops alone would clip its correction where it is needed). Parity with model.onnx
is recorded, not bounded tightly (8-bit arithmetic cannot keep 1e-4); a mean difference
above two grey levels means a broken quantisation and nothing is written.

What matters is whether INT8 still protects, so with `--evaluation EVAL_CONFIG` (a
table whose columns are both files as served, `kind: onnx` defenses) the card's `int8`
section also gets that table's clean agreement and fooling rates, FP32 beside INT8:

    python -m training.export.int8 training/configs/photo_guided.yaml \\
        --evaluation training/configs/photo_eval_int8.yaml
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from purifier.contract import INPUT_NAME, NOISE_INPUT_NAME
from purifier.noise import is_stochastic, seeded_noise
from training.export.card import export_dir, update_card
from training.export.variant import VariantParityError, write_variant

__all__ = ["VariantParityError", "add_int8", "int8_summary"]

INT8_MEAN_TOLERANCE = 2 / 255
CALIBRATION = {"crops": 64, "size": 224, "min_scale": 0.3, "seed": 7, "fgsm_eps_255": 16}
CALIBRATION_BATCH = 8


def calibration_images(config: dict[str, Any]) -> np.ndarray:
    """CALIBRATION["crops"] training images of the purifier's dataset; for photos, half
    clean and half FGSM-perturbed on the guide (labels: the guide's own top-1)."""
    count = int(CALIBRATION["crops"])
    if config["data"].get("dataset") != "photos":
        from training.data.registry import load_dataset

        return load_dataset(config["data"], "train")[0][:count].numpy()
    from training.attacks import build_attack
    from training.data.photos import PhotoCrops
    from training.models import build_model

    crops = PhotoCrops(
        "train",
        count=count,
        size=int(CALIBRATION["size"]),
        min_scale=float(CALIBRATION["min_scale"]),
        seed=int(CALIBRATION["seed"]),
    )
    x = crops.tensor()
    half = count // 2
    guide = build_model(config["guide"]["model"]).eval().requires_grad_(False)
    with torch.no_grad():
        labels = guide(x[half:]).argmax(1)
    fgsm = build_attack({"kind": "fgsm", "eps": CALIBRATION["fgsm_eps_255"] / 255})
    x[half:] = fgsm(guide, x[half:], labels).detach()
    return x.numpy()


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a stack of images."""

    def __init__(self, images: np.ndarray, stochastic: bool = False) -> None:
        self.batches = iter(
            images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)
        )
        self.stochastic = stochastic  # a `noise` input, calibrated on seeded draws
        self.drawn = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        if batch is None:
            return None
        inputs = {INPUT_NAME: batch.astype(np.float32)}
        if self.stochastic:
            self.drawn += 1
            inputs[NOISE_INPUT_NAME] = seeded_noise(self.drawn, batch.shape)
        return inputs


def quantize(images: np.ndarray) -> Any:
    """make(model.onnx, out) for write_variant: pre-processing (shape inference and
    onnxruntime's basic fusions, as its quantisation tool recommends), then quantisation."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cpu = ["CPUExecutionProvider"]

    class Reader(_Batches, CalibrationDataReader):
        pass

    def make(fp32_path: Path, out: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            # Symbolic shape inference (for transformers) cannot follow the in-graph
            # padding to a multiple of 8; ONNX's own shape inference is enough for convs.
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(out),
                Reader(images, is_stochastic(ort.InferenceSession(str(fp32_path), providers=cpu))),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )

    return make


def add_int8(version_dir: Path, inputs: list[np.ndarray], config: dict[str, Any]) -> dict[str, Any]:
    """Write version_dir/model.int8.onnx calibrated for this purifier's config, check it,
    record it in card.json (`int8`)."""
    images = calibration_images(config)
    return write_variant(
        version_dir,
        "int8",
        quantize(images),
        inputs,
        mean_abs=INT8_MEAN_TOLERANCE,
        format="QDQ, weights int8 per channel, activations uint8 (min-max)",
        calibration={
            **CALIBRATION,
            "split": "train",
            "clean": len(images) // 2 if config["data"].get("dataset") == "photos" else None,
        },
    )


def int8_summary(result: dict[str, Any]) -> dict[str, Any]:
    """From a table with `fp32` and `int8` columns: per target, the clean agreement (%)
    and each attack's fooling rate (%) of both, and the undefended one."""
    targets = {}
    for name, target in result["targets"].items():
        rows = target["rows"]
        clean = next(r for r in rows if r["attack"] == "clean")["error"]
        targets[name] = {
            "clean_agreement": {k: round(100 - clean[k], 2) for k in ("fp32", "int8")},
            "fooling": {
                r["attack"]: {k: r["error"][k] for k in ("none", "fp32", "int8")}
                for r in rows
                if r["attack"] != "clean"
            },
        }
    return {
        "command": result["command"],
        "num_images": result["num_images"],
        "data": result["data"],
        "device": result["device"],
        "targets": targets,
    }


def main() -> None:
    from training.config import load_config
    from training.evaluation import evaluate_from_config
    from training.export.graph import parity_inputs, real_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the purifier's training config")
    parser.add_argument("--evaluation", help="a table config with fp32 and int8 columns")
    parser.add_argument("--output-root", type=Path, default=Path("exported_models"))
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="reuse the table's cells")
    args = parser.parse_args()
    config = load_config(args.config)
    version_dir = export_dir(config, args.output_root, args.version)
    channels = int(config["purifier"].get("in_channels", 3))
    inputs = [x.numpy() for x in parity_inputs(channels, real_images(config))]
    record = add_int8(version_dir, inputs, config)
    print(f"wrote {version_dir / record['file']}: {record}")
    if args.evaluation:
        result = evaluate_from_config(args.evaluation, resume=args.resume)
        record["evaluation"] = int8_summary(result)
        update_card(version_dir, int8=record)
        print(f"recorded the INT8 evaluation in {version_dir / 'card.json'}")


if __name__ == "__main__":
    main()
