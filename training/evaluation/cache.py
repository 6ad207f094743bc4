"""Finished cells of `purifier eval`, kept on disk so that a stopped run can resume.

A long table (hours on a CPU) otherwise starts over when it is killed. Every measured
cell is written as soon as it is known, under a key that is the hash of everything the
number depends on: the images (data spec, count, seed, batch size, device type), the
target and attack-source models, the attack's spec, the defense's spec, and the content
of every weights file these name. `purifier eval CONFIG --resume` reads back the cells
whose key matches and measures only the rest; any change to a spec or a weights file
changes the key, so a stale number is never reused. Without --resume nothing is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch

from purifier.contract import sha256_of
from training.config import load_config

# Attack fields that choose where a row is shown or which cells run, not how it is crafted.
PRESENTATION_FIELDS = ("seen", "only")


@cache
def file_sha256(path: str) -> str:
    """sha256 of a weights file, once per process (a table hashes each target once)."""
    return sha256_of(Path(path))


def with_weight_hashes(value: Any) -> Any:
    """The spec with each `weights` file path replaced by the file's sha256."""
    if isinstance(value, dict):
        return {
            k: file_sha256(v)
            if k == "weights" and isinstance(v, str) and os.path.isfile(v)
            else with_weight_hashes(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [with_weight_hashes(v) for v in value]
    return value


def model_identity(spec: str | Path | dict[str, Any] | None) -> Any:
    """What a model given by config path or inline spec is: its spec and weights' hashes."""
    if spec is None or isinstance(spec, dict):
        return with_weight_hashes(spec)
    return with_weight_hashes(load_config(spec))


def attack_identity(spec: dict[str, Any]) -> dict[str, Any]:
    return with_weight_hashes({k: v for k, v in spec.items() if k not in PRESENTATION_FIELDS})


def cell_key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class CellCache:
    """Cells under `folder`, one small torch file each. `resume=False`: write only."""

    def __init__(self, folder: Path, resume: bool) -> None:
        self.folder, self.resume = folder, resume

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.folder / f"{key}.pt"
        if not self.resume or not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f"{key}.pt.partial"
        torch.save(value, partial)
        partial.replace(self.folder / f"{key}.pt")  # a kill mid-write leaves no half cell
