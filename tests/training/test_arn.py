"""ARN's parts (Zhou et al. 2021): the uniform-label loss is smallest at the uniform
prediction, the KL term at N(0, I), one Algorithm 1 step lowers E's and G's objectives
and the discriminators' losses, the seen attacks stay in budget, and a tiny run trains,
caches its crafted set and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.losses import gaussian_kl, uniform_label_loss
from training.methods.arn import ARNTrainer, train_arn
from training.models import build_model


@pytest.fixture
def arn_config(tmp_path: Path, tiny_models: dict[str, Path]) -> dict:
    return {
        "name": "tiny-arn",
        "method": "arn",
        "seed": 0,
        "device": "cpu",
        "output_dir": str(tmp_path / "run"),
        "weights": str(tmp_path / "out" / "arn.pt"),
        "data": {"dataset": "fashion_mnist", "train_limit": 64, "test_limit": 32},
        "target": {
            "model": {"arch": "lenet", "in_channels": 1},
            "weights": str(tiny_models["lenet"]),
        },
        "include_natural": True,
        "seen_attacks": [
            {"name": "PGD_N", "kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2},
            {
                "name": "PGD_T",
                "kind": "pgd",
                "eps": 0.1,
                "alpha": 0.05,
                "steps": 2,
                "targeted": True,
            },
        ],
        "purifier": {"arch": "arn", "in_channels": 1, "nf": 8, "code_channels": 4},
        "attack_discriminator": {"width": 16},
        "critic": {"arch": "vgg_critic", "in_channels": 1, "nf": 4},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 2},
    }


def test_uniform_label_loss_is_smallest_at_the_uniform_prediction():
    uniform = uniform_label_loss(torch.zeros(4, 3))
    assert uniform.item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
    for logits in (torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.5, -0.5, 0.1]])):
        assert uniform_label_loss(logits.repeat(4, 1)) > uniform


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(2, 4, 3, 3)
    assert gaussian_kl(zeros, zeros).item() == pytest.approx(0.0)
    assert gaussian_kl(zeros + 0.5, zeros).item() == pytest.approx(0.5 * 0.25 * 36)
    assert gaussian_kl(zeros, zeros - 1.0).item() > 0


def test_purifier_any_size_range_and_deterministic_at_inference():
    net = build_model({"arch": "arn", "in_channels": 3, "nf": 8, "code_channels": 4}).eval()
    for shape in ((1, 3, 28, 28), (2, 3, 37, 53), (1, 3, 1, 3)):
        x = torch.rand(shape)
        out = net(x)
        assert out.shape == shape and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, net(x))  # the mean code, no sampling, at inference


def test_seen_attacks_stay_inside_their_budget_and_fool_more(arn_config, fmnist_test):
    trainer = ARNTrainer(arn_config, torch.device("cpu"))
    x, y = fmnist_test[0][:16], fmnist_test[1][:16]
    x_tilde = trainer.craft(x, y).view(3, 16, 1, 28, 28)
    assert torch.equal(x_tilde[0], x)  # the natural type comes first
    for adv in x_tilde[1:]:
        assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        err = [(trainer.target(t).argmax(1) != y).float().mean() for t in x_tilde]
    assert err[1] > err[0]


def test_one_step_lowers_each_objective(arn_config, fmnist_test):
    torch.manual_seed(0)
    trainer = ARNTrainer(arn_config, torch.device("cpu"))
    x, y = fmnist_test[0][:16], fmnist_test[1][:16]
    x_tilde = trainer.craft(x, y)
    stacked = x_tilde.view(3, 16, 1, 28, 28).transpose(0, 1)

    def objectives() -> dict[str, float]:
        torch.manual_seed(1)  # the same reparameterisation noise before and after
        trainer.purifier.train()
        with torch.no_grad():
            out = trainer.losses(x, x_tilde)
            types = torch.arange(3).repeat_interleave(16)
            d_a = torch.nn.functional.cross_entropy(trainer.attack_disc(out["code"]), types)
        return {
            "E": (out["mse"] + trainer.lambda1 * out["att"] + trainer.lambda2 * out["nor"]).item(),
            "G": (out["mse"] + trainer.theta * out["adv"]).item(),
            "D_A": d_a.item(),
        }

    before = objectives()
    trainer.step(x, y, stacked)
    after = objectives()
    for name in before:
        assert after[name] < before[name], name


def test_paper_weights_are_the_defaults(arn_config):
    arn_config.pop("loss", None)
    trainer = ARNTrainer(arn_config, torch.device("cpu"))
    assert (trainer.lambda1, trainer.lambda2, trainer.theta) == (0.1, 0.01, 0.1)


def test_training_caches_the_crafted_set_and_resumes(arn_config):
    weights = train_arn(arn_config)
    out = Path(arn_config["output_dir"])
    assert (out / "seen_adversaries.pt").exists() and (out / "checkpoint.pt").exists()
    assert json.loads(weights.with_suffix(".json").read_text())["finished"]
    header = (out / "validation.csv").read_text().splitlines()[0]
    assert "val_attack1_purified_err" in header and "val_d_attack_acc" in header
    cached = torch.load(out / "seen_adversaries.pt", weights_only=False)["x_tilde"]
    assert cached.shape == (64, 3, 1, 28, 28)
    arn_config["train"]["epochs"] = 2
    first = torch.load(weights)
    train_arn(arn_config)
    assert (out / "validation.csv").read_text().count("\n") == 3  # header + 2 epochs
    second = torch.load(weights)
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_export_names_its_own_column_and_seen_attacks(arn_config, tmp_path):
    import subprocess
    import sys

    import numpy as np
    import onnxruntime as ort

    from tests.conftest import REPO, write_yaml
    from training.export import export_from_config
    from training.loop import save_weights

    torch.manual_seed(0)
    save_weights(build_model(arn_config["purifier"]), arn_config["weights"])
    config_path = write_yaml(tmp_path / "tiny-arn.yaml", arn_config)
    row = {"attack": "clean", "budget": "-", "kind": "clean", "error": {"nrp": 9.0, "arn": 8.0}}
    table = tmp_path / "table.json"
    table.write_text(
        json.dumps(
            {
                "command": "purifier eval methods.yaml",
                "num_images": 16,
                "device": "cpu",
                "defenses": ["nrp", "arn"],
                "purifiers": ["nrp", "arn"],
                "purifier_configs": {"nrp": "elsewhere/nrp.yaml", "arn": str(config_path)},
                "targets": {"lenet": {"rows": [row]}},
            }
        )
    )
    version_dir = export_from_config(config_path, evaluation=table, output_root=tmp_path / "m")
    card = json.loads((version_dir / "card.json").read_text())
    assert card["method"] == "arn" and card["evaluation"]["purifier_column"] == "arn"
    assert card["training"]["attacks"] == ["PGD_N", "PGD_T"]
    assert card["parity_max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    out = session.run(None, {"image": np.random.rand(3, 1, 37, 61).astype(np.float32)})[0]
    assert out.shape == (3, 1, 37, 61)
    check = REPO.parent / "shared" / "checks" / "model_contract.py"
    if check.exists():
        run = subprocess.run(
            [sys.executable, str(check), str(version_dir.parent)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
