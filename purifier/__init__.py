"""Purifier: adversarial purification, trained offline and served as a sidecar.

`from purifier import Purifier` is the in-process purifier (service.offline), imported on
first use so that this package stays importable without the service's dependencies."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Purifier", "Purified"):
        from service import offline

        return getattr(offline, name)
    if name == "PurifyBatches":  # for Ray Data's map_batches (service.ray_batches)
        from service.ray_batches import PurifyBatches

        return PurifyBatches
    raise AttributeError(f"module 'purifier' has no attribute {name!r}")
