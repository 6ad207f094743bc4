"""The photo sources: curated files present, a fixed group-wise split, and random
multi-scale crops that are reproducible item by item."""

import numpy as np
import pytest
import torch

from training.data import photos as photo_data
from training.data.fashion_mnist import DatasetMissingError


def test_every_curated_photo_is_present_and_the_split_is_by_group():
    all_photos = photo_data.photos()
    assert len(all_photos) >= 50
    train, test = photo_data.photos("train"), photo_data.photos("test")
    assert len(train) + len(test) == len(all_photos) and len(test) >= 5
    assert not {p.group for p in train} & {p.group for p in test}
    assert {p.source for p in test} == set(photo_data.SOURCES)  # every source evaluated


def test_a_missing_source_names_its_package(monkeypatch, tmp_path):
    _, provider, groups = photo_data.SOURCES["opencv-doc"]
    monkeypatch.setitem(photo_data.SOURCES, "opencv-doc", (str(tmp_path), provider, groups))
    with pytest.raises(DatasetMissingError, match="opencv-doc"):
        photo_data.photos()


def test_crops_are_reproducible_in_range_and_varied():
    crops = photo_data.PhotoCrops("train", count=64, size=32, seed=3)
    idx = torch.tensor([5, 1, 5])
    batch = crops[idx]
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(batch[0], batch[2])  # item 5 is item 5, whatever the batch
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    everything = crops.tensor()
    assert len({tuple(np.round(x.mean((1, 2)).numpy(), 4)) for x in everything}) > 50
    other_seed = photo_data.PhotoCrops("train", count=64, size=32, seed=4)
    assert not torch.equal(crops[idx], other_seed[idx])


def test_random_crop_scale_and_flip():
    pixels = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3) % 256
    rng = np.random.default_rng(0)
    sizes = [photo_data.random_crop(rng, pixels.astype(np.uint8), 16, 0.5).shape for _ in range(8)]
    assert set(sizes) == {(3, 16, 16)}
