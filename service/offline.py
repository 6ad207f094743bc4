"""Purification in process, no HTTP: the service's own pipeline (decoding with EXIF
orientation, modes, alpha kept aside, tiling, keyed noise, the suspicion verdict,
encoding) around one onnxruntime model. For notebooks and batch jobs:

    from purifier import Purifier
    purifier = Purifier("photo-guided")
    clean = purifier.purify(pil_image)          # or an HxW / HxWxC uint8 or float array
    result = purifier.purify_bytes(png_bytes)   # bytes in, bytes out, with its figures

`purifier purify` (service.batch) runs it over files and folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from service.config import Settings
from service.detection import Verdict, detector_for
from service.engine import Engine
from service.imaging import DecodedImage, decode, distances, encode, pixels_of
from service.noise_key import NoiseKey, load_noise_key
from service.registry import ModelLoadError, scan
from service.tiles import cut_image, noise_shape, tile_geometry


class PurifierError(RuntimeError):
    """A model could not be loaded (the message says which and why)."""


@dataclass(frozen=True)
class Purified:
    """One purified image: its encoded bytes and content type, and the figures the
    service puts in its headers."""

    data: bytes
    content_type: str
    l2: float
    linf: float
    verdict: Verdict | None

    @property
    def suspicious(self) -> bool:
        return self.verdict is not None and self.verdict.suspicious


class Purifier:
    """One exported model, loaded and ready. `settings` are the service's (PURIFIER_*
    environment variables apply as for `purifier serve`, the noise key included)."""

    def __init__(
        self,
        model: str | None = None,
        repository: str | Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()
        if repository is not None:
            settings = settings.model_copy(update={"model_repository": Path(repository)})
        try:
            entries, failures = scan(settings.model_repository, [model] if model else None)
        except ModelLoadError as err:
            raise PurifierError(str(err)) from None
        if failures:
            raise PurifierError("; ".join(f"{name}: {why}" for name, why in failures.items()))
        if not entries:
            raise PurifierError(f"no model {model!r} in {settings.model_repository}")
        if model is None:
            from service.app import default_model_name

            name = default_model_name(settings.default_model, [e.name for e in entries])
            entries = [e for e in entries if e.name == name]
        self.entry = entries[0]
        self.settings = settings
        self.engine = Engine(self.entry, settings)
        self.geometry = tile_geometry(self.entry, settings)
        self.detector = detector_for(self.entry.card, self.engine.path, settings.suspicion_fpr)
        self.noise_key: NoiseKey = load_noise_key(settings)

    @property
    def name(self) -> str:
        return self.entry.name

    def __repr__(self) -> str:
        return f"Purifier({self.name!r} v{self.entry.version}, {self.engine.provider})"

    def purify_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (C, H, W) in [0, 1], C = 1 or 3 -> the purified pixels, same shape."""
        noise = None
        if self.engine.stochastic:
            noise = self.noise_key.noise(pixels, noise_shape(self.engine, pixels))
        tiled = cut_image(self.engine, self.geometry, pixels, noise)
        limit = self.settings.max_batch_size
        outputs: list[np.ndarray] = []
        for start in range(0, len(tiled.tiles), limit):
            outputs += list(self.engine.run(np.stack(tiled.tiles[start : start + limit])))
        return tiled.assemble(outputs)

    def purify(self, image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
        """A PIL image (any mode; EXIF orientation applied, alpha kept) or an array (H, W)
        or (H, W, C), uint8 or float in [0, 1]; returns the same kind."""
        if isinstance(image, Image.Image):
            decoded = pixels_of(image, self.engine.channels)
            return self._restore(decoded, self.purify_pixels(decoded.pixels))
        return self.purify_array(np.asarray(image))[0]

    def purify_bytes(self, data: bytes, fmt: str = "same", quality: int | None = None) -> Purified:
        """An encoded image through the whole pipeline, as `POST /purify` answers it."""
        decoded = self.decode(data)
        return self.finish(decoded, self.purify_pixels(decoded.pixels), fmt, quality)

    def decode(self, data: bytes) -> DecodedImage:
        """The image's pixels (service.imaging's checks and limits; ImageError otherwise)."""
        return decode(data, self.engine.channels, self.settings.max_pixels)

    def finish(
        self, decoded: DecodedImage, purified: np.ndarray, fmt: str, quality: int | None
    ) -> Purified:
        """Encode and measure a purified image (separate from inference, so that a batch
        job can run it beside the next image's inference)."""
        data, content_type = encode(decoded, purified, fmt, quality or self.settings.jpeg_quality)
        return self._figures(decoded.pixels, purified, data, content_type)

    def _restore(self, decoded: DecodedImage, purified: np.ndarray) -> Image.Image:
        import io

        data, _ = encode(decoded, purified, "png", 100)
        return Image.open(io.BytesIO(data))

    def purify_array(self, array: np.ndarray) -> tuple[np.ndarray, Purified]:
        """An array (H, W) or (H, W, C), uint8 or float in [0, 1], purified (the same
        kind), with its figures (L2, Linf in [0, 1] units; the verdict; no encoded data)."""
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
            raise ValueError(f"an image array is (H, W) or (H, W, 1|3), not {array.shape}")
        integer = np.issubdtype(array.dtype, np.integer)
        if integer and array.dtype != np.uint8:
            raise ValueError(f"integer arrays must be uint8, not {array.dtype}")
        chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        pixels = chw.astype(np.float32) / 255.0 if integer else chw.astype(np.float32)
        pixels = np.ascontiguousarray(np.clip(pixels, 0.0, 1.0))
        out = self.purify_pixels(pixels)
        figures = self._figures(pixels, out, b"", "")
        hwc = out[0] if array.ndim == 2 else out.transpose(1, 2, 0)
        restored = np.round(hwc * 255).astype(np.uint8) if integer else hwc.astype(array.dtype)
        return restored, figures

    def _figures(
        self, before: np.ndarray, after: np.ndarray, data: bytes, content_type: str
    ) -> Purified:
        l2, linf = distances(before, after)
        verdict = None if self.detector is None else self.detector.judge(before, after)
        return Purified(data, content_type, l2, linf, verdict)
