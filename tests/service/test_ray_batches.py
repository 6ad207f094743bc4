"""Purifier on Ray Data (issue 39): `PurifyBatches` in Dataset.map_batches on a real local
Ray instance gives each image exactly what the in-process Purifier gives it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO

MODEL = "photo-guided"
REPOSITORY = str(REPO / "exported_models")


def photos(count: int, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    from PIL import Image

    from training.data.photos import source_dir

    img = np.asarray(Image.open(source_dir("scikit-image") / "coffee.png").convert("RGB"))
    out = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        out.append(np.ascontiguousarray(img[10 * i : 10 * i + h, 7 * i : 7 * i + w]))
    return out


@pytest.fixture(scope="module")
def reference():
    from purifier import Purifier

    return Purifier(MODEL, REPOSITORY)


def test_a_numpy_batch_is_purified_column_by_column_as_in_process(reference):
    from purifier import PurifyBatches

    batcher = PurifyBatches(MODEL, repository=REPOSITORY)
    same = photos(3, [(48, 64)])
    out = batcher({"image": np.stack(same), "id": np.arange(3)})
    assert out["image"].shape == (3, 48, 64, 3) and out["image"].dtype == np.uint8
    np.testing.assert_array_equal(out["id"], np.arange(3))
    for got, image in zip(out["image"], same, strict=True):
        np.testing.assert_array_equal(got, reference.purify(image))
    assert out["purifier_linf"].shape == (3,) and (out["purifier_linf"] > 0).all()
    assert out["purifier_suspicious"].dtype == bool
    mixed = np.empty(2, dtype=object)
    mixed[:] = photos(2, [(40, 56), (64, 48)])
    out = batcher({"image": mixed})
    assert [i.shape for i in out["image"]] == [(40, 56, 3), (64, 48, 3)]
    with pytest.raises(KeyError, match="no column 'photo'"):
        PurifyBatches(MODEL, column="photo", repository=REPOSITORY)({"image": mixed})


def test_map_batches_on_a_local_ray_instance(reference):
    import ray

    from purifier import PurifyBatches

    images = photos(6, [(48, 64)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.from_items([{"image": img, "id": i} for i, img in enumerate(images)])
        rows = ds.map_batches(
            PurifyBatches,
            fn_constructor_kwargs={"model": MODEL, "repository": REPOSITORY},
            batch_format="numpy",
            batch_size=4,
            concurrency=1,
        ).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["id"] for r in rows) == list(range(6))
    for row in rows:
        np.testing.assert_array_equal(row["image"], reference.purify(images[row["id"]]))
        assert row["purifier_linf"] > 0
