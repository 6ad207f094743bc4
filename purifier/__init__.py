"""Purifier: adversarial purification, trained offline and served as a sidecar."""

__version__ = "0.1.0"
