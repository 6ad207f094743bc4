"""Purifier over a dataset that outgrows one machine (issue 39): the in-process `Purifier`
as a callable class for Ray Data's `Dataset.map_batches`. Ray builds one instance per
actor, so each actor loads its model once and purifies every batch it is given:

    import ray
    from purifier import PurifyBatches

    ds = ray.data.read_images("s3://bucket/photos/")           # column "image", HWC uint8
    purified = ds.map_batches(
        PurifyBatches,
        fn_constructor_kwargs={"model": "photo-guided"},
        batch_format="numpy",
        batch_size=16,
        concurrency=4,                                          # actors, each one model
    )

Needs no Ray itself (Ray calls it with plain dicts of numpy arrays), so it is tested and
used the same way without a cluster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.config import Settings
from service.offline import Purifier


class PurifyBatches:
    """Replaces the `column` of a numpy batch (an (N, H, W[, C]) array, or an object array
    of images of differing sizes; uint8 or float in [0, 1]) with the purified images, and
    adds `purifier_linf`, `purifier_l2` and, where the model's card is calibrated,
    `purifier_suspicious`. Every other column passes through."""

    def __init__(
        self,
        model: str | None = None,
        column: str = "image",
        repository: str | Path | None = None,
        intra_op_threads: int = 1,
    ) -> None:
        # One thread per actor by default: Ray gives each actor one CPU unless told more.
        settings = Settings(intra_op_threads=intra_op_threads)
        self.purifier = Purifier(model, repository, settings=settings)
        self.column = column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise KeyError(f"the batch has no column {self.column!r}: {sorted(batch)}")
        images = batch[self.column]
        results = [self.purifier.purify_array(np.asarray(image)) for image in images]
        out = dict(batch)
        purified = [r[0] for r in results]
        if isinstance(images, np.ndarray) and images.dtype != object:
            out[self.column] = np.stack(purified) if purified else images
        else:  # images of differing sizes stay an object array, as Ray gave them
            column = np.empty(len(purified), dtype=object)
            column[:] = purified
            out[self.column] = column
        out["purifier_linf"] = np.array([r[1].linf for r in results], np.float32)
        out["purifier_l2"] = np.array([r[1].l2 for r in results], np.float32)
        if self.purifier.detector is not None:
            out["purifier_suspicious"] = np.array([r[1].suspicious for r in results])
        return out
