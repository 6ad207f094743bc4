"""The photo sources: curated files present, a fixed group-wise split, and random
multi-scale crops that are reproducible item by item."""

import numpy as np
import pytest
import torch

from training.data import photos as photo_data
from training.data.fashion_mnist import DatasetMissingError


def test_every_curated_photo_is_present_and_the_split_is_by_group():
    all_photos = photo_data.photos()
    assert len(all_photos) >= 100
    splits = {s: photo_data.photos(s) for s in ("train", "val", "test")}
    assert sum(len(v) for v in splits.values()) == len(all_photos)
    assert len(splits["test"]) >= 20 and len(splits["val"]) >= 8
    groups = {s: {p.group for p in v} for s, v in splits.items()}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert not groups["train"] & groups["val"]
    # Every source with eight or more scenes is in the reported split.
    big = {s for s, (_, _, g) in photo_data.SOURCES.items() if len(g) >= 8}
    assert big <= {p.source for p in splits["test"]}


def test_a_photo_inside_a_theme_file_is_its_largest_jpeg(tmp_path):
    import io

    from PIL import Image

    def jpeg(size: tuple[int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", size, (200, 30, 30)).save(buffer, format="JPEG")
        return buffer.getvalue()

    container = tmp_path / "theme.edj"
    container.write_bytes(b"EET junk" + jpeg((16, 8)) + b"\x00" * 10 + jpeg((40, 30)) + b"end")
    with photo_data._open(container) as img:
        assert img.size == (40, 30)
    (tmp_path / "empty.edj").write_bytes(b"no pictures here")
    with pytest.raises(DatasetMissingError, match="no JPEG"):
        photo_data._open(tmp_path / "empty.edj")


def test_the_theme_photographs_decode_at_full_size():
    edj = [p for p in photo_data.photos() if p.path.suffix == ".edj"]
    assert len(edj) >= 14
    with photo_data._open(edj[0].path) as img:
        assert min(img.size) >= 2000


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


def test_trainers_validate_photos_on_the_val_photos_never_the_test_ones():
    """NRP/ARN-style trainers (train_and_validation) hold out crops of the val photos:
    the test photos are the ones every table reports."""
    from training.data.registry import train_and_validation

    config = {
        "data": {"dataset": "photos", "train_crops": 4, "test_crops": 2, "crop": 32},
        "train": {"val_images": 3},
    }
    _, (x_val, y_val) = train_and_validation(config)
    expected = photo_data.PhotoCrops("val", count=3, size=32, min_scale=0.1).tensor()
    assert y_val is None and torch.equal(x_val, expected)
    test = photo_data.PhotoCrops("test", count=3, size=32, min_scale=0.1, seed=1).tensor()
    assert not torch.equal(x_val, test)
