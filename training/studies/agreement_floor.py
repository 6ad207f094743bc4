"""How much clean agreement a natural-image table allows: noise of a given PSNR, measured.

A purifier's clean agreement (the purified clean image keeps the target's top-1) can only
be as high as the targets' top-1s are stable under changes of the purifier's size. This
adds white Gaussian noise at fixed PSNRs (seeded, clipped to [0, 1]) to the clean images
of an unlabelled evaluation config and measures each target's agreement with its own
clean top-1 - on all images, and on those that the source and every target classify with
top-1 probability >= the threshold (the selection of `data.min_confidence`, a label-free
stand-in for "correctly classified"):

    python -m training.studies.agreement_floor training/configs/photo_eval.yaml

writes OUTPUT_DIR/agreement_floor.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from training.config import apply_run_settings, load_config
from training.data.registry import load_dataset
from training.defenses import Defense, identity
from training.device import device_label, pick_device
from training.evaluation import classifier_specs, load_target, predict, target_parts
from training.evaluation.confidence import confident_mask

PSNRS_DB = (50.0, 45.0, 40.0, 35.0, 30.0)


def gaussian_noise(psnr_db: float, seed: int) -> Defense:
    """x + N(0, sigma^2), clipped, with sigma such that the unclipped PSNR is psnr_db
    (images in [0, 1]: PSNR = -20 log10 sigma). The noise is drawn on the CPU from its
    own generator seeded with `seed`: a fresh defense per target gives every target the
    same noise, batch after batch."""
    sigma = 10.0 ** (-psnr_db / 20.0)
    generator = torch.Generator().manual_seed(seed)

    def apply(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return (x + sigma * noise).clamp(0.0, 1.0)

    return apply


def agreement_percent(
    pred: torch.Tensor, reference: torch.Tensor, keep: torch.Tensor
) -> float | None:
    if not bool(keep.any()):
        return None
    return round(100.0 * (pred[keep] == reference[keep]).float().mean().item(), 2)


def measure(config: dict[str, Any], psnrs: tuple[float, ...], threshold: float) -> dict[str, Any]:
    device = pick_device(config.get("device", "auto"))
    batch, seed = int(config.get("batch_size", 32)), int(config.get("seed", 0))
    data = config["data"]
    x, labels = load_dataset(data, data.get("split", "test"))
    if labels is not None:
        raise ValueError("agreement_floor is for unlabelled (photo) tables: it needs no labels")
    x = x[: int(data.get("num_images", len(x)))].to(device)
    # The photo table's own selection (data.min_confidence): every model is sure.
    models = [load_target(spec, device) for spec in classifier_specs(config)]
    confident = confident_mask(models, x, threshold, batch)
    targets = {
        name: load_target(target_parts(e)[0], device) for name, e in config["targets"].items()
    }
    result: dict[str, Any] = {
        "device": device_label(device),
        "num_images": len(x),
        "confident_images": int(confident.sum()),
        "threshold": threshold,
        "psnr_db": list(psnrs),
        "targets": {},
    }
    everyone = torch.ones_like(confident)
    for name, target in targets.items():
        reference = predict(target, x, identity, batch)
        rows = {}
        for psnr in psnrs:
            pred = predict(target, x, gaussian_noise(psnr, seed), batch)
            rows[str(psnr)] = {
                "all": agreement_percent(pred, reference, everyone),
                "confident": agreement_percent(pred, reference, confident),
            }
        result["targets"][name] = rows
    return result


def markdown(result: dict[str, Any]) -> str:
    names = list(result["targets"])
    head = ["PSNR of the noise"] + [
        f"{n}: all {result['num_images']} / confident {result['confident_images']}" for n in names
    ]
    lines = [
        f"Clean agreement (%) under white Gaussian noise; confident: top-1 probability "
        f">= {result['threshold']} on the source and every target. `{result['command']}` "
        f"({result['device']}, {result['elapsed_s']} s)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for psnr in result["psnr_db"]:
        cells = ["{all} / {confident}".format(**result["targets"][n][str(psnr)]) for n in names]
        lines.append(f"| {psnr:g} dB | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--psnr", type=float, nargs="+", default=list(PSNRS_DB))
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    apply_run_settings(config)
    start = time.time()
    result = measure(config, tuple(args.psnr), args.threshold)
    result["command"] = "python -m training.studies.agreement_floor " + shlex.join(argv)
    result["elapsed_s"] = round(time.time() - start, 1)
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement_floor.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "agreement_floor.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
