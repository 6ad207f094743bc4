"""The `noise` input of stochastic models (docs/model-contract.md): where it comes from.

A stochastic purifier's graph takes a second input `noise` (float32, the image's shape,
standard normal) and scales it inside the graph by the sigma its card records. What
feeds it decides who can predict it:

- the service keys it (`keyed_noise`): a counter-based generator (numpy's Philox) seeded
  by HMAC-SHA256(secret key, the decoded pixels and their shape). The same pixels give
  the same noise on every replica that shares the key, whatever file format carried
  them; without the key an attacker cannot know the noise their image will meet (an
  attack must then average over draws, EOT).
- evaluation and export seed it (`seeded_noise`): repeatable cell by cell.

numpy and the standard library only: both sides import this.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from purifier.contract import INPUT_NAME, NOISE_INPUT_NAME

KEY_BYTES = 32  # a generated key's length (HMAC-SHA256's block-size advice: >= 32 bytes)


def noise_from_digest(digest: bytes, shape: Sequence[int]) -> np.ndarray:
    """Standard-normal float32 noise of `shape` from Philox keyed by the digest's first
    128 bits (Philox4x64's key): any part of the field is fixed by the digest alone."""
    key = int.from_bytes(digest[:16], "little")
    return np.random.Generator(np.random.Philox(key=key)).standard_normal(
        tuple(shape), dtype=np.float32
    )


def pixel_digest(key: bytes, pixels: np.ndarray) -> bytes:
    """HMAC-SHA256(key, dtype + shape + the pixels' bytes): one digest per decoded image."""
    contiguous = np.ascontiguousarray(pixels)
    header = f"{contiguous.dtype.str}:{'x'.join(map(str, contiguous.shape))}:".encode()
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(memoryview(contiguous).cast("B"))
    return mac.digest()


def keyed_noise(key: bytes, pixels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The noise field for an image: `shape`'s standard normal, keyed by its pixels."""
    return noise_from_digest(pixel_digest(key, pixels), shape)


def seeded_noise(seed: int | Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Standard-normal float32 noise from a seed (evaluation, export checks, tests)."""
    return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


def input_names(session: Any) -> list[str]:
    """An onnxruntime session's input names."""
    return [i.name for i in session.get_inputs()]


def is_stochastic(session: Any) -> bool:
    return NOISE_INPUT_NAME in input_names(session)


def feed(
    session: Any, image: np.ndarray, noise: np.ndarray | None = None, seed: int = 0
) -> Mapping[str, np.ndarray]:
    """The inputs for one run of either kind of model: `image`, and for a stochastic
    model `noise` (given, or drawn from `seed`)."""
    inputs = {INPUT_NAME: image}
    if is_stochastic(session):
        inputs[NOISE_INPUT_NAME] = seeded_noise(seed, image.shape) if noise is None else noise
    return inputs
