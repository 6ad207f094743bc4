"""Which feature layer should SSP attack? NRP (Fig. 4) picks the layer of its feature
network whose SSP adversaries transfer best. This measures it for MobileNetV2.

For each candidate layer: SSP (Alg. 1) at eps on held-out photo crops, then the fooling
rate (top-1 differs from the clean image's top-1) on the source network itself and on
every transfer target, and the mean feature distortion reached.

    python -m training.studies.ssp_layers training/configs/photo_ssp_layers.yaml [--set k=v ...]
Writes OUT/ssp_layers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from training.attacks.ssp import SSP
from training.config import apply_run_settings, load_config
from training.data.photos import PhotoCrops
from training.defenses import identity
from training.device import device_label, pick_device
from training.evaluation import predict
from training.models import FeatureExtractor, build_model


def compare_layers(config: dict[str, Any]) -> dict[str, Any]:
    apply_run_settings(config)
    device = pick_device(config.get("device", "auto"))
    data = config["data"]
    x = PhotoCrops("test", data["count"], data["size"], data["min_scale"], data["seed"]).tensor()
    x = x.to(device)
    source = build_model(config["source"]).to(device)
    targets = {"source": source} | {
        name: build_model(spec).to(device) for name, spec in config["targets"].items()
    }
    bs = int(config.get("batch_size", 32))
    clean = {name: predict(model, x, identity, bs) for name, model in targets.items()}
    rows = []
    for layer in config["layers"]:
        started = time.time()
        ssp = SSP(FeatureExtractor(source, str(layer)), **config["ssp"])
        adv = torch.cat([ssp(x[i : i + bs]) for i in range(0, len(x), bs)])
        with torch.no_grad():
            distortion = torch.cat(
                [
                    ssp.feature_distortion(x[i : i + bs], adv[i : i + bs])
                    for i in range(0, len(x), bs)
                ]
            )
        row = {
            "layer": str(layer),
            "feature_distortion": round(distortion.mean().item(), 4),
            "linf": round((adv - x).abs().max().item(), 4),
            "seconds": round(time.time() - started, 1),
        }
        for name, model in targets.items():
            fooled = (predict(model, adv, identity, bs) != clean[name]).float().mean().item()
            row[f"fooling_{name}"] = round(100 * fooled, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    chooser = f"fooling_{config.get('choose_by', 'source')}"
    # Ties (a few images decide) go to the layer that also fools the source more.
    best = max(rows, key=lambda r: (r[chooser], r["fooling_source"]))
    return {
        "name": config["name"],
        "images": len(x),
        "device": device_label(device),
        "ssp": config["ssp"],
        "chosen_by": chooser,
        "best_layer": best["layer"],
        "rows": rows,
    }


def markdown(result: dict[str, Any], command: str) -> str:
    keys = [k for k in result["rows"][0] if k.startswith("fooling_")]
    head = "| layer | feature distortion | " + " | ".join(k[8:] + " fooled %" for k in keys)
    lines = [
        f"SSP layer comparison on {result['images']} held-out photo crops, {result['device']}; "
        f"SSP {result['ssp']}. `{command}`",
        "",
        head + " |",
        "|---" * (2 + len(keys)) + "|",
    ]
    for r in result["rows"]:
        cells = " | ".join(f"{r[k]:.2f}" for k in keys)
        lines.append(f"| {r['layer']} | {r['feature_distortion']} | {cells} |")
    lines += [
        "",
        f"Best by {result['chosen_by']} (ties: by source fooling): layer {result['best_layer']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    result = compare_layers(config)
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m training.studies.ssp_layers " + " ".join(
        [args.config, *(f"--set {s}" for s in args.set)]
    )
    result["command"] = command
    (out / "ssp_layers.json").write_text(json.dumps(result, indent=2))
    (out / "ssp_layers.md").write_text(markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()
