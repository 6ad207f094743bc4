"""The guided purifier (HGD with guards): the network is the identity at step 0, bounded,
any-size and exportable; the bank is label-free and inside its budgets; the objective is
zero exactly when the purifier restores the clean image; training resumes, keeps a
learning curve from step 0 and selects weights by validation."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from training.attacks.bank import (
    craft_bank,
    families_from_config,
    to_float,
    to_uint8,
    top1,
)
from training.config import load_config
from training.models import build_feature_extractor, build_model
from training.models.guided import GuidedUNet
from training.models.targets import FeatureTaps

TINY = {"arch": "guided_unet", "widths": [4, 8, 8], "full_res": 4, "max_residual": 0.0941}


@pytest.fixture(scope="module")
def mobilenet():
    return build_model({"arch": "mobilenet_v2_imagenet"})


def test_the_purifier_starts_as_the_identity_and_takes_any_size():
    torch.manual_seed(0)
    net = build_model(TINY).eval()
    for shape in ((2, 3, 37, 50), (1, 3, 8, 8), (1, 3, 129, 64)):
        x = torch.rand(shape)
        with torch.no_grad():
            assert torch.equal(net(x), x)  # zero-initialised last layer: y = x exactly


def test_the_correction_is_bounded_and_no_batchnorm():
    torch.manual_seed(0)
    net = GuidedUNet(widths=(4, 8, 8), full_res=4, max_residual=8 / 255)
    torch.nn.init.normal_(net.out.weight, std=10.0)  # a wildly trained last layer
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        change = (net(x) - x).abs()
    assert change.max() <= 8 / 255 + 1e-6 and change.max() > 4 / 255
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_the_gate_scales_the_correction_locally_and_a_grown_net_keeps_its_weights(tmp_path):
    """The gated network (stage 3): a fresh one is the identity too; grown from an
    ungated one's weights (load_weights' new_layers) it starts at 0.95 of its correction;
    a closed gate leaves the image untouched; a file missing other layers is refused."""
    from training.models import load_weights

    torch.manual_seed(0)
    plain = GuidedUNet(widths=(4, 8, 8), full_res=4)
    torch.nn.init.normal_(plain.out.weight, std=0.5)
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    x = torch.rand(2, 3, 37, 50)
    gated = GuidedUNet(widths=(4, 8, 8), full_res=4, gate=True).eval()
    with torch.no_grad():
        assert torch.equal(gated(x), x)
        load_weights(gated, path, new_layers=("gate",))
        expected = (x + torch.sigmoid(torch.tensor(3.0)) * plain.residual(x)).clamp(0, 1)
        torch.testing.assert_close(gated(x), expected, atol=1e-6, rtol=0)
        torch.nn.init.constant_(gated.gate[-1].bias, -50.0)
        torch.testing.assert_close(gated(x), x, atol=1e-7, rtol=0)
    state = {k: v for k, v in plain.state_dict().items() if not k.startswith("out.")}
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="missing"):
        load_weights(GuidedUNet(widths=(4, 8, 8), full_res=4, gate=True), path, ("gate",))


@pytest.mark.parametrize("gate", [False, True])
def test_a_grown_net_computes_what_the_small_one_did_and_its_new_channels_learn(gate):
    """GuidedUNet.grow_from: wider everywhere (full-resolution stage included), the same
    output to float rounding; one gradient step then moves the new channels' weights."""
    torch.manual_seed(0)
    small = GuidedUNet(widths=(4, 8, 8), full_res=4, gate=gate)
    for p in small.parameters():
        torch.nn.init.normal_(p, std=0.3)  # not the identity: every path carries signal
    large = GuidedUNet(widths=(6, 12, 16), full_res=8, gate=gate).grow_from(small)
    x = torch.rand(2, 3, 37, 50, dtype=torch.float64)  # float64: summation order aside
    with torch.no_grad():
        exact = large.double().residual(x), small.double().residual(x)
        torch.testing.assert_close(*exact, atol=1e-12, rtol=0)
    large.float()
    x = x.float()
    before = large.to_full[0].weight[:, 4:].detach().clone()  # from the new channels of d0
    assert torch.equal(before[:4], torch.zeros_like(before[:4]))
    large.residual(x).square().mean().backward()
    assert large.to_full[0].weight.grad[:4, 4:].abs().sum() > 0
    with pytest.raises(ValueError, match="at least"):
        GuidedUNet(widths=(2, 12, 16), full_res=8, gate=gate).grow_from(small)


def test_init_weights_can_grow_a_smaller_trained_net(tmp_path):
    """train.init_weights: {model, weights} starts a run from a smaller network's weights."""
    from training.methods.guided import train_guided

    config = tiny_guided_config(tmp_path)
    torch.set_num_threads(1)
    small_spec = dict(config["purifier"])
    torch.manual_seed(1)
    small = build_model(small_spec)
    torch.nn.init.normal_(small.out.weight, std=0.5)
    torch.save(small.state_dict(), tmp_path / "small.pt")
    wider = [2 * w for w in small_spec["widths"]]
    config["purifier"] = {**small_spec, "widths": wider}
    config["train"]["init_weights"] = {"model": small_spec, "weights": str(tmp_path / "small.pt")}
    config["train"]["lr"] = 0.0  # the step-0 validation and the weights then show the start
    train_guided(config)
    grown = build_model(config["purifier"])
    grown.load_state_dict(torch.load(Path(config["output_dir"]) / "last.pt"))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), small(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name", ["photo_guided.yaml", "photo_guided_large.yaml", "photo_guided_large_stage2.yaml"]
)
def test_the_sizes_in_the_configs_fit_their_budgets(name):
    from training.export import count_gflops

    config = load_config(REPO / "training" / "configs" / name)
    net = build_model(config["purifier"])
    assert count_gflops(net, 3) <= 6.0  # issue 27: <= 6 GFLOPs at 224x224


def test_onnx_export_keeps_dynamic_height_and_width(tmp_path):
    from training.export import check_parity, export_onnx

    torch.manual_seed(0)
    net = build_model(TINY).eval()
    torch.nn.init.normal_(net.out.weight, std=0.5)  # not the identity, so parity means something
    path = export_onnx(net, tmp_path / "model.onnx", 3, (32, 32))
    worst = check_parity(net, path, [torch.rand(1, 3, 45, 61), torch.rand(2, 3, 64, 48)])
    assert worst <= 1e-4


def test_feature_taps_are_the_models_own_features_and_logits(mobilenet):
    taps = FeatureTaps(mobilenet, ["13", "18"])
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps, logits = taps(x)
        assert torch.allclose(logits, mobilenet(x), atol=1e-5)
        assert maps[0].shape[1] == 96 and maps[1].shape[1] == 1280
    with pytest.raises(ValueError, match="not in features"):
        FeatureTaps(mobilenet, ["99"])


def test_the_bank_is_label_free_within_budget_and_fools_the_source(mobilenet):
    families = families_from_config(
        {
            "pgd": {"kind": "pgd", "steps": 3, "alpha_frac": 0.4},
            "noise": {"kind": "uniform_noise", "weight": 0.5},
            "ssp": {"kind": "ssp", "steps": 2, "alpha_frac": 0.5},
        }
    )
    features = build_feature_extractor({"model": {"arch": "mobilenet_v2_imagenet"}, "layer": "13"})
    torch.manual_seed(0)
    from training.data.photos import PhotoCrops

    clean = to_uint8(PhotoCrops("train", count=24, size=64, seed=5).tensor())
    bank = craft_bank(clean, mobilenet, features, families, [8 / 255, 16 / 255], 7, 4, False)
    adv = bank["adv"]
    assert adv.dtype == torch.uint8 and adv.shape == clean.shape
    assert len(bank["family"]) == len(bank["eps"]) == 24
    change = (adv.int() - clean.int()).abs().flatten(1).amax(1)
    limit = torch.tensor([round(e * 255) + 1 for e in bank["eps"]])  # + one rounding level
    assert (change <= limit).all()
    attacked = torch.tensor([f != "noise" for f in bank["family"]])
    assert attacked.any()
    flipped = top1(mobilenet, to_float(adv)) != top1(mobilenet, to_float(clean))
    assert flipped[attacked].float().mean() >= 0.5  # white-box on its own source
    again = craft_bank(clean, mobilenet, features, families, [8 / 255, 16 / 255], 7, 4, False)
    assert torch.equal(again["adv"], adv)  # a seed remakes the same bank


def test_a_bank_family_needs_a_kind():
    with pytest.raises(ValueError, match="needs a kind"):
        families_from_config({"pgd": {"steps": 3}})


def test_the_objective_is_zero_exactly_when_the_clean_image_comes_back(mobilenet):
    from training.methods.guided import GuidedObjective

    guide = FeatureTaps(mobilenet, ["13", "18"])
    objective = GuidedObjective(guide, {}, {"min_scale": 0.8, "max_scale": 1.2})
    x = torch.rand(3, 3, 64, 64)
    gen = torch.Generator().manual_seed(0)
    perfect = objective(x, x.clone(), x.clone(), gen)
    assert perfect["loss"].item() == pytest.approx(0.0, abs=1e-5)
    noisy = (x + 0.06 * torch.randn_like(x)).clamp(0, 1)
    off = objective(x, noisy, x.clone(), gen)
    assert off["adv_pixel"] > 0.01 and off["adv_feature"] > 0.01 and off["adv_kl"] > 0
    assert off["clean_loss"].item() == pytest.approx(0.0, abs=1e-5)


def tiny_guided_config(tmp_path: Path) -> dict:
    config = load_config(REPO / "training" / "configs" / "photo_guided.yaml")
    config.update(
        output_dir=str(tmp_path / "run"),
        weights=str(tmp_path / "selected.pt"),
        purifier=TINY,
    )
    config["data"] = {**config["data"], "crop": 32}
    config["bank"] = {
        **config["bank"],
        "size": 8,
        "chunk": 4,
        "dir": str(tmp_path / "banks"),
        "families": {"fgsm": {"kind": "fgsm"}, "noise": {"kind": "uniform_noise"}},
    }
    config["validation"] = {
        **config["validation"],
        "images": 4,
        "candidates": 8,
        "crop": 64,
        "min_confidence": 0.0,
        "attacks": [{"name": "FGSM 16/255", "kind": "fgsm", "eps": 0.0627}],
    }
    config["train"] = {
        **{k: v for k, v in config["train"].items() if k != "init_weights"},
        "epochs": 1,
        "batch_size": 4,
        "checkpoint_every": 1,
        "best_weights": str(tmp_path / "run" / "best.pt"),
        "agreement_floor": 0.0,
    }
    return config


def test_training_keeps_a_curve_from_step_zero_resumes_and_selects(tmp_path):
    from training.methods.guided import train_guided

    config = tiny_guided_config(tmp_path)
    torch.set_num_threads(1)
    selected = train_guided(config)
    out = Path(config["output_dir"])
    curve = (out / "validation.csv").read_text().splitlines()
    header = curve[0].split(",")
    assert header[1:3] == ["epoch", "step"] and "val_clean_agreement" in header
    assert [row.split(",")[1] for row in curve[1:]] == ["0", "1"]
    first = dict(zip(header, curve[1].split(","), strict=True))
    assert float(first["val_clean_agreement"]) == 100.0  # the identity keeps every class
    summary = json.loads(selected.with_suffix(".json").read_text())
    assert summary["selected"] == "best" and "val_mean_fooling" in summary["selection"]
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert {"purifier", "opt", "gen"} <= set(state["trainer"])

    def banks() -> list[Path]:
        return [p for p in (tmp_path / "banks").iterdir() if not p.name.startswith("validation_")]

    assert len(banks()) == 1

    config["train"]["epochs"] = 2  # resumes after epoch 1 with a new bank
    last = torch.load(out / "last.pt")
    train_guided(config)
    curve = (out / "validation.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in curve[1:]] == ["0", "1", "2"]
    assert len(banks()) == 2  # the validation set is crafted once and cached
    again = torch.load(out / "last.pt")
    assert any(not torch.equal(last[k], again[k]) for k in last)

    # Validation every second epoch, and at the last: epochs 3 and 4 of 4 -> only 4.
    config["train"].update(epochs=4, validate_every=2)
    train_guided(config)
    curve = (out / "validation.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in curve[1:]] == ["0", "1", "2", "4"]

    # A short trial of a recipe on the cached bank and validation set.
    from training.studies.guided_trial import trial

    result = trial(config, 2, banks()[0], val_images=4)
    assert result["steps"] == 2 and 0.0 <= result["clean_agreement"] <= 1.0
    assert len(result["adv_pixel"]) == 2 and "attack0_left" in result


def test_a_new_stage_with_a_salt_meets_a_new_bank(tmp_path):
    from training.methods.guided import bank_seed

    config = tiny_guided_config(tmp_path)
    config["bank"].pop("salt", None)
    plain = bank_seed(config)
    config["bank"]["salt"] = "stage3"
    assert bank_seed(config) != plain
    assert bank_seed(config) == bank_seed(config)  # a re-run finds its bank in the cache


def test_one_step_lowers_the_loss_on_its_batch(mobilenet):
    from training.methods.guided import GuidedTrainer

    config = tiny_guided_config(Path("/nonexistent"))
    config["train"]["lr"] = 1e-4
    config["view"] = {"min_scale": 1.0, "max_scale": 1.0, "flip": False}  # one view: comparable
    torch.manual_seed(0)
    trainer = GuidedTrainer(config, torch.device("cpu"))
    # Off the identity first: there every clean L1 term sits at its kink, where the
    # gradient (0) does not see that any move raises it.
    torch.nn.init.normal_(trainer.purifier.out.weight, std=0.05)
    clean = torch.rand(4, 3, 32, 32)
    adv = to_uint8((clean + 0.06 * torch.randn_like(clean)).clamp(0, 1))
    clean = to_uint8(clean)

    def loss() -> float:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            purified = trainer.purify(torch.cat([to_float(adv), to_float(clean)]))
            return trainer.objective(to_float(clean), purified[:4], purified[4:], gen)[
                "loss"
            ].item()

    before = loss()
    trainer.step(clean, adv)
    assert loss() < before


def test_patches_cut_the_same_window_from_both_sides():
    from training.methods.guided import GuidedTrainer

    config = tiny_guided_config(Path("/nonexistent"))
    config["train"]["patch"] = 16
    trainer = GuidedTrainer(config, torch.device("cpu"))
    clean = torch.rand(4, 3, 32, 32)
    adv = clean + 1.0  # a constant offset: the same window keeps it exactly
    a, b = trainer.patches(clean, adv)
    assert a.shape == b.shape == (4, 3, 16, 16)
    assert torch.allclose(b - a, torch.ones_like(a))
    windows = {tuple(trainer.patches(clean, adv)[0][0, 0, 0, :2].tolist()) for _ in range(8)}
    assert len(windows) > 1  # drawn anew each step


def scores(agreement: float, fooling: float, left: float) -> dict[str, float]:
    return {"val_clean_agreement": agreement, "val_mean_fooling": fooling, "val_mean_left": left}


def test_selection_by_left_keeps_the_least_perturbation_left_above_the_floor(tmp_path):
    from training.methods.guided import GuidedTrainer

    config = tiny_guided_config(tmp_path)
    config["train"] = {**config["train"], "selection": "left", "agreement_floor": 97.0}
    trainer = GuidedTrainer(config, torch.device("cpu"))
    best = Path(config["train"]["best_weights"])
    trainer._keep_if_best(scores(100.0, 99.0, 0.80))
    assert json.loads(best.with_suffix(".json").read_text())["val_mean_left"] == 0.80
    trainer._keep_if_best(scores(100.0, 100.0, 0.70))  # more fooling, less left: kept
    trainer._keep_if_best(scores(96.0, 98.0, 0.50))  # below the floor: never kept
    trainer._keep_if_best(scores(98.0, 98.0, 0.75))  # more left: not kept
    assert json.loads(best.with_suffix(".json").read_text())["val_mean_left"] == 0.70

    by_fooling = GuidedTrainer(tiny_guided_config(tmp_path / "f"), torch.device("cpu"))
    by_fooling._keep_if_best(scores(100.0, 99.0, 0.80))
    by_fooling._keep_if_best(scores(100.0, 100.0, 0.70))
    assert by_fooling.best_score == pytest.approx(99.008)


def test_a_changed_rule_or_validation_set_starts_a_new_best(tmp_path):
    from training.methods.guided import GuidedTrainer

    config = tiny_guided_config(tmp_path)
    trainer = GuidedTrainer(config, torch.device("cpu"))
    trainer._keep_if_best(scores(100.0, 50.0, 0.5))
    state = trainer.state_dict()

    same = GuidedTrainer(config, torch.device("cpu"))
    same.load_state_dict(state)
    assert same.best_score == trainer.best_score  # a plain resume keeps its best
    old = {k: v for k, v in state.items() if k != "best_key"}  # saved before best_key
    same.load_state_dict(old)
    assert same.best_score == trainer.best_score

    by_left = {**config, "train": {**config["train"], "selection": "left"}}
    bigger = {**config, "validation": {**config["validation"], "images": 8}}
    for changed in (by_left, bigger):
        other = GuidedTrainer(changed, torch.device("cpu"))
        other.load_state_dict(state)
        assert other.best_score == float("inf")

    with pytest.raises(ValueError, match="known: fooling, left"):
        GuidedTrainer(
            {**config, "train": {**config["train"], "selection": "psnr"}}, torch.device("cpu")
        )
