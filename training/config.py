"""YAML experiment configs: loading, dotted overrides, seeding."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import yaml


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float. PyYAML follows YAML 1.1, where a
    float needs a dot (`1.0e-3`) and `lr: 1e-3` silently becomes the string "1e-3"."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML config and apply `key.sub=value` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config not found: {path}")
    config = _read_with_base(path)
    config = apply_overrides(config, overrides or [])
    config.setdefault("name", path.stem)
    config["_path"] = str(path)
    return config


def _read_with_base(path: Path) -> dict[str, Any]:
    """The YAML at path; with `base: OTHER.yaml` (relative to path's folder), OTHER's
    config with this file's top-level keys in place of OTHER's, so that a variant states
    only the sections it changes (each one whole: no deep merge to second-guess)."""
    config = _parse(path.read_text()) or {}
    base = config.pop("base", None)
    if base is None:
        return config
    base_path = path.parent / base
    if not base_path.exists():
        raise FileNotFoundError(f"{path}: base config not found: {base_path}")
    base_config = _read_with_base(base_path)
    base_config.pop("name", None)  # a variant is named after itself
    return {**base_config, **config}


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse(raw)
    return config


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def apply_run_settings(config: dict[str, Any]) -> None:
    """A run's `seed` (default 0) and torch `threads` (default: torch's own), set before
    anything random or parallel runs."""
    import torch

    seed_everything(int(config.get("seed", 0)))
    torch.set_num_threads(int(config.get("threads", torch.get_num_threads())))
