"""The guided purifier: HGD, the high-level representation guided denoiser (Liao et al.,
CVPR 2018), with the guards a CPU-length run needs (issue 27).

HGD's loss (Sec. 3.2) trains the denoiser D so that the guide f sees the purified
adversarial image as it sees the clean one: L = |f_l(D(x*)) - f_l(x)|_1, with l the last
feature map (FGD) or the logits (LGD). Here, per adversarial crop x* of clean x:

    L_adv   = w_pix |D(x*) - x|_1 + w_feat sum_l rel-L1(f_l(T D(x*)), f_l(T x))
              + w_kl KL(softmax g(T x) || softmax g(T D(x*)))
    L_clean = the same three terms with D(x) in place of D(x*)

rel-L1 is the L1 distance over the clean map's mean magnitude, so that layers of very
different scales weigh alike. L_clean is not in HGD: a sidecar sees mostly clean images,
and it is what penalises a learned pattern that steers the guide instead of removing
noise (such a pattern changes clean images' features too). T is one random view per
step - a resize to a random side and a per-image mirror, applied alike to both sides -
so that a correction fitted to one view of the guide does not pay.

Adversaries come from a bank crafted on the guide per session (training.attacks.bank);
validation measures MobileNetV2's clean agreement and fooling on held-out `val` crops
(never EfficientNet-Lite0, the unseen target, and never the reported `test` split).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.attacks.bank import (
    Family,
    craft_bank,
    families_from_config,
    load_or_craft,
    to_float,
    to_uint8,
    top1,
)
from training.attacks.library import build_attack
from training.data.photos import PhotoCrops
from training.data.registry import load_dataset
from training.distributed import Distributed
from training.evaluation.confidence import confidence
from training.loop import Checkpoint, fit, start_run
from training.methods.nrp import psnr
from training.models import build_feature_extractor, build_model, load_weights
from training.models.targets import FeatureTaps
from training.registry import TRAINERS


def random_view(batch: torch.Tensor, side: int, flip: torch.Tensor) -> torch.Tensor:
    """T: resize to side x side (bilinear, differentiable) and mirror where flip is True."""
    out = batch
    if side != batch.shape[-1] or side != batch.shape[-2]:
        out = F.interpolate(batch, size=(side, side), mode="bilinear", align_corners=False)
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)


def relative_l1(purified: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return (purified - clean).abs().mean() / clean.abs().mean().clamp_min(1e-6)


class GuidedObjective:
    """L_adv + L_clean (module docstring) for a batch of clean crops, their adversaries'
    purified images and their own purified images."""

    def __init__(self, guide: FeatureTaps, loss: dict[str, float], view: dict[str, Any]) -> None:
        self.guide = guide
        self.w = {
            key: float(loss.get(key, default))
            for key, default in (
                ("pixel", 1.0),
                ("feature", 1.0),
                ("logit_kl", 1.0),
                ("clean_pixel", 1.0),
                ("clean_feature", 1.0),
                ("clean_kl", 1.0),
            )
        }
        self.min_scale = float(view.get("min_scale", 1.0))
        self.max_scale = float(view.get("max_scale", 1.0))
        self.flip = bool(view.get("flip", True))

    def draw_view(self, n: int, size: int, gen: torch.Generator) -> tuple[int, torch.Tensor]:
        u = torch.rand((), generator=gen).item()
        side = max(8, round(size * (self.min_scale + u * (self.max_scale - self.min_scale))))
        flip = torch.rand(n, generator=gen) < 0.5 if self.flip else torch.zeros(n, dtype=bool)
        return side, flip

    def __call__(
        self,
        clean: torch.Tensor,
        purified_adv: torch.Tensor,
        purified_clean: torch.Tensor,
        gen: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        n = len(clean)
        side, flip = self.draw_view(n, clean.shape[-1], gen)
        flip = flip.to(clean.device)
        with torch.no_grad():
            ref_taps, ref_logits = self.guide(random_view(clean, side, flip))
        both = torch.cat([purified_adv, purified_clean])
        taps, logits = self.guide(random_view(both, side, flip.repeat(2)))
        ref_prob = ref_logits.softmax(1)
        out: dict[str, torch.Tensor] = {}
        for part, sl, prefix in (("adv", slice(0, n), ""), ("clean", slice(n, 2 * n), "clean_")):
            purified = both[sl]
            pixel = (purified - clean).abs().mean()
            feature = sum(relative_l1(t[sl], r) for t, r in zip(taps, ref_taps, strict=True))
            kl = F.kl_div(logits[sl].log_softmax(1), ref_prob, reduction="batchmean")
            out[f"{part}_pixel"], out[f"{part}_feature"], out[f"{part}_kl"] = pixel, feature, kl
            out[f"{part}_loss"] = (
                self.w[f"{prefix}pixel"] * pixel
                + self.w[f"{prefix}feature"] * feature
                + self.w[f"{prefix}kl" if prefix else "logit_kl"] * kl
            )
        out["loss"] = out["adv_loss"] + out["clean_loss"]
        return out


# How a validated checkpoint is scored (lower is better), among those at the agreement
# floor. "fooling": the mean white-box fooling on the guide, ties broken by the
# perturbation left (fooling moves in steps of 1/n). On photos that fooling saturates at
# 98-100% at every step, so the rule degenerates to "the earliest step"; "left" scores by
# the mean fraction of the perturbation left after purification, |P(x*) - x| / |x* - x|,
# which keeps moving while fooling does not.
SELECTION_RULES: dict[str, Callable[[dict[str, float]], float]] = {
    "fooling": lambda s: s["val_mean_fooling"] + s["val_mean_left"] / 100,
    "left": lambda s: s["val_mean_left"],
}


def load_guide(spec: dict[str, Any], device: torch.device) -> nn.Module:
    """The guide (and attack source): a pretrained arch spec, or an arch with `weights`."""
    model = build_model(spec["model"])
    if "weights" in spec:
        model = load_weights(model, spec["weights"])
    return model.to(device).eval().requires_grad_(False)


class GuidedTrainer:
    """One Adam step of the purifier per batch of (clean, adversarial) bank pairs; the
    guide is fixed. Holds its own RNG (views) so that a resumed run continues it."""

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        guide_model = load_guide(config["guide"], device)
        tc = config["train"]
        if tc.get("channels_last", False):
            guide_model.to(memory_format=torch.channels_last)  # oneDNN NHWC: faster on CPU
        self.guide = FeatureTaps(guide_model, [str(x) for x in config["guide"]["layers"]])
        self.purifier = build_model(config["purifier"]).to(device)
        self.objective = GuidedObjective(self.guide, config.get("loss", {}), config.get("view", {}))
        self.opt = torch.optim.Adam(
            self.purifier.parameters(),
            lr=float(tc["lr"]),
            betas=tuple(tc.get("betas", (0.9, 0.999))),
        )
        # bfloat16 autocast for the purifier's convolutions: AMX makes them ~2x faster on
        # this CPU (MobileNetV2's depthwise convolutions gain nothing and stay float32).
        self.autocast = bool(tc.get("bf16_purifier", False))
        self.gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
        self.patch = int(tc["patch"]) if tc.get("patch") else None
        self.agreement_floor = float(tc.get("agreement_floor", 97.0))
        self.selection = str(tc.get("selection", "fooling"))
        if self.selection not in SELECTION_RULES:
            raise ValueError(
                f"train.selection {self.selection!r}; known: {', '.join(SELECTION_RULES)}"
            )
        self.best_path = Path(tc["best_weights"]) if tc.get("best_weights") else None
        self.best_score = float("inf")
        # What a best score is comparable with: the rule and the validation set it was
        # measured on. A resumed or restaged run that changes either starts a new best.
        self.best_key = f"{self.selection}:{validation_cache_path(config).stem}"
        self.train_purifier: nn.Module = self.purifier

    @property
    def model(self) -> nn.Module:
        return self.purifier

    def distribute(self, ctx: Distributed) -> None:
        self.train_purifier = ctx.wrap(self.purifier)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.train_purifier(x)
        return out.float()

    def step(self, clean_u8: torch.Tensor, adv_u8: torch.Tensor) -> dict[str, float]:
        self.purifier.train()
        clean, adv = self.patches(to_float(clean_u8), to_float(adv_u8))
        purified = self.purify(torch.cat([adv, clean]))
        losses = self.objective(clean, purified[: len(clean)], purified[len(clean) :], self.gen)
        self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.opt.step()
        out = {k: v.item() for k, v in losses.items()}
        with torch.no_grad():
            out["residual_clean"] = (purified[len(clean) :] - clean).abs().mean().item()
        return out

    @torch.no_grad()
    def validate(self, x: torch.Tensor, adversaries: torch.Tensor) -> dict[str, float]:
        """Held-out val crops: MobileNetV2's clean agreement through the purifier, its
        fooling rate on each validation attack (crafted on it once) with and without the
        purifier, and the purifier's change to clean images. Keeps the best weights: the
        lowest mean fooling among checkpoints whose agreement is at the floor."""
        self.purifier.eval()
        guide = self.guide.model
        reference = top1(guide, x, 32)
        purified = torch.cat([self.purifier(x[i : i + 32]) for i in range(0, len(x), 32)])
        out = {
            "val_clean_agreement": 100.0
            * (top1(guide, purified, 32) == reference).float().mean().item(),
            "val_clean_change": (purified - x).abs().mean().item(),
            "val_clean_psnr": psnr(purified, x),
        }
        fooling, left = [], []
        for i, adv in enumerate(adversaries):
            cleaned = torch.cat([self.purifier(adv[j : j + 32]) for j in range(0, len(adv), 32)])
            rate = 100.0 * (top1(guide, cleaned, 32) != reference).float().mean().item()
            out[f"val_attack{i}_fooling"] = rate
            out[f"val_attack{i}_undefended"] = (
                100.0 * (top1(guide, adv, 32) != reference).float().mean().item()
            )
            # How much of the perturbation is left: |P(x*) - x| / |x* - x| (1 = none removed)
            out[f"val_attack{i}_left"] = (
                (cleaned - x).abs().mean() / (adv - x).abs().mean()
            ).item()
            fooling.append(rate)
            left.append(out[f"val_attack{i}_left"])
        out["val_mean_fooling"] = sum(fooling) / max(len(fooling), 1)
        out["val_mean_left"] = sum(left) / max(len(left), 1)
        self._keep_if_best(out)
        return out

    def patches(self, clean: torch.Tensor, adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """With train.patch, one random patch of that side per pair (the same place in
        both): a step costs (patch / crop)^2 as much, and each bank pair gives many."""
        if self.patch is None or self.patch >= clean.shape[-1]:
            return clean, adv
        h, w = clean.shape[-2:]
        top = int(torch.randint(0, h - self.patch + 1, (), generator=self.gen))
        left = int(torch.randint(0, w - self.patch + 1, (), generator=self.gen))
        window = (..., slice(top, top + self.patch), slice(left, left + self.patch))
        return clean[window], adv[window]

    def _keep_if_best(self, scores: dict[str, float]) -> None:
        """Selection on `val` among checkpoints at or above the agreement floor, by
        `train.selection` (SELECTION_RULES)."""
        if self.best_path is None or scores["val_clean_agreement"] < self.agreement_floor:
            return
        score = SELECTION_RULES[self.selection](scores)
        if score >= self.best_score:
            return
        self.best_score = score
        self.best_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.purifier.state_dict(), self.best_path)
        self.best_path.with_suffix(".json").write_text(json.dumps(scores, indent=2))

    def state_dict(self) -> dict[str, Any]:
        return {
            "purifier": self.purifier.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "best_score": self.best_score,
            "best_key": self.best_key,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.purifier.load_state_dict(state["purifier"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        # Runs saved before best_key existed selected by fooling on their validation set.
        same = state.get("best_key", self.best_key if self.selection == "fooling" else None)
        self.best_score = (
            float(state.get("best_score", float("inf"))) if same == self.best_key else float("inf")
        )


def bank_seed(config: dict[str, Any], resume: bool = True) -> int:
    """A new bank each time a run starts or resumes: seeded by where it resumes (and by
    `bank.salt`, which a new stage of a staged run sets so that it does not meet its
    predecessor's bank again), so a re-run of the same session finds its bank in the
    cache."""
    state = Checkpoint(config["output_dir"]).load() if resume else None
    position = (0, 0) if state is None else (state["epoch"], state["step"])
    salt = config["bank"].get("salt")
    key = f"{config.get('seed', 0)}:{position}{'' if salt is None else f':{salt}'}".encode()
    return int(hashlib.sha1(key).hexdigest()[:8], 16)


def training_images(config: dict[str, Any], count: int, seed: int) -> torch.Tensor:
    """`count` clean training images, drawn with the seed: new random crops of the
    training photos, or a random subset of a tensor dataset's training split less its
    last `validation.images`, which validation holds out."""
    data = config["data"]
    if data.get("dataset") == "photos":
        crops = PhotoCrops(
            "train",
            count=count,
            size=int(data.get("crop", 128)),
            min_scale=float(data.get("min_scale", 0.1)),
            seed=seed,
        )
        return crops.tensor()
    images, _ = load_dataset(data, "train")
    usable = len(images) - int(config["validation"]["images"])
    order = torch.randperm(usable, generator=torch.Generator().manual_seed(seed))
    return images[order[:count]]


def confident_training_images(
    config: dict[str, Any], guide: nn.Module, count: int, seed: int
) -> torch.Tensor:
    """`training_images`, or with `bank.candidates_per_crop: k` the crop the guide is
    surest of among k candidates, judged at `bank.judge_size` (the side the guide sees in
    training). The prior's calibration (shared/calibration/photo-prior.md): crops the guide
    is unsure of let the guide's terms steer the denoiser into a pattern, not a cleanup."""
    k = int(config["bank"].get("candidates_per_crop", 1))
    images = training_images(config, k * count, seed)
    if k == 1:
        return images
    side = int(config["bank"].get("judge_size", images.shape[-1]))
    judged = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    scores = confidence(guide, judged, 32).view(count, k)
    pick = scores.argmax(1) + k * torch.arange(count)
    return images[pick]


def validation_images(config: dict[str, Any], guide: nn.Module) -> torch.Tensor:
    """Held-out clean images the guide is sure of: crops of the `val` photos, or the last
    `validation.images` of a tensor dataset's training split (its test split is the one
    reported)."""
    vc, data = config["validation"], config["data"]
    if data.get("dataset") == "photos":
        images = PhotoCrops(
            "val",
            count=int(vc.get("candidates", 4 * vc["images"])),
            size=int(vc.get("crop", 224)),
            min_scale=float(vc.get("min_scale", 0.3)),
            seed=int(config.get("seed", 0)) + 2,
        ).tensor()
    else:
        images = load_dataset(data, "train")[0][-int(vc["images"]) :]
    keep = confidence(guide, images, 32) >= float(vc.get("min_confidence", 0.0))
    return images[keep][: int(vc["images"])]


def bank_feature_extractors(
    spec: dict[str, Any], families: list[Family], device: torch.device
) -> dict[str | None, nn.Module]:
    """The bank's SSP feature extractor (None) and one per other `layer` a family names,
    all cut from `spec`'s network."""
    layers = {None: spec["layer"], **{f.layer: f.layer for f in families if f.layer}}
    return {
        key: build_feature_extractor({**spec, "layer": layer}).to(device)
        for key, layer in layers.items()
    }


def build_bank(
    config: dict[str, Any], device: torch.device, resume: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, adversarial) uint8 training images, the adversaries crafted on the guide."""
    bc = config["bank"]
    seed = bank_seed(config, resume)
    source = load_guide(config["guide"], device)
    families = families_from_config(bc["families"])
    features = bank_feature_extractors(bc["ssp_features"], families, device)

    def make() -> dict[str, Any]:
        clean = to_uint8(confident_training_images(config, source, int(bc["size"]), seed))
        made = craft_bank(
            clean,
            source,
            features,
            families,
            [float(e) / 255 for e in bc["eps_255"]],
            seed=seed,
            chunk=int(bc.get("chunk", 16)),
        )
        return {"clean": clean, **made, "seed": seed}

    bank = load_or_craft(Path(bc.get("dir", "runs/banks")) / f"{config['name']}_{seed}.pt", make)
    print(f"{config['name']}: attack bank {seed} ({len(bank['clean'])} crops)")
    return bank["clean"], bank["adv"]


def validation_cache_path(config: dict[str, Any]) -> Path:
    """Where the validation set made by these settings is cached."""
    key = json.dumps([config["validation"], config["guide"], config.get("seed", 0)], sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(config["bank"].get("dir", "runs/banks")) / f"validation_{digest}.pt"


def build_validation(
    config: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident val crops (MobileNetV2 top-1 >= min_confidence) and, per validation
    attack, their adversaries crafted on MobileNetV2: [attacks, n, C, H, W]. Crafted once
    (minutes on the CPU) and cached by the settings that make them."""
    path = validation_cache_path(config)

    def make() -> dict[str, torch.Tensor]:
        x, adv = _craft_validation(config, device)
        return {"x": x, "adv": adv}

    made = load_or_craft(path, make)
    return made["x"], made["adv"]


def _craft_validation(
    config: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    vc = config["validation"]
    guide = load_guide(config["guide"], device)
    x = to_float(to_uint8(validation_images(config, guide).to(device)))
    features = build_feature_extractor(config["bank"]["ssp_features"]).to(device)
    y = top1(guide, x, 32)
    torch.manual_seed(int(config.get("seed", 0)))
    adversaries = []
    for spec in vc["attacks"]:
        attack = build_attack(spec, features)
        adv = torch.cat([attack(guide, x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)])
        adversaries.append(to_float(to_uint8(adv)))
    return x, torch.stack(adversaries)


def select_weights(config: dict[str, Any], last: Path) -> Path:
    """config["weights"] (what eval and export read): the best validated weights when a
    checkpoint reached the agreement floor, else the last ones; the run summary beside
    it says which."""
    best = Path(config["train"]["best_weights"]) if config["train"].get("best_weights") else None
    chosen = best if best is not None and best.exists() else last
    target = Path(config["weights"])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chosen, target)
    summary = json.loads(last.with_suffix(".json").read_text())
    summary["selected"] = "best" if chosen == best else "last"
    if chosen == best:
        summary["selection"] = json.loads(best.with_suffix(".json").read_text())
    target.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return target


def train_on_bank(config: dict[str, Any], resume: bool, trainer_class: type[GuidedTrainer]) -> Path:
    """The guided recipe's run: validation set, bank, `trainer_class`'s steps, selection."""
    ctx = start_run(config)
    val = build_validation(config, ctx.device)
    bank = build_bank(config, ctx.device, resume)
    trainer = trainer_class(config, ctx.device)
    last = Path(config["output_dir"]) / "last.pt"
    fit({**config, "weights": str(last)}, trainer, ctx, bank, val, resume)
    return select_weights(config, last)


@TRAINERS.register("guided")
def train_guided(config: dict[str, Any], resume: bool = True) -> Path:
    return train_on_bank(config, resume, GuidedTrainer)
