"""The model registry: finds exported_models/<name>/<version>/{model.onnx, card.json}
(and the variants the card lists: model.fp16.onnx, model.cpu.onnx, model.int8.onnx),
picks the highest version, and refuses a model whose files' sha256 differ from its card."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from purifier.contract import CARD_FILE, MODEL_FILE, VARIANT_FILES, sha256_of


class ModelLoadError(RuntimeError):
    """A model folder that cannot be served; the message names the file."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: int
    onnx_path: Path
    card: dict[str, Any]
    fp16_path: Path | None = None  # the half-precision model, when exported
    cpu_graph_path: Path | None = None  # onnxruntime's CPU-optimised graph, when exported
    int8_path: Path | None = None  # the statically quantised model, when exported

    @property
    def channels(self) -> int:
        return int(self.card["channels"])


def load_entry(model_dir: Path, version: int | None = None) -> ModelEntry:
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise ModelLoadError(f"{model_dir}: no numbered version folder ({model_dir}/1/model.onnx)")
    chosen = version if version is not None else versions[-1]
    vdir = model_dir / str(chosen)
    onnx_path, card_path = vdir / MODEL_FILE, vdir / CARD_FILE
    for path in (onnx_path, card_path):
        if not path.exists():
            raise ModelLoadError(f"missing {path}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{card_path} is not valid JSON: {err}") from err
    _check_sha256(onnx_path, card.get("sha256"), card_path)
    variants = {
        f"{section}_path": _variant_path(vdir, card, section, card_path)
        for section in VARIANT_FILES
    }
    return ModelEntry(model_dir.name, chosen, onnx_path, card, **variants)


def _variant_path(vdir: Path, card: dict[str, Any], section: str, card_path: Path) -> Path | None:
    """The variant file the card's `section` lists (checked like model.onnx), or None."""
    record = card.get(section)
    if not isinstance(record, dict):
        return None
    path = vdir / str(record.get("file", VARIANT_FILES[section]))
    if not path.exists():
        raise ModelLoadError(f"missing {path} (listed in {card_path})")
    _check_sha256(path, record.get("sha256"), card_path)
    return path


def _check_sha256(path: Path, expected: object, card_path: Path) -> None:
    digest = sha256_of(path)
    if expected != digest:
        raise ModelLoadError(
            f"{path}: sha256 {digest} does not match {card_path} ({expected}); "
            "refusing a corrupt or mismatched model"
        )


def discover(repository: Path, only: list[str] | None = None) -> list[ModelEntry]:
    """Every model folder in the repository (or only the named ones), highest version;
    the first broken one raises ModelLoadError."""
    entries, failures = scan(repository, only)
    if failures:
        raise ModelLoadError("; ".join(failures.values()))
    return entries


def scan(
    repository: Path, only: list[str] | None = None
) -> tuple[list[ModelEntry], dict[str, str]]:
    """The loadable models, and for each broken one (name -> why, naming the file)."""
    if not repository.is_dir():
        raise ModelLoadError(f"model repository {repository} does not exist")
    dirs = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    if only is not None:
        missing = set(only) - {p.name for p in dirs}
        if missing:
            raise ModelLoadError(f"models not found in {repository}: {sorted(missing)}")
        dirs = [p for p in dirs if p.name in only]
    if not dirs:
        raise ModelLoadError(f"no models in {repository}")
    entries, failures = [], {}
    for d in dirs:
        try:
            entries.append(load_entry(d))
        except ModelLoadError as err:
            failures[d.name] = str(err)
    return entries, failures
