"""A bank of adversarial examples crafted once on the guide model, HGD-style (Liao et al.
2018, Sec. 4.1: the denoiser is trained on a fixed set of adversarial images made by
several attacks at random budgets, plus noise).

Label-free: each crop's label is the source model's own clean top-1, so no image needs
a human label. Every family the photo table evaluates is in the mix (what HGD removes is
what it saw: NRP's Table 1). A family is a spec for `build_attack` whose budget comes
from the bank's epsilon list and whose step (`alpha`, or SSP's `step_size`) is a
fraction of it. Sub-batches of `chunk` crops share one family and one budget.

Why a bank and not online attacks: on the 2-core CPU a 10-step attack costs 10 forward-
backward passes of MobileNetV2 per image, about 4x a training step; a bank crafted once
per training session is reused for every epoch of that session, and the next session
crafts a new one (a new seed), so the purifier still sees fresh perturbations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.attacks.library import build_attack

# Spec keys of a bank family that are the bank's own, not the attack's. `layer` picks the
# feature extractor a feature-space family (SSP) distorts, so one bank can hold SSP at
# several depths of the same network (issue 37).
_FAMILY_KEYS = ("weight", "alpha_frac", "layer")


@dataclass(frozen=True)
class Family:
    name: str
    weight: float
    spec: dict[str, Any]  # build_attack's spec without the budget
    alpha_frac: float | None  # step size as a fraction of eps (iterative attacks)
    layer: str | None = None  # the feature extractor's layer (SSP), None: the bank's own

    def attack_spec(self, eps: float) -> dict[str, Any]:
        spec = {**self.spec, "eps": eps}
        if self.alpha_frac is not None:
            step_key = "step_size" if spec["kind"] == "ssp" else "alpha"
            spec[step_key] = self.alpha_frac * eps
        return spec


def families_from_config(config: dict[str, dict[str, Any]]) -> list[Family]:
    out = []
    for name, raw in config.items():
        spec = {k: v for k, v in raw.items() if k not in _FAMILY_KEYS}
        if "kind" not in spec:
            raise ValueError(f"bank family {name!r} needs a kind")
        frac = raw.get("alpha_frac")
        layer = raw.get("layer")
        out.append(
            Family(
                name,
                float(raw.get("weight", 1.0)),
                spec,
                frac and float(frac),
                None if layer is None else str(layer),
            )
        )
    if not out:
        raise ValueError("the bank needs at least one attack family")
    return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def craft_bank(
    clean: torch.Tensor,
    source: nn.Module,
    features: nn.Module | Mapping[str | None, nn.Module],
    families: list[Family],
    eps_choices: list[float],
    seed: int,
    chunk: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Adversarial versions of `clean` (uint8 NCHW): one family and budget per chunk,
    drawn with the seed. Returns {"adv": uint8 like clean, "family": [name per image],
    "eps": [per image]}; the attacks' random starts use torch's global RNG, seeded.
    `features`: one extractor, or one per family `layer` (None: the default)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    weights = np.array([f.weight for f in families], float)
    weights /= weights.sum()
    adv = torch.empty_like(clean)
    names: list[str] = []
    budgets: list[float] = []
    attacks: dict[tuple[str, float], Callable] = {}
    chunks = range(0, len(clean), chunk)
    for start in tqdm(chunks, desc="attack bank", disable=not progress, mininterval=30):
        family = families[rng.choice(len(families), p=weights)]
        eps = float(rng.choice(eps_choices))
        key = (family.name, eps)
        if key not in attacks:
            extractor = features if isinstance(features, nn.Module) else features[family.layer]
            attacks[key] = build_attack(family.attack_spec(eps), extractor)
        x = to_float(clean[start : start + chunk])
        y = top1(source, x)  # label-free: the source's own clean top-1
        adv[start : start + chunk] = to_uint8(attacks[key](source, x, y).detach())
        names += [family.name] * len(x)
        budgets += [eps] * len(x)
    return {"adv": adv, "family": names, "eps": budgets}


def load_or_craft(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A session's bank from its cache file, or crafted and cached (runs/ is not in git:
    a bank is hundreds of MB, and the seed remakes it)."""
    if path.exists():
        return torch.load(path, weights_only=False)
    bank = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(bank, tmp)
    tmp.replace(path)
    return bank
