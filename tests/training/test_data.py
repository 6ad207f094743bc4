import gzip
from pathlib import Path

import pytest
import torch

from training.data.fashion_mnist import DatasetMissingError, load_fashion_mnist


def test_loads_fashion_mnist_test_split(fmnist_test):
    x, y = fmnist_test
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (256,) and y.dtype == torch.int64
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    assert set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) == 10


def test_full_train_split_has_60k_images():
    x, y = load_fashion_mnist("train")
    assert len(x) == len(y) == 60_000


def test_missing_data_names_the_debian_package(tmp_path: Path):
    with pytest.raises(DatasetMissingError, match="dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)


def test_missing_data_via_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PURIFIER_FMNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetMissingError, match="PURIFIER_FMNIST_DIR"):
        load_fashion_mnist("train")


def test_rejects_a_corrupt_idx_file(tmp_path: Path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x01" * 10)
    with pytest.raises(ValueError, match="header says"):
        load_fashion_mnist("test", root=tmp_path)


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")
