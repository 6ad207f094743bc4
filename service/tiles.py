"""One image's model inputs as tiles, and the outputs put back: the part of the pipeline
that the HTTP service (through its batcher) and the in-process `Purifier` (service.offline)
share. Pure numpy on top of service.imaging; no event loop, no batcher."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.config import Settings
from service.engine import Engine
from service.imaging import TilePlan, cut, from_model_planes, plan_tiles, stitch, to_model_planes
from service.registry import ModelEntry, ModelLoadError

# Tile overlap for a card that does not record its model's receptive field: wider than
# any exported model's measured 2 x (radius + margin) (training.export.receptive_field).
DEFAULT_TILE_OVERLAP = 48


@dataclass(frozen=True)
class TileGeometry:
    """How a model's images are cut: the tile side, the smallest side, the multiple the
    padded sides round up to, and the pixels neighbouring tiles share."""

    tile: int
    min_size: int
    multiple: int
    overlap: int

    def plan(self, height: int, width: int) -> TilePlan:
        return plan_tiles(height, width, self.tile, self.overlap, self.multiple, self.min_size)


def tile_geometry(entry: ModelEntry, settings: Settings) -> TileGeometry:
    """The settings' tile size and overlap, else the card's (recommended_tile,
    tile_overlap); refused when the overlap would not leave a tile any room."""
    card = entry.card
    tile = settings.tile_size or int(card.get("recommended_tile", 256))
    multiple = max(settings.bucket_multiple, int(card.get("size_multiple", 1)))
    overlap = settings.tile_overlap
    if overlap is None:
        overlap = int(card.get("tile_overlap", DEFAULT_TILE_OVERLAP))
    if overlap >= tile:  # neighbours cannot share more than a tile: the seams would show
        raise ModelLoadError(
            f"model {entry.name}: tile overlap {overlap} px is not below the tile size {tile} "
            "px (PURIFIER_TILE_OVERLAP / PURIFIER_TILE_SIZE, or the card's tile_overlap)"
        )
    return TileGeometry(tile, int(card.get("min_size", 1)), multiple, overlap)


def noise_shape(engine: Engine, pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(planes, model channels, H, W): the noise field one image needs."""
    c, h, w = pixels.shape
    planes = len(to_model_planes(np.empty((c, 1, 1), np.float32), engine.channels))
    return planes, engine.channels, h, w


@dataclass
class TiledImage:
    """An image cut for a model: `tiles` (plane-major, each plane in the plan's reading
    order) go to the model; `assemble` puts the model's outputs for them back."""

    plan: TilePlan
    planes: int
    colour_channels: int
    tiles: list[np.ndarray]

    def assemble(self, outputs: list[np.ndarray]) -> np.ndarray:
        per_plane = len(outputs) // self.planes
        restored = [
            stitch(outputs[i * per_plane : (i + 1) * per_plane], self.plan)
            for i in range(self.planes)
        ]
        return from_model_planes(restored, self.colour_channels)


def cut_image(
    engine: Engine, geometry: TileGeometry, pixels: np.ndarray, noise: np.ndarray | None = None
) -> TiledImage:
    """pixels: float32 (C, H, W) in [0, 1], C = 1 or 3. A stochastic model needs `noise`
    (noise_shape): each plane's field is cut into the same tiles as the plane and carried
    in the channels after it, so a tile meets the whole image's noise there."""
    planes = to_model_planes(pixels, engine.channels)
    if engine.stochastic:
        if noise is None or noise.shape != noise_shape(engine, pixels):
            raise ValueError(f"model {engine.entry.name} needs noise of the image's shape")
        planes = [np.concatenate([p, n], axis=0) for p, n in zip(planes, noise, strict=True)]
    plan = geometry.plan(pixels.shape[1], pixels.shape[2])
    tiles = [t for plane in planes for t in cut(plane, plan)]
    return TiledImage(plan, len(planes), pixels.shape[0], tiles)
