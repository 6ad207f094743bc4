"""`purifier eval CONFIG`: the robustness table (targets x attacks x defenses).

Cells are the target classifier's top-1 error (%) on the first N test images.
Non-adaptive attacks are crafted on the undefended classifier (or, for SSP, on the
feature extractor) and then passed through each defense. Adaptive rows attack the
defended pipeline itself: BPDA (identity backward through the defense) for every
defense, and white-box gradients through each differentiable purifier.

Unlabelled data (photos): the reference is the target's own top-1 on the clean image,
so a cell is the fooling rate (%) and the clean row is 100 - clean agreement. With a
`source` model, attacks are crafted once on it and measured on every target (transfer).
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.attacks import ATTACKS, SURROGATES, BPDAWrapper, build_attack
from training.confidence import confident_mask
from training.config import apply_run_settings, load_config
from training.data.registry import load_dataset
from training.defenses import Defense, PurifierDefense, build_baseline, identity
from training.eval_cache import (
    CellCache,
    attack_identity,
    cell_key,
    model_identity,
    with_weight_hashes,
)
from training.loop import device_label, pick_device
from training.models import build_feature_extractor, build_model, load_weights

NOT_APPLICABLE = None  # a cell where the attack cannot be run against that defense
NOT_RUN = "not run"  # a cell left out by the config's `only` (e.g. too slow on this machine)


def load_target(spec: str | Path | dict[str, Any], device: torch.device) -> nn.Module:
    """A classifier from its training config (arch + weights path), or from an arch spec
    of a pretrained model ({arch: mobilenet_v2_imagenet})."""
    if isinstance(spec, dict):
        model = build_model(spec)
    else:
        cfg = load_config(spec)
        model = load_weights(build_model(cfg["model"]), cfg["weights"])
    return model.to(device).eval().requires_grad_(False)


def load_purifier(config_path: str | Path, device: torch.device) -> PurifierDefense:
    cfg = load_config(config_path)
    net = load_weights(build_model(cfg["purifier"]), cfg["weights"])
    return PurifierDefense(net).to(device)


def predict(model: nn.Module, x: torch.Tensor, defense: Defense, batch: int) -> torch.Tensor:
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            preds.append(model(defense(x[i : i + batch])).argmax(1))
    return torch.cat(preds)


def error_percent(pred: torch.Tensor, y: torch.Tensor) -> float:
    return round(100.0 * (pred != y).float().mean().item(), 2)


def run_attack(
    attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int
) -> torch.Tensor:
    torch.manual_seed(seed)  # random starts and random targets repeat run to run
    out = [
        attack(model, x[i : i + batch], y[i : i + batch]).detach() for i in range(0, len(x), batch)
    ]
    return torch.cat(out)


def perturbation_stats(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, float]:
    d = (x_adv - x).flatten(1)
    return {
        "linf_max": round(d.abs().max().item(), 4),
        "linf_mean": round(d.abs().max(1).values.mean().item(), 4),
        "l2_mean": round(d.norm(dim=1).mean().item(), 4),
    }


class Evaluation:
    """One run of the table for every target in the config."""

    def __init__(self, config: dict[str, Any], resume: bool = False) -> None:
        self.config = config
        self.device = pick_device(config.get("device", "auto"))
        self.batch = int(config.get("batch_size", 500))
        self.seed = int(config.get("seed", 0))
        data = config["data"]
        x, y = load_dataset(data, data.get("split", "test"))
        self.source = load_target(config["source"], self.device) if "source" in config else None
        if "min_confidence" in data:
            x, y = self._confident(x, y, float(data["min_confidence"]))
        n = int(data.get("num_images", 2000))
        self.x = x[:n].to(self.device)
        self.y = None if y is None else y[:n].to(self.device)  # None: photos, no labels
        self._crafted: dict[tuple[str, str], torch.Tensor] = {}  # transfer: once per source
        self.features = build_feature_extractor(config["feature_extractor"]).to(self.device)
        self.defenses: dict[str, Defense] = {
            name: build_baseline(spec) for name, spec in config["defenses"].items()
        }
        self.purifiers = {
            name: load_purifier(path, self.device) for name, path in config["purifiers"].items()
        }
        self.defenses.update(self.purifiers)
        # Finished cells go to disk as they are measured; `resume` reads them back.
        self.cache = CellCache(Path(config["output_dir"]) / "cells", resume)
        self._images_id = {
            "data": config["data"],
            "images": len(self.x),
            "seed": self.seed,
            "batch": self.batch,
            "device": self.device.type,
            "source": model_identity(config.get("source")),
            "features": with_weight_hashes(config["feature_extractor"]),
        }
        self._defense_ids = {
            **config["defenses"],
            **{name: model_identity(path) for name, path in config["purifiers"].items()},
        }

    def evaluate_target(
        self,
        target: nn.Module,
        rows: list[dict[str, Any]],
        on_row: Any = None,
        defenses: list[str] | None = None,
        attacks: list[str] | None = None,
        target_spec: str | Path | dict[str, Any] | None = None,
        attack_overrides: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Append one row per attack to `rows` (calling on_row after each, so partial
        tables survive a stop); return a few adversarial examples per attack. With
        `defenses`, only those columns are measured for this target, the rest not run;
        with `attacks`, only those rows; with `attack_overrides`, rows of one kind are
        crafted with other settings (target_parts). With `target_spec` (the target's config or arch
        spec), cells are kept in and, when resuming, read from the cell cache."""
        x, batch = self.x, self.batch
        active = {d: f for d, f in self.defenses.items() if defenses is None or d in defenses}
        skipped = {d: NOT_RUN for d in self.defenses if d not in active}
        # What counts as wrong: the label, or (no labels) the target's clean top-1.
        y = self._reference(target)
        attacked = self.source if self.source is not None else target
        y_attack = y if attacked is target else self._reference(attacked)
        rows.append(
            {
                "attack": "clean",
                "budget": "-",
                "kind": "clean",
                "perturbation": None,
                "error": {
                    d: error_percent(predict(target, x, active[d], batch), y)
                    if d in active
                    else NOT_RUN
                    for d in self.defenses
                },
            }
        )
        examples: dict[str, torch.Tensor] = {}
        # The target's spec and weights' hashes, once per target (the cache keys use it).
        target_id = None if target_spec is None else model_identity(target_spec)
        for spec in self.config["attacks"]:
            if attacks is not None and spec["name"] not in attacks:
                continue
            override = (attack_overrides or {}).get(spec["kind"])
            if override:  # keys the cache too
                spec = {**spec, **override}
            attack = build_attack(spec, self._features_for(spec))
            t0 = time.time()
            adaptive = spec.get("adaptive")
            errors: dict[str, float | str | None] = dict(skipped)
            stats = None
            resumed = 0  # cells read back from the cache
            row_key = (
                None
                if target_id is None
                else cell_key(self._images_id, target_id, attack_identity(spec))
            )
            if adaptive is None:
                kept = self._kept_row(row_key, active)
                if kept is not None:
                    stats, examples[spec["name"]] = kept["stats"], kept["examples"]
                    errors.update(kept["errors"])
                    resumed = len(kept["errors"])
                else:
                    x_adv = self._craft(spec["name"], "-", attack, attacked, y_attack)
                    stats = perturbation_stats(x, x_adv)
                    examples[spec["name"]] = x_adv[:8].cpu()
                    for name, defense in active.items():
                        errors[name] = error_percent(predict(target, x_adv, defense, batch), y)
                        self._keep(row_key, name, errors[name])
                    if row_key is not None:
                        self.cache.put(
                            row_key, {"stats": stats, "examples": examples[spec["name"]]}
                        )
            else:
                for name, defense in active.items():
                    front = self._adaptive_front(adaptive, name, defense)
                    if front is None:
                        errors[name] = NOT_APPLICABLE
                        continue
                    if name not in spec.get("only", self.defenses):
                        errors[name] = NOT_RUN
                        continue
                    kept_cell = self._kept_cell(row_key, name)
                    if kept_cell is not None:
                        errors[name] = kept_cell
                        resumed += 1
                        continue
                    pipeline = nn.Sequential(front, attacked).eval()
                    x_adv = self._craft(spec["name"], name, attack, pipeline, y_attack)
                    errors[name] = error_percent(predict(target, x_adv, defense, batch), y)
                    self._keep(row_key, name, errors[name])
            errors = {d: errors[d] for d in self.defenses}  # the table's column order
            row = {
                "attack": spec["name"],
                "budget": budget_text(spec),
                "kind": attack_kind(spec),
                "perturbation": stats,
                "error": errors,
                "seconds": round(time.time() - t0, 1),  # this run's: less when resumed
                "cells_resumed": resumed,
            }
            if override:  # the row's name says PGD; this says which PGD ran on this target
                row["crafted_with"] = override
            rows.append(row)
            if on_row is not None:
                on_row()
            print(
                f"  {spec['name']:<28} "
                + "  ".join(f"{k}={'n/a' if v is None else v}" for k, v in errors.items()),
                flush=True,
            )
        return examples

    def _confident(
        self, x: torch.Tensor, y: torch.Tensor | None, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`data.min_confidence`: only the images that the source and every target
        classify with top-1 probability >= threshold. On crops of wallpapers many top-1s
        are near-ties that sub-grey-level noise flips (training.agreement_floor), so
        clean agreement there measures tie-breaking, not purification."""
        models = [load_target(spec, self.device) for spec in classifier_specs(self.config)]
        keep = confident_mask(models, x.to(self.device), threshold, self.batch).cpu()
        return x[keep], None if y is None else y[keep]

    def _cell(self, row_key: str | None, defense: str) -> str | None:
        if row_key is None or defense not in self._defense_ids:
            return None  # a defense added by hand, not from the config: not cached
        return cell_key(row_key, self._defense_ids[defense])

    def _keep(self, row_key: str | None, defense: str, error: float) -> None:
        key = self._cell(row_key, defense)
        if key is not None:
            self.cache.put(key, {"error": error})

    def _kept_cell(self, row_key: str | None, defense: str) -> float | None:
        key = self._cell(row_key, defense)
        kept = None if key is None else self.cache.get(key)
        return None if kept is None else kept["error"]

    def _kept_row(self, row_key: str | None, active: dict[str, Defense]) -> dict[str, Any] | None:
        """A non-adaptive row read back whole (stats, examples, every active column), or
        None: one missing column means crafting the attack again."""
        row = None if row_key is None else self.cache.get(row_key)
        if row is None:
            return None
        errors = {name: self._kept_cell(row_key, name) for name in active}
        if any(e is None for e in errors.values()):
            return None
        return {**row, "errors": errors}

    def _features_for(self, spec: dict[str, Any]) -> nn.Module:
        """The feature space a feature attack works in: the config's extractor (SSP),
        or the attack's own (e.g. CAFA in class activation features)."""
        if "feature_extractor" not in spec:
            return self.features
        return build_feature_extractor(spec["feature_extractor"]).to(self.device)

    def _reference(self, model: nn.Module) -> torch.Tensor:
        """The labels, or (no labels) the model's own clean top-1."""
        return self.y if self.y is not None else predict(model, self.x, identity, self.batch)

    def _craft(
        self, attack_name: str, defense: str, attack: Any, model: nn.Module, y: torch.Tensor
    ) -> torch.Tensor:
        """Adversarial examples; crafted once per (attack, defense) when a fixed source
        model makes them, so every target sees the same ones."""
        key = (attack_name, defense)
        if self.source is not None and key in self._crafted:
            return self._crafted[key]
        x_adv = run_attack(attack, model, self.x, y, self.batch, self.seed)
        if self.source is not None:
            self._crafted[key] = x_adv
        return x_adv

    def _adaptive_front(self, adaptive: str, name: str, defense: Defense) -> nn.Module | None:
        if adaptive == "bpda":
            return BPDAWrapper(defense)
        if adaptive == "whitebox":
            return defense if isinstance(defense, PurifierDefense) else None
        raise ValueError(f"unknown adaptive mode {adaptive!r} (bpda | whitebox)")


def budget_text(spec: dict[str, Any]) -> str:
    if "eps" in spec:
        return f"Linf {spec['eps']}"
    if "l2_eps" in spec:
        return f"L2 {spec['l2_eps']}"
    if spec["kind"] == "cw":
        return f"L2 min (c={spec.get('c', 1.0)})"
    if spec["kind"] == "spatial":
        return (
            f"rot {spec.get('max_rotation', 30.0)} deg, shift {spec.get('max_translation', 3.0)} px"
        )
    if spec["kind"] == "stadv":
        return f"flow smoothness (tau={spec.get('tau', 0.05)})"
    return "-"


def attack_kind(spec: dict[str, Any]) -> str:
    if spec.get("adaptive"):
        return f"adaptive ({spec['adaptive']})"
    seen = spec.get("seen")
    if isinstance(seen, (str, list)):  # seen by some purifiers only
        return "seen by " + (seen if isinstance(seen, str) else ", ".join(seen))
    return "seen" if seen else "unseen"


def target_parts(
    entry: str | dict[str, Any],
) -> tuple[str | dict[str, Any], list[str] | None, list[str] | None, dict[str, dict[str, Any]]]:
    """(the target's config or arch spec, its columns, its rows, its attack overrides)
    from a config's `targets` entry: a training config, a pretrained arch spec, or
    {config: PATH, defenses: [...], attacks: [...]} to measure only some cells on it
    (None: all), with `attack_overrides: {pgd: {surrogate: cas_heads}}` to craft every
    row of one kind with those settings replaced on it (a CAS classifier masks the
    gradient of its output: its rows attack a stand-in, training.attacks.cas_surrogates)."""
    if isinstance(entry, dict) and "config" in entry:
        overrides = {k: dict(v) for k, v in entry.get("attack_overrides", {}).items()}
        kinds = {v.get("kind", k) for k, v in overrides.items()}
        unknown = sorted(kinds - {*ATTACKS, "ssp"})
        if unknown:
            raise KeyError(f"attack_overrides names unknown attacks {unknown}")
        surrogates = {v["surrogate"] for v in overrides.values() if "surrogate" in v}
        unknown = sorted(surrogates - set(SURROGATES))
        if unknown:
            raise KeyError(f"attack_overrides names unknown surrogates {unknown}")
        return entry["config"], entry.get("defenses"), entry.get("attacks"), overrides
    return entry, None, None, {}


def classifier_specs(config: dict[str, Any]) -> list[str | dict[str, Any]]:
    """The source's and every target's config or arch spec, each once (the photo tables'
    source, MobileNetV2, is also a target: one pass over the images is enough for it)."""
    specs = [config["source"]] if "source" in config else []
    for entry in config["targets"].values():
        spec = target_parts(entry)[0]
        if spec not in specs:
            specs.append(spec)
    return specs


def evaluate_from_config(
    path: str | Path, overrides: list[str] | None = None, resume: bool = False
) -> dict[str, Any]:
    """The whole table for a config. `resume`: reuse the cells a stopped run of the same
    specs and weights already measured (training.eval_cache)."""
    config = load_config(path, overrides)
    apply_run_settings(config)
    start = time.time()
    ev = Evaluation(config, resume)
    result: dict[str, Any] = {
        # The command that reproduces the table: without --resume, which changes what is
        # measured again, not the numbers (rows count their `cells_resumed`).
        "command": "purifier eval "
        + " ".join(shlex.quote(a) for a in sys.argv[2:] if a != "--resume")
        if sys.argv[1:2] == ["eval"]
        else f"purifier eval {path}",
        "config": str(path),
        "num_images": len(ev.x),
        "data": config["data"],
        "labelled": ev.y is not None,
        "source": config.get("source"),
        "seed": ev.seed,
        "device": device_label(ev.device),
        "defenses": list(ev.defenses),
        "purifiers": list(ev.purifiers),
        "purifier_configs": dict(config["purifiers"]),
        "targets": {},
    }
    examples = None
    out_dir = Path(config["output_dir"])
    for name, entry in config["targets"].items():
        print(f"target {name}", flush=True)
        target_cfg, columns, attacks, attack_overrides = target_parts(entry)
        target = load_target(target_cfg, ev.device)
        rows: list[dict[str, Any]] = []
        result["targets"][name] = {"config": target_cfg, "rows": rows}
        if attack_overrides:
            result["targets"][name]["attack_overrides"] = attack_overrides
        adv = ev.evaluate_target(
            target,
            rows,
            on_row=lambda: write_reports(result, out_dir),
            defenses=columns,
            attacks=attacks,
            target_spec=target_cfg,
            attack_overrides=attack_overrides,
        )
        if examples is None:
            examples = (target, adv)
    # This run's seconds: cells read back by --resume were measured (and timed) earlier.
    result["elapsed_s"] = round(time.time() - start, 1)
    result["cells_resumed"] = sum(
        row.get("cells_resumed", 0) for t in result["targets"].values() for row in t["rows"]
    )
    write_reports(result, out_dir)
    # The figure shows a purifier's output: a table of classic defenses only has none.
    if ev.purifiers and examples is not None and config.get("figure_attack") in examples[1]:
        from training.figures import example_figure

        target, adv = examples
        purifier = next(iter(ev.purifiers.values()))
        example_figure(
            ev.x[:8].cpu(),
            adv[config["figure_attack"]],
            purifier.cpu(),
            out_dir / "examples.png",
            title=config["figure_attack"],
        )
    resumed = f", {result['cells_resumed']} cells read back" if result["cells_resumed"] else ""
    print(f"wrote {out_dir}/table.md, table.csv, table.json in {result['elapsed_s']} s{resumed}")
    return result


def format_cell(value: float | str | None, n: int | None = None) -> str:
    """A rate in percent; with n, its 95% Wilson interval beside it."""
    if isinstance(value, str):
        return value
    if value is None:
        return "n/a"
    if n is None:
        return f"{value:.1f}"
    low, high = wilson_interval(round(value * n / 100), n)
    return f"{value:.1f} [{low:.1f}, {high:.1f}]"


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial rate, in percent (Wilson 1927): unlike
    the normal approximation it stays inside [0, 100] and is honest near 0% and 100%."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def markdown_table(result: dict[str, Any]) -> str:
    if result.get("labelled", True):
        what = f"Top-1 error (%) on {result['num_images']} Fashion-MNIST test images"
    else:
        what = (
            f"Fooling rate (%): top-1 differs from the target's clean top-1, on "
            f"{result['num_images']} held-out photo crops (clean row: 100 - clean agreement)"
        )
        if "min_confidence" in result.get("data", {}):
            what += (
                f", those the source and every target classify with top-1 probability >= "
                f"{result['data']['min_confidence']}"
            )
        if result.get("source"):
            what += f"; attacks crafted on {result['source']['arch']}"
    # Photo tables are a few hundred crops: each rate carries its 95% Wilson interval.
    n = None if result.get("labelled", True) else int(result["num_images"])
    if n is not None:
        what += f"; [95% Wilson interval], n = {n}"
    lines = [f"{what}; device: {result['device']}; `{result['command']}`.", ""]
    defenses = result["defenses"]
    for target, block in result["targets"].items():
        lines += [f"### Target: {target}", ""]
        for kind, override in block.get("attack_overrides", {}).items():
            lines += [f"Every `{kind}` row on {target} is crafted with `{override}`.", ""]
        lines.append("| attack | budget | kind | " + " | ".join(defenses) + " |")
        lines.append("|---|---|---|" + "---|" * len(defenses))
        for row in block["rows"]:
            cells = " | ".join(format_cell(row["error"][d], n) for d in defenses)
            lines.append(f"| {row['attack']} | {row['budget']} | {row['kind']} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def write_reports(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.json").write_text(json.dumps(result, indent=2))
    (out_dir / "table.md").write_text(markdown_table(result))
    with (out_dir / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["target", "attack", "budget", "kind", *result["defenses"]])
        for target, block in result["targets"].items():
            for row in block["rows"]:
                writer.writerow(
                    [
                        target,
                        row["attack"],
                        row["budget"],
                        row["kind"],
                        *(
                            "" if row["error"][d] is None else row["error"][d]
                            for d in result["defenses"]
                        ),
                    ]
                )
