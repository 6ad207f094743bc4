"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (gzip'd idx files)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetMissingError(FileNotFoundError):
    """A dataset file is absent; the message names the package to install."""


def data_dir() -> Path:
    return Path(os.environ.get("PURIFIER_FMNIST_DIR", DEFAULT_DIR))


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file: magic (2 zero bytes, dtype code, ndim), big-endian dims, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} values")
    return data.reshape(tuple(dims))


def load_fashion_mnist(
    split: str = "train", limit: int | None = None, root: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images float32 [N,1,28,28] in [0,1], labels int64 [N])."""
    if split not in IDX_FILES:
        raise ValueError(f"split must be one of {sorted(IDX_FILES)}, got {split!r}")
    folder = Path(root) if root is not None else data_dir()
    paths = [folder / name for name in IDX_FILES[split]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST files not found: {', '.join(missing)}. Install the Debian package "
            "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or point "
            "PURIFIER_FMNIST_DIR at a folder holding the idx .gz files."
        )
    images = _read_idx(paths[0])
    labels = _read_idx(paths[1])
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
