"""Weight interpolation between two purifiers of one architecture, measured.

When one purifier is fine-tuned from another (fmnist-nrp-clean from fmnist-nrp), the
straight line between their weights (WiSE-FT, Wortsman et al., CVPR 2022) gives a family
of purifiers at no training cost. This measures that family's trade-off - clean error
against attack error - on the images, targets and attacks of an evaluation config:

    python -m training.studies.interpolation training/configs/fmnist_eval_cpu.yaml \
        --pair nrp nrp_clean --attacks FGSM PGD-40

writes OUTPUT_DIR/interpolation.{md,json}: one table per target, a column per weight t
(t = 0: the first purifier, t = 1: the second).
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import apply_run_settings, load_config
from training.defenses import PurifierDefense, identity
from training.device import device_label
from training.evaluation import Evaluation, load_target, markdown_table, target_parts


def interpolate_state(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], t: float
) -> dict[str, torch.Tensor]:
    """(1 - t) * first + t * second for every floating-point tensor; integer buffers
    (BatchNorm's step counters) are taken from `first`."""
    if first.keys() != second.keys():
        raise ValueError("the two purifiers have different parameters: not one architecture")
    return {
        k: torch.lerp(v, second[k], t) if v.is_floating_point() else v.clone()
        for k, v in first.items()
    }


def interpolated(first: nn.Module, second: nn.Module, t: float) -> PurifierDefense:
    """A purifier of `first`'s architecture with the weights at t on the line to `second`."""
    model = copy.deepcopy(first)
    model.load_state_dict(interpolate_state(first.state_dict(), second.state_dict(), t))
    return PurifierDefense(model)


def measure(
    config: dict[str, Any],
    pair: tuple[str, str],
    weights: list[float],
    attacks: list[str],
    command: str,
) -> dict[str, Any]:
    """The clean and attack rows of every target in an evaluation config (as loaded), a
    column per weight."""
    apply_run_settings(config)
    start = time.time()
    unknown = [name for name in pair if name not in config["purifiers"]]
    if unknown:
        raise SystemExit(
            f"{config['_path']}: no purifier named {unknown} (it has {list(config['purifiers'])})"
        )
    ev = Evaluation(config)
    first, second = (ev.purifiers[name].net for name in pair)
    columns = {f"t={t:g}": interpolated(first, second, t) for t in weights}
    ev.defenses = {"none": identity, **columns}
    result: dict[str, Any] = {
        "command": command,
        "num_images": len(ev.x),
        "labelled": ev.y is not None,  # markdown_table words the cells by it
        "device": device_label(ev.device),
        "pair": list(pair),
        "weights": weights,
        "defenses": list(ev.defenses),
        "targets": {},
    }
    for name, entry in config["targets"].items():
        target_cfg = target_parts(entry)[0]  # every target gets the rows asked for here
        rows: list[dict[str, Any]] = []
        ev.evaluate_target(load_target(target_cfg, ev.device), rows, attacks=attacks)
        result["targets"][name] = {"config": target_cfg, "rows": rows}
    result["elapsed_s"] = round(time.time() - start, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="an evaluation config naming both purifiers")
    parser.add_argument("--pair", nargs=2, required=True, metavar=("FIRST", "SECOND"))
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1])
    parser.add_argument("--attacks", nargs="+", default=["FGSM", "PGD-40"])
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    command = "python -m training.studies.interpolation " + shlex.join(argv)
    config = load_config(args.config)
    result = measure(config, tuple(args.pair), args.weights, args.attacks, command)
    out_dir = Path(config["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "interpolation.json").write_text(json.dumps(result, indent=2) + "\n")
    first, second = args.pair
    table = f"Weights (1 - t) * {first} + t * {second}. " + markdown_table(result)
    (out_dir / "interpolation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
