"""The one-tile shortcuts of cut and stitch agree with the general blend."""

from __future__ import annotations

import numpy as np
import pytest

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


# Real photographs at sizes and aspect ratios that cut into several tiles of TILE (smaller
# than the served 256, so more seams per pixel and a quicker test), odd sides included.
TILE = 128
PHOTO_SIZES = [("coffee.png", 300, 201), ("chelsea.png", 157, 301), ("astronaut.png", 129, 390)]


def exported_models() -> list:
    from purifier.contract import CARD_FILE
    from tests.conftest import REPO

    return sorted(p.parent for p in (REPO / "exported_models").glob(f"*/1/{CARD_FILE}"))


def photo(name: str, height: int, width: int, channels: int) -> np.ndarray:
    from PIL import Image

    from training.data.photos import source_dir

    img = Image.open(source_dir("scikit-image") / name).convert("RGB" if channels == 3 else "L")
    pixels = np.asarray(img.crop((0, 0, width, height)), dtype=np.float32) / 255
    return pixels.transpose(2, 0, 1) if channels == 3 else pixels[None]


@pytest.mark.parametrize("model_dir", exported_models(), ids=lambda p: p.parent.name)
def test_a_tiled_photo_equals_whole_image_inference_within_two_grey_levels(model_dir):
    """Issue 25: with the overlap the card records (its measured receptive field), the
    stitched tiles of a photo differ from one run on the whole (edge-padded) photo by at
    most 2 grey levels, for every exported model. A stochastic model's tiles meet the
    whole image's noise field (issue 38): noise is cut with the image, as channels."""
    import json

    import onnxruntime as ort

    from purifier.contract import CARD_FILE, MODEL_FILE, OUTPUT_NAME
    from purifier.noise import feed, is_stochastic, seeded_noise

    card = json.loads((model_dir / CARD_FILE).read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / MODEL_FILE), options, ["CPUExecutionProvider"])
    stochastic = is_stochastic(session)
    channels = card["channels"]

    def run(tile: np.ndarray) -> np.ndarray:
        """One tile: the image's channels, then (stochastic) its noise channels."""
        image, noise = tile[None, :channels], tile[None, channels:] if stochastic else None
        return session.run([OUTPUT_NAME], dict(feed(session, image, noise)))[0][0]

    assert TILE > card["tile_overlap"] >= 2 * card["receptive_field_px"]
    for name, height, width in PHOTO_SIZES:
        pixels = photo(name, height, width, channels)
        if stochastic:
            pixels = np.concatenate([pixels, seeded_noise(height * width, pixels.shape)])
        plan = plan_tiles(height, width, TILE, card["tile_overlap"], 32, card["min_size"])
        assert len(plan.ys) * len(plan.xs) >= 3
        tiled = stitch([run(t) for t in cut(pixels, plan)], plan)
        whole_plan = plan_tiles(height, width, 4096, 0, 32, card["min_size"])
        (padded,) = cut(pixels, whole_plan)
        whole = stitch([run(padded)], whole_plan)
        worst = 255 * float(np.abs(tiled - whole).max())
        assert worst <= 2.0, f"{name} {height}x{width}: {worst:.2f} grey levels"


def test_an_overlap_of_a_whole_tile_is_refused_at_start_up():
    """Neighbouring tiles cannot share more than a tile: such settings would leave seams
    the card's overlap was measured to prevent, so the service names them and stops."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.live_server import free_port

    run = subprocess.run(
        [sys.executable, "-m", "purifier.cli", "serve", "--port", str(free_port())],
        cwd=REPO,
        env={
            **os.environ,
            "PURIFIER_MODELS": '["fmnist-nrp"]',
            "PURIFIER_TILE_SIZE": "32",  # fmnist-nrp's card overlap is 40
            "PURIFIER_WARMUP_SIZES": "[28]",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "tile overlap 40 px is not below the tile size 32 px" in run.stdout + run.stderr
