"""The secret that keys stochastic models' noise (purifier/noise.py): from
PURIFIER_NOISE_KEY, from the file PURIFIER_NOISE_KEY_FILE names (a Kubernetes Secret), or
random for this process. The key never leaves this object: its repr hides it, and only
its source is ever logged."""

from __future__ import annotations

import logging
import secrets

import numpy as np

from purifier.noise import KEY_BYTES, keyed_noise
from service.config import Settings

log = logging.getLogger("purifier.noise")

MIN_KEY_BYTES = 16  # below this an HMAC key can be searched for


class NoiseKeyError(ValueError):
    """The configured key is unusable; the message names the setting, never the key."""


class NoiseKey:
    def __init__(self, secret: bytes, source: str) -> None:
        self._secret = secret
        self.source = source  # where it came from: safe to log and to show

    def __repr__(self) -> str:
        return f"NoiseKey(source={self.source!r})"

    def noise(self, pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The noise field for these decoded pixels (float32 standard normal, `shape`)."""
        return keyed_noise(self._secret, pixels, shape)


def random_noise_key() -> NoiseKey:
    return NoiseKey(secrets.token_bytes(KEY_BYTES), "random for this process")


def load_noise_key(settings: Settings) -> NoiseKey:
    if settings.noise_key is not None and settings.noise_key_file is not None:
        raise NoiseKeyError("set PURIFIER_NOISE_KEY or PURIFIER_NOISE_KEY_FILE, not both")
    if settings.noise_key is not None:
        secret = settings.noise_key.get_secret_value().encode()
        source = "PURIFIER_NOISE_KEY"
    elif settings.noise_key_file is not None:
        path = settings.noise_key_file
        try:
            secret = path.read_bytes().strip()
        except OSError as err:
            raise NoiseKeyError(
                f"PURIFIER_NOISE_KEY_FILE {path}: cannot read it ({err.strerror})"
            ) from None
        source = f"PURIFIER_NOISE_KEY_FILE ({path})"
    else:
        log.warning(
            "no PURIFIER_NOISE_KEY: stochastic models draw noise from a random key for this "
            "process; replicas and restarts will answer the same photo differently"
        )
        return random_noise_key()
    if len(secret) < MIN_KEY_BYTES:
        raise NoiseKeyError(f"{source}: the key must be at least {MIN_KEY_BYTES} bytes")
    log.info("stochastic models' noise is keyed by %s", source)
    return NoiseKey(secret, source)
