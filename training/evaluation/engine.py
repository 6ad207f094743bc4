"""The table's engine: every (attack, defense) cell on one target, cached as measured."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.attacks import BPDAWrapper, ExpectationOverNoise, budget_text, build_attack
from training.data.registry import load_dataset
from training.defenses import Defense, PurifierDefense, build_baseline, identity
from training.device import pick_device
from training.evaluation.cache import (
    CellCache,
    attack_identity,
    cell_key,
    model_identity,
    with_weight_hashes,
)
from training.evaluation.confidence import confident_mask
from training.evaluation.report import attack_kind
from training.evaluation.targets import classifier_specs, load_purifier, load_target
from training.models import build_feature_extractor

NOT_APPLICABLE = None  # a cell where the attack cannot be run against that defense
NOT_RUN = "not run"  # a cell left out by the config's `only` (e.g. too slow on this machine)


def predict(model: nn.Module, x: torch.Tensor, defense: Defense, batch: int) -> torch.Tensor:
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            preds.append(model(defense(x[i : i + batch])).argmax(1))
    return torch.cat(preds)


def error_percent(pred: torch.Tensor, y: torch.Tensor) -> float:
    return round(100.0 * (pred != y).float().mean().item(), 2)


def cell_seed(seed: int, *parts: str) -> int:
    """A table cell's own seed, from the run's seed and what names the cell (attack,
    defense, step): each cell's random starts and purifier noise repeat run to run
    whichever other cells a run measures or resumes."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


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
        # `reuse_purified`: with a fixed source every target meets the same adversaries and
        # (seeded per cell) the same purifier noise, so each (row, column) is purified once
        # and kept for the next target - float32, 0.6 MB per 224x224 image: for costly
        # purifiers (the FFDNet prior) on machines with the memory for it.
        self._purified: dict[tuple[str, str], torch.Tensor] | None = (
            {} if config.get("reuse_purified") and "source" in config else None
        )
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
            "seeding": "per cell",  # cell_seed; older caches seeded every cell alike
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
        x = self.x
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
                    d: error_percent(self._predict(target, x, active[d], "clean", d), y)
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
                        pred = self._predict(target, x_adv, defense, spec["name"], name)
                        errors[name] = error_percent(pred, y)
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
                    pipeline = (
                        ExpectationOverNoise(front, attacked, int(spec["eot"]))
                        if spec.get("eot")
                        else nn.Sequential(front, attacked)
                    ).eval()
                    x_adv = self._craft(
                        spec["name"], name, attack, pipeline, y_attack, spec.get("batch")
                    )
                    pred = self._predict(target, x_adv, defense, spec["name"], name)
                    errors[name] = error_percent(pred, y)
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
        are near-ties that sub-grey-level noise flips (training.studies.agreement_floor), so
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

    def _predict(
        self, target: nn.Module, x: torch.Tensor, defense: Defense, attack: str, name: str
    ) -> torch.Tensor:
        """The target's top-1 through the defense; a randomised purifier's noise is drawn
        from the cell's seed, the same for every target."""
        if self._purified is None or defense is identity:
            torch.manual_seed(cell_seed(self.seed, attack, name, "purify"))
            return predict(target, x, defense, self.batch)
        key = (attack, name)
        if key not in self._purified:
            torch.manual_seed(cell_seed(self.seed, attack, name, "purify"))
            with torch.no_grad():
                self._purified[key] = torch.cat(
                    [defense(x[i : i + self.batch]) for i in range(0, len(x), self.batch)]
                )
        return predict(target, self._purified[key], identity, self.batch)

    def _craft(
        self,
        attack_name: str,
        defense: str,
        attack: Any,
        model: nn.Module,
        y: torch.Tensor,
        batch: int | None = None,
    ) -> torch.Tensor:
        """Adversarial examples, seeded by their cell; crafted once per (attack, defense)
        when a fixed source model makes them, so every target sees the same ones.
        `batch`: images per attack batch (EOT rows multiply each by their draws)."""
        key = (attack_name, defense)
        if self.source is not None and key in self._crafted:
            return self._crafted[key]
        seed = cell_seed(self.seed, attack_name, defense, "attack")
        x_adv = run_attack(attack, model, self.x, y, int(batch or self.batch), seed)
        if self.source is not None:
            self._crafted[key] = x_adv
        return x_adv

    def _adaptive_front(self, adaptive: str, name: str, defense: Defense) -> nn.Module | None:
        if adaptive == "bpda":
            return BPDAWrapper(defense)
        if adaptive == "whitebox":
            return defense if isinstance(defense, PurifierDefense) else None
        raise ValueError(f"unknown adaptive mode {adaptive!r} (bpda | whitebox)")
