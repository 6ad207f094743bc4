"""Natural photographs from offline packages, for the natural-image purifier.

The photos are curated by hand from five sources (drawings, renders, text, charts and
calibration boards left out; views of one scene kept in one group so that a scene is
never on both sides of the split). Whole groups are held out for evaluation by a fixed
rule, so the split never changes when a source adds files. No image is copied into the
repository: `manifest()` records where each photo lives and its sha256.

    python -m training.data.photos        # the manifest, checked against the files

Training draws random multi-scale crops (NRP trains on 128x128 crops): a crop side is
drawn from [min_scale, 1] of the photo's shorter side, the crop is resized to `size` and
flipped at random - breadth of crops matters more than the count of files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.data.fashion_mnist import DatasetMissingError


def _skimage_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


# source -> (folder, what provides it, {group: [relative paths]})
OPENCV = "/usr/share/doc/opencv-doc/examples/data"
WALLPAPERS = "/usr/share/wallpapers"
BACKGROUNDS = "/usr/share/backgrounds"
SOURCES: dict[str, tuple[str, str, dict[str, list[str]]]] = {
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
        "",  # the installed package's data folder
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
}


def source_dir(source: str) -> Path:
    """Where a source's files are: the package's folder, or with PURIFIER_PHOTOS_DIR set
    (a copy made by `python -m training.bundle`), its `<source>/` folder in there."""
    bundle = os.environ.get("PURIFIER_PHOTOS_DIR")
    if bundle:
        return Path(bundle) / source
    folder = SOURCES[source][0]
    return Path(folder) if folder else _skimage_dir()


def held_out(group: str) -> bool:
    """A fixed fifth of the groups, by a hash of the group's name."""
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % 5 == 0


@dataclass(frozen=True)
class Photo:
    source: str
    group: str
    path: Path

    @property
    def split(self) -> str:
        return "test" if held_out(self.group) else "train"


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
        with Image.open(p.path) as img:
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


@cache
def _pixels(path: Path) -> np.ndarray:
    """uint8 HWC RGB, decoded once per process, the shorter side at most MAX_SHORT_SIDE."""
    with Image.open(path) as img:
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
