"""Decode and encode as Purifier does, for the ceiling and the peer servers: the image in
the model's channels (grey or RGB) as float32 planes in [0, 1], and the answer in the
upload's own format (a JPEG comes back as a JPEG, at Purifier's default quality)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

JPEG_QUALITY = 95  # service.config.Settings.jpeg_quality's default (tests check they agree)


def decode(data: bytes, channels: int) -> tuple[np.ndarray, str]:
    """((channels, H, W) float32 in [0, 1], the upload's format)."""
    img = Image.open(io.BytesIO(data))
    fmt = img.format or "PNG"
    pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), np.float32) / 255.0
    return (pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)), fmt


def encode(planes: np.ndarray, fmt: str) -> bytes:
    """(C, H, W) in [0, 1] -> the image file in `fmt`."""
    u8 = np.round(np.clip(planes, 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(u8[0] if len(u8) == 1 else u8.transpose(1, 2, 0))
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()


def media_type(fmt: str) -> str:
    return f"image/{fmt.lower()}"


def input_channels(session: object) -> int:
    """C of the model's `image` input (fixed by the model contract)."""
    return int(session.get_inputs()[0].shape[1])  # type: ignore[attr-defined]
