"""ARN: adversarial noise removing network trained on attack-invariant features
(Zhou et al., ICML 2021, Algorithm 1).

The K seen types of adversarial examples (e.g. PP: PGD_N + PGD_T; DP: DDN_N + PGD_N)
are crafted on the target classifier once, before training, as Algorithm 1 takes them
as given (and cached in the run's folder, so a resumed run does not craft them again).
Each step then encodes a mini-batch of them with E, restores it with G, and updates
  E on L_E = L_mse + lambda1 * L_att + lambda2 * L_nor   (Eq. 7)
  G on L_G = L_mse + theta * L_adv                       (Eq. 8)
then the attack discriminator D_A on Eq. 1 and the image discriminator D_I on Eq. 5.
With `include_natural` (the authors' code does this) natural images are one more input
type, so that the purifier also learns to leave clean images alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training.attacks.library import build_attack
from training.data.registry import train_and_validation
from training.distributed import Distributed
from training.loop import fit, start_run
from training.losses import (
    attack_classification_loss,
    gaussian_kl,
    image_discriminator_loss,
    image_generator_loss,
    squared_l2,
    uniform_label_loss,
)
from training.models import build_model, load_weights
from training.models.arn import ARNAutoencoder
from training.registry import TRAINERS


def load_target(spec: dict[str, Any], device: torch.device) -> nn.Module:
    """The fixed classifier the seen attacks are crafted on."""
    model = load_weights(build_model(spec["model"]), spec["weights"]).to(device).eval()
    return model.requires_grad_(False)


class ARNTrainer:
    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        self.target = load_target(config["target"], device)
        self.attacks = [build_attack(spec) for spec in config["seen_attacks"]]
        self.include_natural = bool(config.get("include_natural", True))
        self.num_types = len(self.attacks) + self.include_natural
        self.purifier: ARNAutoencoder = build_model(config["purifier"]).to(device)
        code_channels = self.purifier.mu.out_channels
        self.attack_disc = build_model(
            {
                "arch": "arn_attack_discriminator",
                "code_channels": code_channels,
                "num_attacks": self.num_types,
                **config.get("attack_discriminator", {}),
            }
        ).to(device)
        self.critic = build_model(config["critic"]).to(device)  # D_I
        lc = config.get("loss", {})
        self.lambda1 = float(lc.get("lambda1", 0.1))  # MNIST values, Sec. 4.1
        self.lambda2 = float(lc.get("lambda2", 0.01))
        self.theta = float(lc.get("theta", 0.1))
        tc = config["train"]
        betas = tuple(tc.get("betas", (0.9, 0.999)))
        p = self.purifier
        self.encoder_params = [*p.encoder.parameters(), *p.mu.parameters(), *p.logvar.parameters()]
        self.decoder_params = list(p.decoder.parameters())
        adam = torch.optim.Adam  # all four learning rates are 1e-4 in the paper
        self.opt_eg = adam(self.encoder_params + self.decoder_params, lr=tc["lr"], betas=betas)
        self.opt_da = adam(self.attack_disc.parameters(), lr=tc["lr"], betas=betas)
        self.opt_di = adam(self.critic.parameters(), lr=tc["lr"], betas=betas)

    @property
    def model(self) -> nn.Module:
        """What `fit` saves: the purifier."""
        return self.purifier

    def distribute(self, ctx: Distributed) -> None:
        if ctx.enabled:
            raise NotImplementedError("ARN trains in one process (two separate objectives)")

    def craft(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The K input types, stacked: [natural,] attack_1(x), ..., attack_K(x)."""
        types = [x] if self.include_natural else []
        types += [attack(self.target, x, y).detach() for attack in self.attacks]
        return torch.cat(types)

    def losses(self, x: torch.Tensor, x_tilde: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 2-4 and 6 for one batch; x_tilde holds K copies' worth of inputs."""
        k = self.num_types
        mu, logvar = self.purifier.encode(x_tilde)
        code = self.purifier.sample(mu, logvar)
        restored = self.purifier.decode(code)[:, :, : x.shape[2], : x.shape[3]]
        clean = x.repeat(k, 1, 1, 1)
        return {
            "code": code,
            "restored": restored,
            # Eq. 4 and 6 sum over the K types; Eq. 2 and 3 average over them.
            "mse": k * squared_l2(restored, clean),
            "att": uniform_label_loss(self.attack_disc(code)),
            "nor": gaussian_kl(mu, logvar),
            "adv": k * image_generator_loss(self.critic(restored)),
        }

    def craft_dataset(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        """X~ for the whole training set: (N, K, C, H, W)."""
        device = next(self.purifier.parameters()).device
        out = []
        for i in tqdm(range(0, len(x), batch_size), desc="crafting seen attacks", mininterval=30):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            out.append(self.craft(xb, yb).view(self.num_types, len(xb), *xb.shape[1:]).cpu())
        return torch.cat(out, dim=1).transpose(0, 1).contiguous()

    def step(self, x: torch.Tensor, y: torch.Tensor, x_tilde: torch.Tensor) -> dict[str, float]:
        """One iteration of Algorithm 1 on a mini-batch X_d, X~_d (line 1); x_tilde is
        (n, K, C, H, W), each image's K crafted versions."""
        k, n = self.num_types, len(x)
        x_tilde = x_tilde.transpose(0, 1).reshape(k * n, *x.shape[1:])
        self.purifier.train()
        self.attack_disc.requires_grad_(False)
        self.critic.requires_grad_(False)
        out = self.losses(x, x_tilde)  # lines 2-3
        loss_e = out["mse"] + self.lambda1 * out["att"] + self.lambda2 * out["nor"]  # Eq. 7
        loss_g = out["mse"] + self.theta * out["adv"]  # Eq. 8
        # Line 4: E descends L_E and G descends L_G - two objectives, so two gradients.
        grads_e = torch.autograd.grad(loss_e, self.encoder_params, retain_graph=True)
        grads_g = torch.autograd.grad(loss_g, self.decoder_params)
        for param, grad in zip(
            self.encoder_params + self.decoder_params, grads_e + grads_g, strict=True
        ):
            param.grad = grad
        self.opt_eg.step()
        self.attack_disc.requires_grad_(True)
        self.critic.requires_grad_(True)
        # Line 5: D_A learns the attack type of each code (Eq. 1), D_I natural vs restored.
        types = torch.arange(k, device=x.device).repeat_interleave(n)
        loss_da = attack_classification_loss(self.attack_disc(out["code"].detach()), types)
        self.opt_da.zero_grad(set_to_none=True)
        loss_da.backward()
        self.opt_da.step()
        fake = self.critic(out["restored"].detach())
        loss_di = image_discriminator_loss(self.critic(x).repeat(k), fake)  # Eq. 5
        self.opt_di.zero_grad(set_to_none=True)
        loss_di.backward()
        self.opt_di.step()
        scalars = {name: out[name] for name in ("mse", "att", "nor", "adv")}
        return {
            "loss_e": loss_e.item(),
            "loss_g": loss_g.item(),
            **{name: v.item() for name, v in scalars.items()},
            "d_attack": loss_da.item(),
            "d_image": loss_di.item(),
        }

    @torch.no_grad()
    def validate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Target error (%) on each input type before and after the purifier, and how
        well D_A still tells the types apart (1/K is chance: attack-invariant codes)."""
        with torch.enable_grad():
            x_tilde = self.craft(x, y)
        self.purifier.eval()
        self.attack_disc.eval()
        n, out = len(x), {}
        names = (["natural"] if self.include_natural else []) + [
            f"attack{i + 1}" for i in range(len(self.attacks))
        ]
        mu, _ = self.purifier.encode(x_tilde)
        types = torch.arange(self.num_types, device=x.device).repeat_interleave(n)
        out["val_d_attack_acc"] = (self.attack_disc(mu).argmax(1) == types).float().mean().item()
        for i, name in enumerate(names):
            inp = x_tilde[i * n : (i + 1) * n]
            for label, batch in (("input", inp), ("purified", self.purifier(inp))):
                wrong = (self.target(batch).argmax(1) != y).float().mean().item()
                out[f"val_{name}_{label}_err"] = 100.0 * wrong
        self.attack_disc.train()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "purifier": self.purifier.state_dict(),
            "attack_disc": self.attack_disc.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_eg": self.opt_eg.state_dict(),
            "opt_da": self.opt_da.state_dict(),
            "opt_di": self.opt_di.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)


def seen_adversaries(
    trainer: ARNTrainer, config: dict[str, Any], x: torch.Tensor, y: torch.Tensor, resume: bool
) -> torch.Tensor:
    """The crafted training set, cached beside the checkpoint (with the attacks that made
    it, so a changed config crafts anew)."""
    cache = Path(config["output_dir"]) / "seen_adversaries.pt"
    key = {"attacks": config["seen_attacks"], "natural": trainer.include_natural, "n": len(x)}
    if resume and cache.exists():
        stored = torch.load(cache, map_location="cpu", weights_only=False)
        if stored["key"] == key:
            return stored["x_tilde"]
    x_tilde = trainer.craft_dataset(x, y, int(config["train"].get("craft_batch_size", 500)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "x_tilde": x_tilde}, cache)
    return x_tilde


@TRAINERS.register("arn")
def train_arn(config: dict[str, Any], resume: bool = True) -> Path:
    ctx = start_run(config)
    (x_train, y_train), val = train_and_validation(config)
    trainer = ARNTrainer(config, ctx.device)
    x_tilde = seen_adversaries(trainer, config, x_train, y_train, resume)
    return fit(config, trainer, ctx, (x_train, y_train, x_tilde), val, resume)
