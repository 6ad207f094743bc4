"""Decode, validate, tile and encode images: the only module that uses Pillow.

An image becomes a float32 (C, H, W) array in [0, 1] in the colour space the model
expects; alpha is kept aside and restored, and the result is written back in the input's
own mode and size. A one-channel model purifies each colour channel of an RGB image as a
grey image, so colour survives; a three-channel model sees grey images replicated.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
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
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# What a client may ask for: "same" keeps the input's format.
REQUESTED_FORMATS = ("same", *OUTPUT_FORMATS)


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
    """Untrusted bytes to pixels: open_image, then pixels_of."""
    return pixels_of(open_image(data, max_pixels), model_channels)


@contextlib.contextmanager
def _image_errors() -> Iterator[None]:
    """Every failure becomes an ImageError (4xx): Pillow's parsers raise many exception
    types on hostile files, and none of them is a server error."""
    try:
        yield
    except ImageError:
        raise
    except MemoryError as err:
        raise ImageError(413, "too_many_pixels", "the image does not fit in memory") from err
    except Exception as err:
        raise ImageError(
            400, "corrupt_image", f"the image cannot be decoded: {type(err).__name__}: {err}"
        ) from err


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image's header, checked (format, pixel count, one frame); no pixel decoded."""
    if not data:
        raise ImageError(400, "empty_body", "the request has no image data")
    with _image_errors():
        try:
            # Only our formats' parsers ever see the bytes: some others allocate the whole
            # canvas while opening, before any size check (a 100-byte GIF took 4 GB).
            img = Image.open(io.BytesIO(data), formats=sorted(ACCEPTED_FORMATS))
        except UnidentifiedImageError as err:
            raise ImageError(
                415,
                "unsupported_media_type",
                f"not an image we decode; send one of {sorted(ACCEPTED_FORMATS)}",
            ) from err
        # The pixel limit is checked from the header, before any pixel is decoded.
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(
                413,
                "too_many_pixels",
                f"{width}x{height} is over the limit of {max_pixels} pixels",
            )
        if getattr(img, "n_frames", 1) > 1:
            raise ImageError(
                415,
                "animated_image",
                f"{img.format} with {img.n_frames} frames: send a single still image",
            )
        return img


def pixels_of(img: Image.Image, model_channels: int) -> DecodedImage:
    """Decode an opened image's pixels, upright (EXIF orientation applied)."""
    with _image_errors():
        fmt = img.format
        img.load()
        img = ImageOps.exif_transpose(img)  # a copy, without .format
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
    """The inverse of to_model_planes: (colour_channels, H, W). A grey image that a
    three-channel model purified as replicated RGB comes back grey (the planes' mean),
    so the answer keeps the input's mode."""
    out = planes[0] if len(planes) == 1 else np.concatenate(planes, axis=0)
    if out.shape[0] == colour_channels:
        return out
    return out.mean(axis=0, keepdims=True)


def encode(
    decoded: DecodedImage, purified: np.ndarray, out_format: str, quality: int
) -> tuple[bytes, str]:
    """purified: float32 (colour_channels, H, W). Returns (bytes, content type)."""
    if out_format == "same":
        fmt = decoded.format
    elif out_format in OUTPUT_FORMATS:
        fmt = OUTPUT_FORMATS[out_format]
    else:
        allowed = "|".join(REQUESTED_FORMATS)
        raise ImageError(400, "bad_format", f"format must be {allowed}, got {out_format!r}")
    img = _fit_mode(_restore_mode(decoded, purified), fmt)
    buffer = io.BytesIO()
    params = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue(), CONTENT_TYPES[fmt]


# Modes each output format can hold (None: any). The input's mode is kept when the
# output format can hold it; otherwise the nearest one it can (alpha kept if possible).
WRITABLE_MODES: dict[str, set[str] | None] = {
    "PNG": {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"},
    "JPEG": {"L", "RGB", "CMYK"},
    "WEBP": {"L", "RGB", "RGBA"},
    "BMP": {"1", "L", "P", "RGB", "RGBA"},
    "TIFF": None,
}


def _fit_mode(img: Image.Image, fmt: str) -> Image.Image:
    allowed = WRITABLE_MODES[fmt]
    if allowed is None or img.mode in allowed:
        return img
    if img.mode in ("I;16", "I", "F"):  # high bit depth -> 8 bit, scaled (convert clips)
        scale = 1.0 if img.mode == "F" else 65535.0
        unit = np.clip(np.asarray(img, dtype=np.float64) / scale, 0.0, 1.0)
        img = Image.fromarray(np.round(unit * 255).astype(np.uint8), "L")
        if img.mode in allowed:
            return img
    alpha = img.has_transparency_data
    grey = img.mode in ("1", "L", "LA")
    order = (["LA", "RGBA"] if grey else ["RGBA"]) if alpha else []
    order += ["L", "RGB"] if grey else ["RGB"]
    return img.convert(next(m for m in order if m in allowed))


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


def _side(length: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """(tile side, tile starts) along one side of `length` (a multiple of `multiple`):
    as few tiles as keep within `tile` while neighbours share at least `overlap`, all
    one side (rounded up to the bucket) and spread evenly, the last flush with the end.
    Even spreading, not a fixed stride: with tiles of 512 and an overlap of 96, a
    640-px side takes two 384-px tiles (768 px run) instead of 512 + 512 (1,024)."""
    if length <= tile:
        return length, [0]
    count = max(2, -(-(length - overlap) // max(1, tile - overlap)))
    side = min(tile, _round_up(-(-(length + (count - 1) * overlap) // count), multiple))
    span = length - side
    return side, [i * span // (count - 1) for i in range(count)]


def _segments(starts: tuple[int, ...], tile: int, length: int) -> list[tuple[int, int]]:
    """What each tile keeps along one side: from the middle of its overlap with the one
    before to the middle of its overlap with the one after (the image's own ends at the
    ends). Every kept pixel is then at least half an overlap from any edge where its tile
    was cut out of the image, so its context is the whole image's."""
    cuts = [(starts[i] + tile + starts[i + 1]) // 2 for i in range(len(starts) - 1)]
    bounds = [0, *cuts, length]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


@dataclass(frozen=True)
class TilePlan:
    """How one (C, H, W) image is cut into equally shaped model inputs and put back. The
    image is first edge-padded to `padded` (a multiple of the bucket), the same input
    whole-image inference gets, so tiles and the whole image see the same borders."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int
    padded: tuple[int, int]


def plan_tiles(
    height: int, width: int, tile: int, overlap: int, multiple: int, min_size: int
) -> TilePlan:
    """Each side is padded to a multiple of `multiple` (shape buckets, so requests of
    similar size batch together); sides longer than `tile` are cut into tiles of `tile`
    that share `overlap` pixels with their neighbours (the model's receptive field, from
    its card: see `stitch`)."""
    tile = _round_up(tile, multiple)
    ph = _round_up(max(height, min_size), multiple)
    pw = _round_up(max(width, min_size), multiple)
    th, ys = _side(ph, tile, overlap, multiple)
    tw, xs = _side(pw, tile, overlap, multiple)
    return TilePlan(height, width, th, tw, tuple(ys), tuple(xs), overlap, (ph, pw))


def cut(pixels: np.ndarray, plan: TilePlan) -> list[np.ndarray]:
    ph, pw = plan.padded
    if len(plan.ys) == len(plan.xs) == 1 and (ph, pw) == (plan.height, plan.width):
        return [np.ascontiguousarray(pixels)]  # one tile, no padding: the image itself
    padded = np.pad(pixels, ((0, 0), (0, ph - plan.height), (0, pw - plan.width)), mode="edge")
    return [
        np.ascontiguousarray(padded[:, y : y + plan.tile_h, x : x + plan.tile_w])
        for y in plan.ys
        for x in plan.xs
    ]


def stitch(tiles: list[np.ndarray], plan: TilePlan) -> np.ndarray:
    """The model's outputs for `cut`'s tiles, put back: each output pixel comes from the
    one tile where it is farthest from a cut edge (no blending: a blend mixes in pixels
    whose context was cut off), cropped to the image."""
    if len(tiles) == 1:
        return tiles[0][:, : plan.height, : plan.width]
    ph, pw = plan.padded
    out = np.empty((tiles[0].shape[0], ph, pw), dtype=tiles[0].dtype)
    rows = _segments(plan.ys, plan.tile_h, ph)
    cols = _segments(plan.xs, plan.tile_w, pw)
    i = 0
    for y, (top, bottom) in zip(plan.ys, rows, strict=True):
        for x, (left, right) in zip(plan.xs, cols, strict=True):
            out[:, top:bottom, left:right] = tiles[i][:, top - y : bottom - y, left - x : right - x]
            i += 1
    return out[:, : plan.height, : plan.width]


def distances(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """L2 norm and L-inf of the change, in [0, 1] pixel units."""
    diff = (after - before).astype(np.float64)
    return float(np.sqrt((diff**2).sum())), float(np.abs(diff).max(initial=0.0))
