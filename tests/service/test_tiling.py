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


def test_model_planes_round_trip_for_either_kind_of_model():
    """Grey and RGB images through one- and three-channel models come back with their
    own channel count (a grey PNG served by an RGB model was returned as RGB)."""
    from service.imaging import from_model_planes, to_model_planes

    rng = np.random.default_rng(0)
    for colour in (1, 3):
        image = rng.random((colour, 5, 7), dtype=np.float32)
        for model_channels in (1, 3):
            planes = to_model_planes(image, model_channels)
            assert all(p.shape[0] == model_channels for p in planes)
            back = from_model_planes(planes, colour)
            assert back.shape == image.shape
            np.testing.assert_allclose(back, image, atol=1e-6)  # the identity model
