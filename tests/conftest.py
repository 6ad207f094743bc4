"""Shared fixtures. Tests run beside other torch processes on 2 cores: one thread each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

# REPO for every test module; the live-server fixtures for the service and deploy tests.
from tests.live_server import REPO, server, start_server  # noqa: E402, F401


@pytest.fixture(scope="session")
def fmnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    from training.data import load_fashion_mnist

    return load_fashion_mnist("test", limit=256)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised weights (seeded) for a feature extractor, a target and a
    small purifier: enough to exercise the code paths without trained models."""
    from training.models import build_model

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    specs = {
        "vgg": {"arch": "vgg_small", "in_channels": 1, "width": 8},
        "lenet": {"arch": "lenet", "in_channels": 1},
        "nrp": {"arch": "nrp", "in_channels": 1, "nf": 8, "gc": 4, "num_basic_blocks": 1},
    }
    paths = {}
    for name, spec in specs.items():
        paths[name] = root / f"{name}.pt"
        torch.save(build_model(spec).state_dict(), paths[name])
    return paths


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def nrp_config(tmp_path: Path, tiny_models: dict[str, Path]) -> dict:
    """A tiny NRP experiment: 256 training images, 4 steps an epoch."""
    return {
        "name": "tiny-nrp",
        "method": "nrp",
        "seed": 0,
        "device": "cpu",
        "output_dir": str(tmp_path / "run"),
        "weights": str(tmp_path / "out" / "nrp.pt"),
        "data": {"dataset": "fashion_mnist", "train_limit": 256, "test_limit": 64},
        "feature_extractor": {
            "model": {"arch": "vgg_small", "in_channels": 1, "width": 8},
            "weights": str(tiny_models["vgg"]),
            "layer": "relu2_2",
        },
        "purifier": {"arch": "nrp", "in_channels": 1, "nf": 8, "gc": 4, "num_basic_blocks": 1},
        "critic": {"arch": "vgg_critic", "in_channels": 1, "nf": 4},
        "ssp": {"eps": 0.1, "steps": 2, "step_size": 0.05},
        "loss": {"alpha": 5.0e-3, "gamma": 1.0e-2, "lambda": 1.0},
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "lr_purifier": 1.0e-3,
            "lr_critic": 1.0e-3,
            "checkpoint_every": 2,
            "val_images": 32,
        },
        "export": {"dataset": "Fashion-MNIST (test subset)"},
    }
