"""Render a kustomization offline, for validation without a cluster or a kustomize binary.

Implements exactly the subset our kustomizations use - `resources` (files and
directories), `images` (newName/newTag) and `patches` (JSON 6902 files with a kind/name
target) - and refuses any other field, so a kustomization that grows past this subset
fails loudly instead of being half-rendered.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}


class UnsupportedKustomization(ValueError):
    pass


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _image_ref(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return name, tag or None


def _set_images(resource: dict[str, Any], images: list[dict[str, str]]) -> None:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, tag = _image_ref(container["image"])
        for rule in images:
            if rule["name"] == name:
                container["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources `kubectl apply -k directory` would apply."""
    config = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(config) - SUPPORTED
    if unknown:
        raise UnsupportedKustomization(f"{directory}: fields {sorted(unknown)} not rendered here")
    resources: list[dict[str, Any]] = []
    for entry in config.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render(path)
        elif path.is_file():
            resources += [copy.deepcopy(d) for d in load_documents(path)]
        else:
            raise FileNotFoundError(f"{directory}/kustomization.yaml names missing {entry}")
    for patch in config.get("patches", []):
        target = patch["target"]
        matches = [
            r
            for r in resources
            if r["kind"] == target["kind"] and r["metadata"]["name"] == target["name"]
        ]
        if len(matches) != 1:
            raise ValueError(f"patch {patch['path']} matches {len(matches)} resources")
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        patched = jsonpatch.apply_patch(matches[0], operations)
        resources[resources.index(matches[0])] = patched
    for resource in resources:
        _set_images(resource, config.get("images", []))
    return resources
