import json
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.training.helpers import purifier_loss_before_and_after_one_step
from training.losses import ragan_critic_loss, ragan_generator_loss
from training.methods.nrp import NRPTrainer, train_nrp
from training.models import build_model


def test_purifier_keeps_shape_and_range_at_any_size():
    net = build_model({"arch": "nrp", "in_channels": 3, "nf": 8, "gc": 4, "num_basic_blocks": 1})
    for shape in ((1, 3, 28, 28), (2, 3, 37, 53)):
        x = torch.rand(shape) * 3 - 1  # even out-of-range inputs come back in [0, 1]
        y = net(x)
        assert y.shape == shape and y.min() >= 0 and y.max() <= 1


def test_purifier_has_no_input_to_output_skip():
    # With the last conv zeroed, the output must not depend on the input at all: a
    # skip connection from the image would leak it (and the adversarial pattern) through.
    net = build_model({"arch": "nrp", "in_channels": 1, "nf": 8, "gc": 4, "num_basic_blocks": 1})
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.constant_(net.conv_last.bias, 0.5)
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert torch.equal(net(a), net(b))


def test_ragan_generator_loss_falls_as_purified_look_more_real():
    real = torch.zeros(8)
    losses = [ragan_generator_loss(real, torch.full((8,), v)).item() for v in (-2.0, 0.0, 2.0)]
    assert losses[0] > losses[1] > losses[2]
    critic = [ragan_critic_loss(real, torch.full((8,), v)).item() for v in (-2.0, 0.0, 2.0)]
    assert critic[0] < critic[1] < critic[2]


def test_one_training_step_lowers_the_purifier_loss(nrp_config, fmnist_test):
    before, after = purifier_loss_before_and_after_one_step(nrp_config, fmnist_test[0][:32])
    assert after < before


def test_one_critic_step_lowers_the_critic_loss(nrp_config, fmnist_test):
    torch.manual_seed(0)
    trainer = NRPTrainer(nrp_config, torch.device("cpu"))
    x = fmnist_test[0][:32]
    with torch.no_grad():
        purified = trainer.purifier(trainer.ssp(x))
    before = trainer.objective.critic_loss(trainer.critic, x, purified).item()
    trainer.update_critic(x, purified)
    after = trainer.objective.critic_loss(trainer.critic, x, purified).item()
    assert after < before


def test_clean_fraction_keeps_that_share_of_the_batch_clean(nrp_config, fmnist_test):
    x = fmnist_test[0][:8]
    assert not torch.equal(NRPTrainer(nrp_config, torch.device("cpu")).perturb(x)[:4], x[:4])
    nrp_config["train"]["clean_fraction"] = 0.5
    trainer = NRPTrainer(nrp_config, torch.device("cpu"))
    x_adv = trainer.perturb(x)
    assert torch.equal(x_adv[:4], x[:4])
    delta = (x_adv[4:] - x[4:]).abs()
    assert delta.amax() > 0 and delta.amax() <= nrp_config["ssp"]["eps"] + 1e-6
    assert trainer.step(x)["ssp_distortion"] > 0  # measured on the perturbed share only
    nrp_config["train"]["clean_fraction"] = 1.0
    with pytest.raises(ValueError, match="clean_fraction"):
        NRPTrainer(nrp_config, torch.device("cpu"))


def test_loss_weights_follow_the_paper_by_default(nrp_config):
    nrp_config.pop("loss")
    trainer = NRPTrainer(nrp_config, torch.device("cpu"))
    assert (trainer.objective.alpha, trainer.objective.gamma, trainer.objective.lam) == (
        5e-3,
        1e-2,
        1.0,
    )


def test_training_writes_weights_log_and_resumes(nrp_config):
    weights = train_nrp(nrp_config)
    out = Path(nrp_config["output_dir"])
    assert weights.exists() and (out / "checkpoint.pt").exists()
    summary = json.loads(weights.with_suffix(".json").read_text())
    assert summary["finished"] and summary["epochs_done"] == 1
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("wall_s,epoch,step,loss,adv,img,feat,critic")
    assert len(metrics) == 1 + 2  # a row every 2 of the 4 steps

    # Asking for a second epoch resumes after the first instead of starting over.
    nrp_config["train"]["epochs"] = 2
    first = torch.load(weights)
    train_nrp(nrp_config)
    validation = (out / "validation.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in validation[1:]] == ["1", "2"]
    second = torch.load(weights)
    assert any(not torch.equal(first[k], second[k]) for k in first)

    # Starting over (--fresh) starts the logs over too.
    train_nrp(nrp_config, resume=False)
    validation = (out / "validation.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in validation[1:]] == ["1", "2"]
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 4


def test_time_budget_stops_cleanly_and_resume_finishes(nrp_config):
    nrp_config["train"]["max_minutes"] = 0
    weights = train_nrp(nrp_config)
    assert json.loads(weights.with_suffix(".json").read_text())["finished"] is False
    nrp_config["train"]["max_minutes"] = 60
    train_nrp(nrp_config)
    assert json.loads(weights.with_suffix(".json").read_text())["finished"] is True


def test_init_weights_starts_a_new_run_from_given_weights(nrp_config, tmp_path):
    start = build_model(nrp_config["purifier"])
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.5)  # not what a fresh model's seeded initialisation gives
    torch.save(start.state_dict(), tmp_path / "start.pt")
    nrp_config["train"].update(init_weights=str(tmp_path / "start.pt"), max_minutes=0)
    saved = torch.load(train_nrp(nrp_config, resume=False))  # stopped before any step
    assert all(torch.equal(saved[k], v) for k, v in start.state_dict().items())

    nrp_config["train"]["init_weights"] = str(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        train_nrp(nrp_config, resume=False)

    # Growing from a smaller net is the guided U-Net's (grow_from); NRP's says so by name.
    nrp_config["train"]["init_weights"] = {"model": nrp_config["purifier"], "weights": "x.pt"}
    with pytest.raises(ValueError, match="cannot \\(no grow_from\\)"):
        train_nrp(nrp_config, resume=False)


def test_unknown_model_arch():
    with pytest.raises(KeyError, match="unknown arch"):
        build_model({"arch": "vgg19000"})


def test_serving_sized_purifier_is_under_10_gflops_and_fully_convolutional():
    from training.export import count_gflops

    net = build_model({"arch": "nrp_unet"}).eval()
    assert count_gflops(net, 3, 224) <= 10.0
    for h, w in ((32, 48), (37, 61), (1, 3)):  # any size: padded inside, cropped back
        x = torch.rand(2, 3, h, w)
        out = net(x)
        assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0


def test_photo_config_trains_one_step_on_photo_crops():
    """The natural-image pipeline end to end at toy size: photo crops, MobileNetV2 SSP
    features, the serving-sized purifier, one Algorithm 2 step that lowers the loss."""
    from training.config import load_config
    from training.data.registry import load_dataset

    config = load_config(REPO / "training" / "configs" / "photo_nrp.yaml")
    config["data"].update(train_crops=4, test_crops=2, crop=32)
    config["purifier"].update(nf=8, width=16, gc=8, blocks=1)
    config["critic"]["nf"] = 8
    crops, _ = load_dataset(config["data"], "train")
    x = crops[torch.arange(4)]
    assert x.shape == (4, 3, 32, 32)
    torch.manual_seed(0)
    trainer = NRPTrainer(config, torch.device("cpu"))
    first = trainer.step(x)
    for _ in range(3):
        last = trainer.step(x)
    assert first["ssp_distortion"] > 0
    assert last["loss"] < first["loss"]


def test_serving_sized_purifier_has_no_input_to_output_skip():
    net = build_model({"arch": "nrp_unet", "nf": 8, "width": 16, "gc": 8, "blocks": 1})
    last = net.tail[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 0.5)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert torch.equal(net(a), net(b))


def test_identity_init_purifier_starts_as_the_identity_and_needs_the_residual():
    small = {"arch": "nrp_unet", "nf": 8, "width": 16, "gc": 8, "blocks": 1}
    net = build_model({**small, "residual": True, "identity_init": True})
    x = torch.rand(2, 3, 21, 30)
    assert torch.equal(net(x), x)
    trained_tail = build_model({**small, "residual": True})  # default init: not the identity
    assert not torch.allclose(trained_tail(x), x)
    with pytest.raises(ValueError, match="residual"):
        build_model({**small, "identity_init": True})


def test_train_nrp_runs_on_photo_crops(tmp_path):
    """train_nrp end to end on the photo dataset (crops made on demand, held-out
    validation crops), at toy size."""
    from training.config import load_config

    config = load_config(
        REPO / "training" / "configs" / "photo_nrp.yaml",
        [
            f"output_dir={tmp_path / 'run'}",
            f"weights={tmp_path / 'w.pt'}",
            "data.train_crops=16",
            "data.test_crops=4",
            "data.crop=32",
            "train.batch_size=8",
            "train.val_images=4",
            "purifier.nf=4",
            "purifier.width=8",
            "purifier.gc=4",
            "purifier.blocks=1",
            "critic.nf=4",
        ],
    )
    weights = train_nrp(config)
    summary = json.loads(weights.with_suffix(".json").read_text())
    assert summary["finished"] and summary["steps_per_epoch"] == 2
    assert (tmp_path / "run" / "validation.csv").exists()
