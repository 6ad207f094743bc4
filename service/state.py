"""What the running service holds: settings, metrics, one runtime per model, readiness."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from service.batcher import DynamicBatcher
from service.config import Settings
from service.detection import Detector
from service.engine import Engine
from service.errors import ServiceError
from service.imaging import TilePlan
from service.metrics import Metrics
from service.noise_key import NoiseKey, random_noise_key
from service.registry import ModelEntry
from service.tiles import TileGeometry
from service.upstream import Upstream


@dataclass
class ModelRuntime:
    entry: ModelEntry
    engine: Engine
    batcher: DynamicBatcher
    geometry: TileGeometry  # tile side, overlap (the receptive field, both ways), padding
    detector: Detector | None = None  # the card's calibrated suspicion verdict, if any
    ready: bool = False

    @property
    def tile(self) -> int:
        return self.geometry.tile

    def check_version(self, version: str | None) -> None:
        """A request naming a version: 404 unless it is the one served."""
        if version is not None and version != str(self.entry.version):
            raise ServiceError(
                404,
                "unknown_version",
                f"{self.entry.name} serves version {self.entry.version}, not {version}",
            )

    def plan(self, height: int, width: int) -> TilePlan:
        """How an image of this size is cut into this model's tiles."""
        return self.geometry.plan(height, width)


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    codec_pool: ThreadPoolExecutor
    models: dict[str, ModelRuntime] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # refused models: name -> why
    default_model: str | None = None
    ready: bool = False
    draining: bool = False
    started: float = field(default_factory=time.time)
    arriving: int = 0  # work requests admitted that have not reached a batcher yet
    # Set from settings at start-up (service.noise_key.load_noise_key); random until then.
    noise_key: NoiseKey = field(default_factory=random_noise_key)
    # Proxy mode (PURIFIER_UPSTREAM_URL): the user's model server, one pooled client.
    upstream: Upstream | None = None

    @contextmanager
    def on_the_way(self) -> Iterator[None]:
        """Around a work request's reading and decoding: while any request is in there,
        batchers wait (up to their delay) for it to join the next batch."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    @property
    def every_model_ready(self) -> bool:
        """The protocol's server-ready: ready, and every loaded model warmed up (the
        default serves first; the others follow in the background)."""
        return self.is_ready and all(m.ready for m in self.models.values())

    @property
    def is_ready(self) -> bool:
        """What the readiness probe reports: off before warm-up and from SIGTERM on."""
        return self.accepting and not self.draining

    @property
    def accepting(self) -> bool:
        """Whether work requests are served: from the default model's warm-up on (the
        others serve as each finishes its own), and still while draining - load
        balancers keep routing here until they see readiness go, and a request they send
        in that window must be answered, not refused."""
        return self.ready

    def model(self, name: str | None) -> ModelRuntime:
        from service.errors import ServiceError

        key = name or self.default_model
        if key in self.failed:
            raise ServiceError(503, "model_unavailable", f"model {key!r} failed to load")
        if key not in self.models:
            raise ServiceError(
                404, "unknown_model", f"no model named {key!r}; serving {sorted(self.models)}"
            )
        return self.models[key]

    def serving(self, name: str | None) -> ModelRuntime:
        """The model for a work request: as `model`, and 503 while it is still warming up."""
        from service.errors import ServiceError

        runtime = self.model(name)
        if not runtime.ready:
            raise ServiceError(
                503,
                "model_not_ready",
                f"model {runtime.entry.name!r} is still warming up",
                retry_after=1,
            )
        return runtime
