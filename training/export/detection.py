"""The suspicion verdict's thresholds, calibrated at export (issue 24).

The purifier's config names the statistic to serve and the clean images to calibrate
on (`export.detection`: held-out crops that are not the detection study's reported ones):

    export:
      detection:
        statistic: hf_rms          # chosen by training.detection's `selection`
        data: {dataset: photos, split: val, val_crops: 1000, crop: 224, min_scale: 0.3}

Each served file (model.onnx, and model.int8.onnx where there is one: its residual is not
float32's) purifies those images rounded to 8 bits, and the threshold at false-positive
rate f is the clean scores' (1 - f) quantile: a clean image is flagged when its score is
above it. The card's `detection` section holds them; the service reads it.
`python -m training.export.detection CONFIG` recalibrates an existing export.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from purifier.contract import INT8_MODEL_FILE, MODEL_FILE
from purifier.suspicion import FALSE_POSITIVE_RATES, STATISTICS
from training.defenses import onnx_model
from training.detection.scores import quantized, residual_statistics, split_images, threshold_at
from training.export.card import export_dir, update_card

BATCH = 32


def calibration_images(data: dict[str, Any]) -> torch.Tensor:
    x, _ = split_images(data)
    return quantized(x[: int(data.get("num_images", len(x)))])


def calibrate(version_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The card's `detection` section for the export in version_dir."""
    statistic = spec["statistic"]
    if statistic not in STATISTICS:
        raise KeyError(f"export.detection.statistic {statistic!r}; known: {sorted(STATISTICS)}")
    images = calibration_images(spec["data"])
    by_file = {}
    for name in (MODEL_FILE, INT8_MODEL_FILE):
        path = version_dir / name
        if path.exists():
            scores = residual_statistics(onnx_model(str(path)), images, BATCH)[statistic]
            by_file[name] = {fpr: threshold_at(scores, float(fpr)) for fpr in FALSE_POSITIVE_RATES}
    return {
        "statistic": statistic,
        "thresholds": by_file[MODEL_FILE],  # model.onnx and its same-graph variants
        "thresholds_by_file": by_file,
        "calibration": {"data": spec["data"], "n": len(images), "rounded_to_8_bits": True},
    }


def add_detection(version_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    spec = config.get("export", {}).get("detection")
    if spec is None:
        return None
    section = calibrate(version_dir, spec)
    update_card(version_dir, detection=section)
    return section


def main() -> None:
    from training.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the purifier's training config")
    parser.add_argument("--output-root", type=Path, default=Path("exported_models"))
    parser.add_argument("--version", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.config)
    torch.set_num_threads(int(config.get("threads", 2)))
    version_dir = export_dir(config, args.output_root, args.version)
    section = add_detection(version_dir, config)
    if section is None:
        raise SystemExit(f"{args.config} has no export.detection section")
    print(
        f"recorded detection thresholds in {version_dir / 'card.json'}: "
        f"{section['thresholds_by_file']}"
    )


if __name__ == "__main__":
    main()
