"""`purifier purify` on a folder of photographs (issue 39): images/s of the command as a
user runs it, against the in-process ceiling, and an interrupted run resumed.

- The folder: N 640x480 JPEGs (quality 90), crops of the project's curated photographs
  (training.data.photos, every split; each photo cropped at spread-out places).
- Ceiling: `Purifier(model).purify_pixels` over the same images already decoded in
  memory: the model alone, no files, no codecs, no process start.
- Command: `purifier purify FOLDER --out OUT --model MODEL` in a fresh process, timed from
  its start to its exit (model loading included), and its own images/s line.
- Resume: the command again into a second folder, killed (SIGKILL) once half its outputs
  exist, then run again: the outputs must be exactly the uninterrupted run's files, byte
  for byte, with no partial file left.

    python -m benchmarks.batch_bench --images 200
Writes benchmarks/results/batch_bench.{json,md}. Run it alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.serve_bench import REPO, write_report

SIZE = (640, 480)


def photo_folder(folder: Path, count: int) -> list[Path]:
    from training.data.photos import _open, photos

    sources = photos()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = sources[i % len(sources)]
        with _open(photo.path) as img:
            img = img.convert("RGB")
            if min(img.size) < SIZE[1]:
                img = img.resize((max(SIZE[0], img.width * 2), max(SIZE[1], img.height * 2)))
            turn = i // len(sources)  # the same photo again: another place in it
            x = (turn * 211) % max(1, img.width - SIZE[0])
            y = (turn * 137) % max(1, img.height - SIZE[1])
            crop = img.crop((x, y, x + SIZE[0], y + SIZE[1]))
        path = folder / f"photo_{i:04d}.jpg"
        crop.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def ceiling(model: str, paths: list[Path]) -> float:
    from service.offline import Purifier

    purifier = Purifier(model)
    pixels = [purifier.decode(p.read_bytes()).pixels for p in paths]
    purifier.purify_pixels(pixels[0])  # warm
    started = time.perf_counter()
    for image in pixels:
        purifier.purify_pixels(image)
    return len(pixels) / (time.perf_counter() - started)


def command(folder: Path, out: Path, model: str) -> list[str]:
    cli = [sys.executable, "-m", "purifier.cli", "purify", str(folder), "--out", str(out)]
    return [*cli, "--model", model]


def run_command(folder: Path, out: Path, model: str, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        command(folder, out, model), env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, done.stdout


def interrupted_then_resumed(folder: Path, out: Path, model: str, env: dict, total: int) -> dict:
    proc = subprocess.Popen(
        command(folder, out, model), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while proc.poll() is None and len(outputs(out)) < total // 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = len(outputs(out))
    _, stdout = run_command(folder, out, model, env)
    return {"written_before_kill": written_before, "resumed_summary": stdout.splitlines()[0]}


def outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", default="photo-guided")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    env = {**os.environ, "PURIFIER_NOISE_KEY": "batch-bench-fixed-key-0123456789"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = photo_folder(root / "photos", args.images)
        ceiling_rate = ceiling(args.model, paths)
        seconds, stdout = run_command(root / "photos", root / "first", args.model, env)
        own_rate = float(re.search(r"\(([\d.]+) images/s\)", stdout).group(1))
        resume = interrupted_then_resumed(
            root / "photos", root / "second", args.model, env, args.images
        )
        first, second = outputs(root / "first"), outputs(root / "second")
        partial = [p for p in (root / "second").rglob(".*") if p.is_file()]
        identical = first == second and len(first) == args.images and not partial
    result: dict[str, Any] = {
        "command": f"python -m benchmarks.batch_bench --images {args.images} --model {args.model}",
        "model": args.model,
        "images": args.images,
        "size": f"{SIZE[0]}x{SIZE[1]} JPEG",
        "device": f"cpu {platform.machine()}, {os.cpu_count()} cores",
        "ceiling_images_per_s": round(ceiling_rate, 2),
        "command_wall_s": round(seconds, 2),
        "command_images_per_s_wall": round(args.images / seconds, 2),
        "command_images_per_s_own": own_rate,
        "ratio_to_ceiling_wall": round(args.images / seconds / ceiling_rate, 3),
        "ratio_to_ceiling_own": round(own_rate / ceiling_rate, 3),
        "summary": stdout.splitlines()[0],
        "resume": {**resume, "identical_to_uninterrupted": identical},
        "files_differing": sorted(k for k in first if first.get(k) != second.get(k))[:5],
    }
    md = (
        "# `purifier purify` on a folder\n\n"
        f"{args.images} photographs, {result['size']}, model {args.model}, {result['device']}: "
        f"`{result['command']}`.\n\n"
        "| in-process ceiling images/s | command images/s (wall, load included) "
        "| command's own images/s | ratio to ceiling (wall / own) |\n|---|---|---|---|\n"
        f"| {result['ceiling_images_per_s']} | {result['command_images_per_s_wall']} "
        f"| {own_rate} | {result['ratio_to_ceiling_wall']} / {result['ratio_to_ceiling_own']} |"
        "\n\n"
        f"Interrupted (SIGKILL) after {resume['written_before_kill']} outputs and run again: "
        f"the {args.images} files are "
        f"{'identical' if identical else 'NOT identical'} to an uninterrupted run's, byte for "
        f"byte, with no partial file left. Summary of the resumed run: "
        f"`{resume['resumed_summary']}`.\n"
    )
    write_report(args.out, "batch_bench", result, md)
    if not identical:
        raise SystemExit("resumed outputs differ from the uninterrupted run's")


if __name__ == "__main__":
    main()
