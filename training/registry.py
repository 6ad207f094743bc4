"""One registry mechanism for everything a config names: families register themselves.

`@MODELS.register("lenet")` beside a builder puts it in the table that
`MODELS.build({"arch": "lenet", ...})` reads; an unknown name fails with one message
that lists the known ones. The same idea as BasicSR's `utils/registry.py` and timm's
`register_model`, kept to a read-only mapping so lookups read like the dicts they
replace. Each package's `__init__` imports its family modules, so asking the package
for its registry finds every entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """name -> entry (a builder, a class, a function), filled by `register`."""

    def __init__(self, what: str, key: str = "kind") -> None:
        self.what = what  # "model", "attack", ...: said in the unknown-name error
        self.key = key  # the spec key that names the entry in a config
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: file the object under each name (aliases share one entry); with
        no name, under its own `__name__`."""

        def add(obj: T) -> T:
            for name in names or (obj.__name__,):  # type: ignore[attr-defined]
                self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = obj

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r}; known: {sorted(self)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def build(self, spec: dict[str, Any]) -> Any:
        """Call the entry the spec names under `key` with the spec's other keys."""
        params = dict(spec)
        return self[params.pop(self.key)](**params)


# The project's registries (filled by the modules named beside them).
MODELS: Registry[Callable[..., Any]] = Registry("arch", key="arch")  # training.models
TRAINERS: Registry[Callable[..., Any]] = Registry("method", key="method")  # training.methods
DATASETS: Registry[Callable[..., Any]] = Registry("dataset", key="dataset")  # training.data
ATTACKS: Registry[Callable[..., Any]] = Registry("attack")  # training.attacks
SURROGATES: Registry[Callable[..., Any]] = Registry("surrogate")  # training.attacks
DEFENSES: Registry[Callable[..., Any]] = Registry("defense")  # training.defenses
DISTANCES: Registry[Callable[..., Any]] = Registry("distance")  # training.losses
GAN_LOSSES: Registry[tuple[Callable[..., Any], Callable[..., Any]]] = Registry("gan loss")
