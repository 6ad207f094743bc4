"""Decode, validate, tile and encode images: the only module that uses Pillow.

An image becomes a float32 (C, H, W) array in [0, 1] in the colour space the model
expects; alpha is kept aside and restored, and the result is written back in the input's
own mode and size. A one-channel model purifies each colour channel of an RGB image as a
grey image, so colour survives; a three-channel model sees grey images replicated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# We enforce our own pixel limit from the header, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "TIFF"}
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


class ImageError(ValueError):
    """A request image we will not process; `status` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class DecodedImage:
    pixels: np.ndarray  # float32 (C, H, W) in [0, 1], C = the model's channels
    mode: str  # Pillow mode of the (orientation-corrected) input
    format: str  # PNG, JPEG, ...
    alpha: np.ndarray | None  # the input's alpha channel, restored on output
    palette_image: bool
    colour_channels: int  # 1 grey or 3 colour, before adapting to the model

    @property
    def height(self) -> int:
        return self.pixels.shape[1]

    @property
    def width(self) -> int:
        return self.pixels.shape[2]


def decode(data: bytes, model_channels: int, max_pixels: int) -> DecodedImage:
    if not data:
        raise ImageError(400, "empty_body", "the request has no image data")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise ImageError(415, "unsupported_media_type", "not an image we can decode") from err
    if img.format not in ACCEPTED_FORMATS:
        raise ImageError(
            415,
            "unsupported_media_type",
            f"{img.format} images are not accepted; send one of {sorted(ACCEPTED_FORMATS)}",
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            413, "too_many_pixels", f"{width}x{height} is over the limit of {max_pixels} pixels"
        )
    fmt = img.format
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(400, "corrupt_image", f"the {fmt} image cannot be decoded: {err}") from err
    return _to_array(img, fmt, model_channels)


def _to_array(img: Image.Image, fmt: str, model_channels: int) -> DecodedImage:
    mode = img.mode
    palette = mode in ("P", "PA")
    alpha = None
    if palette:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        alpha = np.asarray(img.getchannel("A"))
        img = img.convert("RGB" if img.mode.startswith("RGB") else "L")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I") else 1.0
        colour = (np.clip(arr / scale, 0, 1)[None]).astype(np.float32)
    elif img.mode == "L" or img.mode == "1":
        colour = (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[None]
    else:  # RGB, CMYK, YCbCr, ...
        colour = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    colour = np.ascontiguousarray(colour)
    return DecodedImage(
        pixels=colour,
        mode=mode,
        format=fmt,
        alpha=alpha,
        palette_image=palette,
        colour_channels=colour.shape[0],
    )


def to_model_planes(pixels: np.ndarray, model_channels: int) -> list[np.ndarray]:
    """The model inputs for one image: (model_channels, H, W) arrays."""
    c = pixels.shape[0]
    if c == model_channels:
        return [pixels]
    if model_channels == 1:
        return [pixels[i : i + 1] for i in range(c)]  # each colour plane on its own
    return [np.repeat(pixels, model_channels, axis=0)]  # grey -> RGB


def from_model_planes(planes: list[np.ndarray], colour_channels: int) -> np.ndarray:
    if len(planes) == 1 and planes[0].shape[0] == colour_channels:
        return planes[0]
    if len(planes) == colour_channels:
        return np.concatenate(planes, axis=0)
    return planes[0].mean(axis=0, keepdims=True)  # RGB model output for a grey input


def encode(
    decoded: DecodedImage, purified: np.ndarray, out_format: str, quality: int
) -> tuple[bytes, str]:
    """purified: float32 (colour_channels, H, W). Returns (bytes, content type)."""
    if out_format == "same":
        fmt = decoded.format
    elif out_format in OUTPUT_FORMATS:
        fmt = OUTPUT_FORMATS[out_format]
    else:
        raise ImageError(
            400, "bad_format", f"format must be same|png|jpeg|webp, got {out_format!r}"
        )
    img = _restore_mode(decoded, purified)
    if fmt == "JPEG" and img.mode not in ("L", "RGB", "CMYK"):
        img = img.convert("RGB" if img.mode not in ("I;16", "I", "F", "1") else "L")
    if fmt == "WEBP" and img.mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB")
    buffer = io.BytesIO()
    params = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue(), CONTENT_TYPES[fmt]


def _restore_mode(decoded: DecodedImage, purified: np.ndarray) -> Image.Image:
    mode = decoded.mode
    clipped = np.clip(purified, 0.0, 1.0)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr16 = np.round(clipped[0] * 65535).astype(np.uint16)
        return Image.fromarray(arr16)  # uint16 -> I;16
    if mode == "F":
        return Image.fromarray(clipped[0].astype(np.float32))  # -> F
    u8 = np.round(clipped * 255).astype(np.uint8)
    img = (
        Image.fromarray(u8[0], "L")
        if u8.shape[0] == 1
        else Image.fromarray(u8.transpose(1, 2, 0), "RGB")
    )
    if decoded.alpha is not None:
        img = img.convert("RGBA" if img.mode == "RGB" else "LA")
        img.putalpha(Image.fromarray(decoded.alpha))
    if decoded.palette_image:
        return img.convert("RGBA").quantize(256, method=Image.Quantize.FASTOCTREE)
    if mode == "1":
        return img.convert("1")
    if mode in ("CMYK", "YCbCr"):
        return img.convert(mode)
    return img


# ---- tiling ---------------------------------------------------------------------------


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


@dataclass(frozen=True)
class TilePlan:
    """How one (C, H, W) image is cut into equally shaped model inputs and put back."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int

    @property
    def padded(self) -> tuple[int, int]:
        return max(self.height, self.tile_h), max(self.width, self.tile_w)


def plan_tiles(
    height: int, width: int, tile: int, overlap: int, multiple: int, min_size: int
) -> TilePlan:
    """Dimensions up to `tile` are padded to a multiple of `multiple` (shape buckets, so
    requests of similar size batch together); longer ones are cut into tiles of `tile`."""
    tile = _round_up(tile, multiple)

    def side(n: int) -> int:
        return tile if n > tile else _round_up(max(n, min_size), multiple)

    th, tw = side(height), side(width)
    return TilePlan(
        height,
        width,
        th,
        tw,
        tuple(_starts(max(height, th), th, overlap)),
        tuple(_starts(max(width, tw), tw, overlap)),
        overlap,
    )


def cut(pixels: np.ndarray, plan: TilePlan) -> list[np.ndarray]:
    ph, pw = plan.padded
    padded = np.pad(pixels, ((0, 0), (0, ph - plan.height), (0, pw - plan.width)), mode="edge")
    return [
        np.ascontiguousarray(padded[:, y : y + plan.tile_h, x : x + plan.tile_w])
        for y in plan.ys
        for x in plan.xs
    ]


def _ramp(length: int, overlap: int) -> np.ndarray:
    """Blending weights along one tile side: linear ramps where tiles overlap."""
    w = np.ones(length, dtype=np.float32)
    if overlap > 0 and length > 2 * overlap:
        ramp = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        w[:overlap], w[-overlap:] = ramp, ramp[::-1]
    return w


def stitch(tiles: list[np.ndarray], plan: TilePlan) -> np.ndarray:
    c = tiles[0].shape[0]
    ph, pw = plan.padded
    total = np.zeros((c, ph, pw), dtype=np.float32)
    weight = np.zeros((1, ph, pw), dtype=np.float32)
    multi = len(tiles) > 1
    wy = _ramp(plan.tile_h, plan.overlap if multi else 0)
    wx = _ramp(plan.tile_w, plan.overlap if multi else 0)
    window = (wy[:, None] * wx[None, :])[None]
    i = 0
    for y in plan.ys:
        for x in plan.xs:
            total[:, y : y + plan.tile_h, x : x + plan.tile_w] += tiles[i] * window
            weight[:, y : y + plan.tile_h, x : x + plan.tile_w] += window
            i += 1
    return (total / weight)[:, : plan.height, : plan.width]
