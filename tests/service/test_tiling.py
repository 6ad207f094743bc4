"""The one-tile shortcuts of cut and stitch agree with the general blend."""

from __future__ import annotations

import numpy as np

from service.imaging import cut, plan_tiles, stitch


def test_an_unpadded_single_tile_is_the_image_and_comes_back_as_the_model_output():
    pixels = np.random.default_rng(0).random((1, 28, 28), dtype=np.float32)
    plan = plan_tiles(28, 28, 256, 16, 4, 8)
    (tile,) = cut(pixels, plan)
    np.testing.assert_array_equal(tile, pixels)
    output = 1 - tile  # any model
    np.testing.assert_array_equal(stitch([output], plan), output)


def test_a_padded_single_tile_is_cropped_back_to_the_image():
    pixels = np.random.default_rng(1).random((3, 28, 30), dtype=np.float32)
    plan = plan_tiles(28, 30, 256, 16, 32, 8)
    (tile,) = cut(pixels, plan)
    assert tile.shape == (3, 32, 32)
    output = np.sqrt(tile) + np.arange(32, dtype=np.float32)  # depends on the position
    np.testing.assert_allclose(stitch([output], plan), output[:, :28, :30], rtol=0, atol=0)
