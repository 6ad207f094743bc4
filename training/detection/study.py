"""Does the purifier's residual betray an attack? The detection study of issue 24.

`python -m training.detection CONFIG [--card]` purifies held-out clean images and their
adversarial versions with each exported model (the ONNX file as served), scores every
residual P(x) - x with each statistic of purifier.suspicion, and reports per attack and
budget the AUROC and the true-positive rate at 1% and 5% false-positive rate, with n and
95% Wilson intervals. Two kinds of operating point:
- `roc`: the threshold at that rate on the reported clean images themselves (the ROC
  curve's point: how separable the two sets are);
- `served`: the card's thresholds (training/export/detection.py, calibrated on other
  clean crops): the verdict a client of the service gets, with its measured rate of
  false alarms on the reported clean images.

Images are rounded to 8 bits before purification, as an HTTP client must send them.
Adversaries are crafted on the config's `source` (MobileNetV2 for photos, LeNet for
Fashion-MNIST), label-free where the data has no labels (the source's clean top-1).
With `selection`, the statistic with the best mean AUROC on attacked *calibration*
images is reported: what the purifier's config should serve, chosen off the reported
split. With `--card`, each model's card gets the summary for its served statistic.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from purifier.contract import MODEL_FILE
from purifier.suspicion import FALSE_POSITIVE_RATES, STATISTICS
from training.attacks.library import build_attack
from training.config import apply_run_settings, load_config
from training.defenses import Defense, identity, onnx_model
from training.detection.adaptive import adaptive_rows
from training.detection.scores import (
    quantized,
    rate,
    residual_statistics,
    split_images,
    threshold_at,
)
from training.detection.summary import adaptive as adaptive_section
from training.detection.summary import percent_cell
from training.evaluation import load_purifier, load_target, predict
from training.evaluation.confidence import confident_mask
from training.export.card import update_card
from training.models import build_feature_extractor


def separation(
    clean: np.ndarray, attacked: np.ndarray, served: dict[str, float] | None = None
) -> dict[str, Any]:
    """AUROC and the true-positive rates at each false-positive rate (module docstring)."""
    labels = np.r_[np.zeros(len(clean)), np.ones(len(attacked))]
    out: dict[str, Any] = {
        "auroc": round(float(roc_auc_score(labels, np.r_[clean, attacked])), 4),
        "n_clean": len(clean),
        "n_attacked": len(attacked),
        "roc": {
            fpr: rate(attacked > threshold_at(clean, float(fpr))) for fpr in FALSE_POSITIVE_RATES
        },
    }
    if served:
        out["served"] = {fpr: rate(attacked > t) for fpr, t in served.items()}
    return out


class DetectionStudy:
    """The images, the source model and the attacks of one config."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.device = torch.device("cpu")
        self.batch = int(config.get("batch_size", 32))
        self.source = load_target(config["source"], self.device)
        self.features = build_feature_extractor(config["feature_extractor"]).to(self.device)
        self.models = {
            name: Path(folder) for name, folder in config["models"].items()
        }  # exported version folders

    def images(self, data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's first `num_images` (confident ones where asked) and their labels
        (the source's own top-1 where the data has none)."""
        x, y = self.selected(data)
        y = predict(self.source, x, identity, self.batch) if y is None else y
        return x, y

    def selected(self, data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The split's first `num_images`, confident ones where asked, and their labels
        where the data has them."""
        x, y = split_images(data)
        if "min_confidence" in data:
            keep = confident_mask([self.source], x, float(data["min_confidence"]), self.batch)
            x, y = x[keep], None if y is None else y[keep]
        n = int(data.get("num_images", len(x)))
        return x[:n], None if y is None else y[:n]

    def craft(self, spec: dict[str, Any], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(int(self.config.get("seed", 0)))
        attack = build_attack(spec, self.features)
        parts = [
            attack(self.source, x[i : i + self.batch], y[i : i + self.batch]).detach()
            for i in range(0, len(x), self.batch)
        ]
        return quantized(torch.cat(parts))

    def purifiers(self) -> dict[str, tuple[Defense, dict[str, Any]]]:
        return {
            name: (
                onnx_model(str(folder / MODEL_FILE)),
                json.loads((folder / "card.json").read_text()).get("detection", {}),
            )
            for name, folder in self.models.items()
        }

    def select(self, purifiers: dict[str, tuple[Defense, dict[str, Any]]]) -> dict[str, Any]:
        """The statistic with the best mean AUROC on attacked calibration images."""
        sel = self.config["selection"]
        x, y = self.images(sel["data"])
        specs = [a for a in self.config["attacks"] if a["name"] in sel["attacks"]]
        if len(specs) != len(sel["attacks"]):
            raise ValueError(f"selection.attacks {sel['attacks']}: each must be in `attacks`")
        crafted = [self.craft(spec, x, y) for spec in specs]
        out = {}
        for name, (purify, _) in purifiers.items():
            clean = residual_statistics(purify, quantized(x), self.batch)
            attacked = [residual_statistics(purify, adv, self.batch) for adv in crafted]
            mean_auroc = {
                stat: round(
                    float(np.mean([separation(clean[stat], a[stat])["auroc"] for a in attacked])),
                    4,
                )
                for stat in STATISTICS
            }
            out[name] = {
                "mean_auroc": mean_auroc,
                "best": max(mean_auroc, key=mean_auroc.get),
                "attacks": sel["attacks"],
                "n": len(x),
            }
        return out

    def adaptive(
        self,
        purifiers: dict[str, tuple[Defense, dict[str, Any]]],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> dict[str, Any]:
        """training.detection.adaptive's rows for each purifier of `adaptive.purifiers`
        (name: its training config, whose weights are the exported graph's)."""
        spec = self.config["adaptive"]
        n = int(spec.get("num_images", len(x)))
        out: dict[str, Any] = {"spec": spec, "n": min(n, len(x)), "models": {}}
        for name, purifier_config in spec["purifiers"].items():
            served, card = purifiers[name]
            net = load_purifier(purifier_config, self.device)
            out["models"][name] = adaptive_rows(
                net, served, self.source, card, x[:n], y[:n], spec, self.batch
            )
        return out

    def run(self) -> dict[str, Any]:
        started = time.time()
        purifiers = self.purifiers()
        x, y = self.images(self.config["data"])
        clean_x = quantized(x)
        clean = {
            name: residual_statistics(p, clean_x, self.batch) for name, (p, _) in purifiers.items()
        }
        models: dict[str, Any] = {
            name: {
                "served": card.get("statistic"),
                "thresholds": card.get("thresholds"),
                "false_alarms": {
                    fpr: rate(clean[name][card["statistic"]] > t)
                    for fpr, t in card.get("thresholds", {}).items()
                },
                "attacks": {},
            }
            for name, (_, card) in purifiers.items()
        }
        curves: dict[str, dict[str, Any]] = {name: {} for name in purifiers}
        fooled: dict[str, Any] = {}  # how often each attack fools its source, undefended
        for spec in self.config["attacks"]:
            adv = self.craft(spec, x, y)
            fooled[spec["name"]] = rate(
                (predict(self.source, adv, identity, self.batch) != y).numpy()
            )
            print(f"{spec['name']}: crafted ({time.time() - started:.0f} s)", flush=True)
            for name, (purify, card) in purifiers.items():
                scores = residual_statistics(purify, adv, self.batch)
                served = card.get("statistic")
                models[name]["attacks"][spec["name"]] = {
                    stat: separation(
                        clean[name][stat],
                        scores[stat],
                        card.get("thresholds") if stat == served else None,
                    )
                    for stat in STATISTICS
                }
                if served:
                    curves[name][spec["name"]] = roc_points(clean[name][served], scores[served])
        result = {
            "config": self.config["name"],
            "n_clean": len(x),
            "data": self.config["data"],
            "source": self.config["source"],
            "source_fooled": fooled,
            "models": models,
            "curves": curves,
        }
        if "selection" in self.config:
            result["selection"] = self.select(purifiers)
        if "adaptive" in self.config:
            result["adaptive"] = self.adaptive(purifiers, x, y)
        result["elapsed_s"] = round(time.time() - started, 1)
        return result


def roc_points(clean: np.ndarray, attacked: np.ndarray) -> dict[str, list[float]]:
    labels = np.r_[np.zeros(len(clean)), np.ones(len(attacked))]
    fpr, tpr, _ = roc_curve(labels, np.r_[clean, attacked])
    return {"fpr": [round(float(v), 4) for v in fpr], "tpr": [round(float(v), 4) for v in tpr]}


def roc_figure(result: dict[str, Any], name: str, path: Path) -> Path:
    """One panel per attack family: its ROC curves at each budget, the served statistic,
    with the calibrated false-positive rates marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["curves"][name]
    families: dict[str, list[str]] = {}
    for attack in curves:
        families.setdefault(attack.rsplit(" ", 1)[0], []).append(attack)
    cols = min(3, len(families))
    rows = -(-len(families) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    served = result["models"][name]["served"]
    for ax, (family, attacks) in zip(axes.flat, families.items(), strict=False):
        for attack in attacks:
            auroc = result["models"][name]["attacks"][attack][served]["auroc"]
            c = curves[attack]
            ax.plot(c["fpr"], c["tpr"], label=f"{attack.rsplit(' ', 1)[-1]} (AUROC {auroc:.2f})")
        for fpr in FALSE_POSITIVE_RATES:
            ax.axvline(float(fpr), color="grey", lw=0.6, ls=":")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_title(family, fontsize=9)
        ax.set_xlabel("false-positive rate (clean)", fontsize=8)
        ax.set_ylabel("true-positive rate", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(families) :]:
        ax.axis("off")
    fig.suptitle(
        f"{name}: residual statistic {served}, n = {result['n_clean']} per class", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def source_name(spec: str | dict[str, Any]) -> str:
    return spec["arch"] if isinstance(spec, dict) else Path(spec).stem


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "Detection by the purifier's residual: "
        f"`python -m training.detection {result.get('config_path', result['config'])}`; "
        f"n = {result['n_clean']} clean images and as many attacked per row; "
        f"attacks crafted on {source_name(result['source'])}; {result['elapsed_s']} s on the CPU. "
        "TPR served: at the card's thresholds (calibrated on other clean images); TPR ROC: "
        "at the threshold that flags 1% of these clean images; 95% Wilson intervals.",
        "",
    ]
    for name, model in result["models"].items():
        served = model["served"]
        lines.append(f"### {name} (served statistic: {served or 'none calibrated'})")
        if served:
            alarms = model["false_alarms"]
            lines.append(
                "False alarms on the reported clean images: "
                + ", ".join(f"{percent_cell(r)}% at {fpr}" for fpr, r in alarms.items())
            )
        lines += [
            "",
            "| attack | fools source % | "
            + " | ".join(f"AUROC {s}" for s in STATISTICS)
            + " | TPR@1% served | TPR@5% served | TPR@1% ROC |",
            "|---" * (len(STATISTICS) + 5) + "|",
        ]
        for attack, per_stat in model["attacks"].items():
            aurocs = " | ".join(f"{per_stat[s]['auroc']:.3f}" for s in STATISTICS)
            if served:
                tprs = " | ".join(
                    percent_cell(per_stat[served]["served"][f]) for f in FALSE_POSITIVE_RATES
                )
                tprs += f" | {percent_cell(per_stat[served]['roc']['0.01'])}"
            else:
                tprs = "n/a | n/a | n/a"
            fooled = percent_cell(result["source_fooled"][attack])
            lines.append(f"| {attack} | {fooled} | {aurocs} | {tprs} |")
        lines.append("")
    lines += adaptive_section(result)
    if "selection" in result:
        lines.append("Statistic selection on attacked calibration images (not the reported ones):")
        for name, sel in result["selection"].items():
            lines.append(
                f"- {name}: best {sel['best']}, mean AUROC {sel['mean_auroc']} "
                f"(n = {sel['n']}, {', '.join(sel['attacks'])})"
            )
    return "\n".join(lines) + "\n"


def card_summary(result: dict[str, Any], name: str) -> dict[str, Any]:
    """What a card keeps of one model's study: its served statistic's figures."""
    model = result["models"][name]
    served = model["served"]
    return {
        "command": f"python -m training.detection {result['config_path']}",
        "data": result["data"],
        "n_clean": result["n_clean"],
        "false_alarms": model["false_alarms"],
        "attacks": {
            attack: {"auroc": per_stat[served]["auroc"], "tpr": per_stat[served]["served"]}
            for attack, per_stat in model["attacks"].items()
        },
    }


def add_to_detection_section(folder: Path, **fields: Any) -> None:
    """Add fields (a study's summary) to the card's calibrated `detection` section."""
    card = json.loads((folder / "card.json").read_text())
    if "detection" not in card:
        raise SystemExit(f"{folder}: no calibrated detection section to add the study to")
    update_card(folder, detection={**card["detection"], **fields})


def record_in_cards(result: dict[str, Any], folders: dict[str, Path]) -> None:
    for name, folder in folders.items():
        add_to_detection_section(folder, evaluation=card_summary(result, name))
        print(f"recorded the detection study in {folder / 'card.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.detection", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config")
    parser.add_argument("--card", action="store_true", help="record the summary in each card")
    parser.add_argument(
        "--select-only", action="store_true", help="only choose the statistic (selection)"
    )
    parser.add_argument("--set", action="append", default=[], help="key.sub=value override")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    apply_run_settings(config)
    study = DetectionStudy(config)
    if args.select_only:
        for name, sel in study.select(study.purifiers()).items():
            print(f"{name}: best {sel['best']}, mean AUROC {sel['mean_auroc']} (n = {sel['n']})")
        return
    result = {"config_path": args.config, **study.run()}
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "detection.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "detection.md").write_text(markdown(result))
    for name, model in result["models"].items():
        if model["served"]:
            roc_figure(result, name, out / f"roc_{name}.png")
    print(markdown(result))
    print(f"wrote {out}/detection.md, detection.json in {result['elapsed_s']} s")
    if args.card:
        record_in_cards(result, study.models)


if __name__ == "__main__":
    main()
