"""Experiment configs: a variant names a base and states only the sections it changes."""

import pytest

from tests.conftest import REPO
from training.config import load_config

CONFIGS = REPO / "training" / "configs"


def test_a_variant_merges_over_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "name: base-run\npurifier: {arch: nrp_unet, width: 48, blocks: 2}\n"
        "train: {epochs: 3, batch_size: 32}\n"
    )
    (tmp_path / "small.yaml").write_text("base: base.yaml\npurifier: {arch: nrp_unet, width: 32}\n")
    config = load_config(tmp_path / "small.yaml", ["train.batch_size=8"])
    assert config["purifier"] == {"arch": "nrp_unet", "width": 32}  # a section is replaced whole
    assert config["train"] == {"epochs": 3, "batch_size": 8}
    assert config["name"] == "small" and "base" not in config  # named after itself


def test_a_missing_base_is_named(tmp_path):
    (tmp_path / "variant.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml"):
        load_config(tmp_path / "variant.yaml")


def test_the_small_photo_purifier_differs_only_in_size_and_paths():
    base = load_config(CONFIGS / "photo_nrp.yaml")
    small = load_config(CONFIGS / "photo_nrp_small.yaml")
    changed = {k for k in base.keys() | small.keys() if base.get(k) != small.get(k)}
    assert changed == {"name", "output_dir", "weights", "purifier", "_path"}
    assert small["purifier"]["blocks"] < base["purifier"]["blocks"]


def test_exponent_floats_are_floats_in_files_and_overrides(tmp_path):
    # PyYAML alone reads `1e-3` as the string "1e-3" (YAML 1.1), which Adam then rejects.
    (tmp_path / "run.yaml").write_text("train: {lr: 5e-4, steps: 10, tag: e5}\n")
    config = load_config(tmp_path / "run.yaml", ["train.wd=1e-2", "train.betas=[0.9, 1E-3]"])
    expected = {"lr": 5e-4, "steps": 10, "tag": "e5", "wd": 0.01, "betas": [0.9, 1e-3]}
    assert config["train"] == expected
    assert all(isinstance(config["train"][k], float) for k in ("lr", "wd"))


def test_the_clean_share_nrp_fine_tunes_the_paper_recipe_and_changes_only_training():
    paper = load_config(CONFIGS / "fmnist_nrp.yaml")
    clean = load_config(CONFIGS / "fmnist_nrp_clean.yaml")
    changed = {k for k in paper.keys() | clean.keys() if paper.get(k) != clean.get(k)}
    # Same purifier, critic, SSP and Eq. 8 weights: only the run differs.
    assert changed == {"name", "output_dir", "weights", "train", "export", "_path"}
    # export differs only in the suspicion statistic its own selection chose (issue 24)
    assert {k: v for k, v in clean["export"].items() if k != "detection"} == {
        k: v for k, v in paper["export"].items() if k != "detection"
    }
    assert clean["export"]["detection"]["data"] == paper["export"]["detection"]["data"]
    assert clean["train"]["init_weights"] == paper["weights"]
    assert 0 < clean["train"]["clean_fraction"] < 1


def test_run_settings_seed_and_set_threads():
    import torch

    from training.config import apply_run_settings

    before = torch.get_num_threads()
    try:
        apply_run_settings({"seed": 3, "threads": 1})
        assert torch.get_num_threads() == 1
        first = torch.rand(4)
        apply_run_settings({"seed": 3})  # no `threads`: torch's count is left as it is
        assert torch.get_num_threads() == 1
        assert torch.equal(torch.rand(4), first)
    finally:
        torch.set_num_threads(before)
