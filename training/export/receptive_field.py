"""The effective receptive field of an exported purifier, measured on its ONNX file, and
the tile overlap the service needs so that a tiled result equals whole-image inference
(issue 25).

A purifier's theoretical receptive field (every convolution's reach added up) is far
wider than what moves its output: a trained residual network's far context contributes
less than a grey level. What tiling needs is the latter. Measured here: on a mosaic of
real images, one column (and then one row) of pixels is changed by 0.2 and the model run
again; the radius is the farthest output column (row) from it that moved by more than
THRESHOLD. The service stitches tiles by keeping each output pixel from the tile where it
is farthest from a cut edge, so an overlap of twice the radius (plus a margin) keeps every
kept pixel's context inside its tile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from purifier.contract import OUTPUT_NAME
from purifier.noise import feed

THRESHOLD = 0.5 / 255  # half a grey level: below what an 8-bit answer can show
MARGIN = 8  # pixels added to each side's radius in the recommended overlap
MOSAIC_SIDE = 192  # pixels: room for a radius up to 96 either way


def mosaic(images: np.ndarray, side: int = MOSAIC_SIDE) -> np.ndarray:
    """(1, C, side, side): the images (N, C, h, w) tiled in reading order, repeated as
    needed, cropped to side x side."""
    n, _, h, w = images.shape
    rows, cols = -(-side // h), -(-side // w)
    grid = [images[(r * cols + k) % n] for r in range(rows) for k in range(cols)]
    stacked = np.concatenate(
        [np.concatenate(grid[r * cols : (r + 1) * cols], axis=2) for r in range(rows)], axis=1
    )
    return np.ascontiguousarray(stacked[None, :, :side, :side], dtype=np.float32)


def _radius_along(session: Any, image: np.ndarray, axis: int) -> int:
    """The farthest index along `axis` (2 rows, 3 columns) whose output moved by more
    than THRESHOLD when the middle line across that axis changed."""
    middle = image.shape[axis] // 2
    changed = image.copy()
    line = [slice(None)] * 4
    line[axis] = middle
    values = changed[tuple(line)]
    changed[tuple(line)] = np.where(values > 0.5, values - 0.2, values + 0.2)
    # A stochastic model meets the same noise field both times: only the line differs.
    before = session.run([OUTPUT_NAME], feed(session, image))[0]
    after = session.run([OUTPUT_NAME], feed(session, changed))[0]
    others = tuple(a for a in range(4) if a != axis)
    moved = np.nonzero(np.abs(after - before).max(axis=others) > THRESHOLD)[0]
    return int(np.abs(moved - middle).max()) if len(moved) else 0


def effective_radius(session: Any, images: np.ndarray) -> int:
    """Pixels: the farthest any output pixel moved by more than THRESHOLD from a changed
    line of input pixels, over rows and columns of a mosaic of `images` (N, C, h, w)."""
    image = mosaic(images)
    return max(_radius_along(session, image, axis) for axis in (2, 3))


def recommended_overlap(radius: int, multiple: int = 8) -> int:
    """Tile overlap for crop stitching: twice (radius + MARGIN), rounded up."""
    need = 2 * (radius + MARGIN)
    return -(-need // multiple) * multiple


PHOTOS = ("coffee.png", "chelsea.png", "astronaut.png")  # scikit-image's sample photographs


def sample_photos(channels: int, side: int = 128) -> np.ndarray | None:
    """(3, C, side, side) photographs (grey for one channel), or None without the
    scikit-image package that ships them."""
    from PIL import Image

    from training.data.photos import source_dir

    folder = source_dir("scikit-image")
    if not all((folder / name).exists() for name in PHOTOS):
        return None
    mode = "RGB" if channels == 3 else "L"
    planes = []
    for name in PHOTOS:
        img = Image.open(folder / name).convert(mode).resize((side, side))
        pixels = np.asarray(img, dtype=np.float32) / 255
        planes.append(pixels.transpose(2, 0, 1) if channels == 3 else pixels[None])
    return np.stack(planes)


def measure_receptive_field(onnx_path: Path, real: Any, fallback: list[Any]) -> int:
    """The effective radius of the exported graph: the larger of its reach on a mosaic of
    its own real test images (the parity inputs when the dataset is missing) and on
    photographs. A one-channel purifier serves each plane of a photo too, and a
    fmnist-guided measured on Fashion-MNIST alone (radius 15) reached 29 px on photos, so
    its 48-px overlap left 2.8-grey-level seams."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = (real if real is not None else fallback[0]).numpy().astype(np.float32)
    radius = effective_radius(session, images)
    photos = sample_photos(images.shape[1])
    return radius if photos is None else max(radius, effective_radius(session, photos))
