"""Does the suspicion verdict's calibration hold on clean images it was not set on?
(issue 37, deliverable 6: false alarms within 2x the nominal rate.)

The card's thresholds are the (1 - f) quantiles of the served statistic on one clean set
(`export.detection.data`, training/export/detection.py). This purifies each clean set
named in the config's `false_alarms` section with each model as served (model.onnx,
images rounded to 8 bits, fresh noise) and reports the share its thresholds flag, with
95% Wilson intervals, and the statistic's median and 99th percentile beside the
thresholds - so that a miss says whether the photos or the selection moved it:

    python -m training.detection.false_alarms training/configs/detection_photo_prior.yaml [--card]

writes OUTPUT_DIR/false_alarms.{md,json} and the raw scores, false_alarm_scores.npz;
with --card, each card's `detection.calibration_check`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.config import apply_run_settings, load_config
from training.detection.scores import quantized, rate, residual_statistics
from training.detection.study import DetectionStudy, add_to_detection_section
from training.detection.summary import percent_cell

WITHIN = 2.0  # the check: measured false alarms at most 2x the nominal rate


def measure(
    study: DetectionStudy, sets: dict[str, dict[str, Any]], scores_out: dict[str, Any] | None = None
) -> dict[str, Any]:
    """{model: {set: {n, median, p99, thresholds, rates: {fpr: rate}, holds: {fpr: bool}}}};
    each set's raw scores go into `scores_out` ("model / set": array) where given."""
    out: dict[str, Any] = {}
    purifiers = study.purifiers()
    for set_name, data in sets.items():
        x, _ = study.selected(data)
        x = quantized(x)
        for name, (purify, card) in purifiers.items():
            if "statistic" not in card:
                raise SystemExit(f"{name}: its card has no calibrated detection section")
            scores = residual_statistics(purify, x, study.batch)[card["statistic"]]
            if scores_out is not None:
                scores_out[f"{name} / {set_name}"] = scores
            rates = {fpr: rate(scores > t) for fpr, t in card["thresholds"].items()}
            out.setdefault(name, {})[set_name] = {
                "data": data,
                "n": len(x),
                "statistic": card["statistic"],
                "median": float(np.median(scores)),
                "p99": float(np.quantile(scores, 0.99)),
                "thresholds": card["thresholds"],
                "rates": rates,
                "holds": {
                    fpr: r["percent"] <= WITHIN * 100 * float(fpr) for fpr, r in rates.items()
                },
            }
            print(f"{name} / {set_name}: n = {len(x)}, {rates}", flush=True)
    return out


def record_in_cards(result: dict[str, Any], folders: dict[str, Path]) -> None:
    """Each card's `detection.calibration_check`: per clean set, n and the rate flagged
    at each threshold, with whether it holds (what an operator reads before trusting 1%)."""
    for name, folder in folders.items():
        check = {
            "command": f"python -m training.detection.false_alarms {result['config_path']}",
            "within": WITHIN,
            "sets": {
                set_name: {"n": r["n"], "rates": r["rates"], "holds": r["holds"]}
                for set_name, r in result["models"][name].items()
            },
        }
        add_to_detection_section(folder, calibration_check=check)
        print(f"recorded the calibration check in {folder / 'card.json'}")


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "False alarms of the served suspicion thresholds on clean sets they were not "
        f"calibrated on: `python -m training.detection.false_alarms {result['config_path']}`; "
        f"{result['elapsed_s']} s on the CPU. A rate holds when it is at most {WITHIN:g}x "
        "its nominal one; 95% Wilson intervals.",
        "",
    ]
    for name, sets in result["models"].items():
        first = next(iter(sets.values()))
        fprs = list(first["thresholds"])
        lines += [
            f"### {name} (statistic {first['statistic']}; thresholds "
            + ", ".join(f"{first['thresholds'][f]:.5g} at {f}" for f in fprs)
            + ")",
            "",
            "| clean set | n | median | 99th pct | "
            + " | ".join(f"flagged at {f} (holds)" for f in fprs)
            + " |",
            "|---" * (4 + len(fprs)) + "|",
        ]
        for set_name, r in sets.items():
            cells = " | ".join(
                f"{percent_cell(r['rates'][f])}% ({'yes' if r['holds'][f] else 'no'})" for f in fprs
            )
            lines.append(
                f"| {set_name} | {r['n']} | {r['median']:.5g} | {r['p99']:.5g} | {cells} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.detection.false_alarms", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config")
    parser.add_argument("--card", action="store_true", help="record the check in each card")
    parser.add_argument("--set", action="append", default=[], help="key.sub=value override")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    if "false_alarms" not in config:
        raise SystemExit(f"{args.config} has no false_alarms section (named clean sets)")
    apply_run_settings(config)
    started = time.time()
    study = DetectionStudy(config)
    scores: dict[str, Any] = {}
    result = {
        "config_path": args.config,
        "models": measure(study, config["false_alarms"], scores),
        "elapsed_s": round(time.time() - started, 1),
    }
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "false_alarms.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out / "false_alarms.md").write_text(text)
    np.savez_compressed(out / "false_alarm_scores.npz", **scores)  # for other thresholds
    print(text)
    if args.card:
        record_in_cards(result, study.models)


if __name__ == "__main__":
    main()
