"""The classifiers and purifiers a table measures, from the config's entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import load_config
from training.defenses import PurifierDefense
from training.models import build_model, load_weights
from training.registry import ATTACKS, SURROGATES


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
        unknown = sorted(kinds - set(ATTACKS))
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
