"""`purifier purify INPUT... --out DIR`: purify files, folders (recursively) and globs in
process, with the service's pipeline (service.offline.Purifier), no server.

- Outputs keep each input's path below its folder (a folder argument's own name first);
  `--format same` keeps the input's format and suffix.
- Resumable: an output that already exists is skipped; each output is written to a hidden
  partial file and renamed, so an interrupted run leaves no half-written image behind.
- Never writes over an input; a file that fails is named with the reason and the run
  goes on; the exit status is 1 when any failed.
- Decoding and encoding run in a thread pool beside inference (onnxruntime and Pillow
  release the GIL), a few images ahead.

A stochastic model's noise is keyed by PURIFIER_NOISE_KEY as in the service: set it for
outputs that repeat run to run (a random key is drawn otherwise, and said so).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from service.imaging import DecodedImage, ImageError
from service.offline import Purified, Purifier, PurifierError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
FORMAT_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass
class Summary:
    total: int = 0
    written: int = 0
    skipped: int = 0
    suspicious: int = 0
    linf: list[float] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)

    def lines(self, seconds: float) -> list[str]:
        rate = self.written / seconds if seconds > 0 else 0.0
        mean_linf = sum(self.linf) / len(self.linf) if self.linf else 0.0
        out = [
            f"{self.total} images: {self.written} purified ({rate:.2f} images/s), "
            f"{self.skipped} skipped (output exists), {len(self.failures)} failed; "
            f"mean Linf {mean_linf:.4f}, {self.suspicious} suspicious"
        ]
        out += [f"failed: {path}: {why}" for path, why in self.failures]
        return out


def collect(inputs: list[str], out_dir: Path, fmt: str) -> list[Job]:
    """Every image the arguments name, each with its output path."""
    jobs: list[Job] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            jobs += [Job(p, out_dir / path.resolve().name / p.relative_to(path)) for p in found]
        elif path.exists():
            jobs.append(Job(path, out_dir / path.name))
        else:  # a glob the shell did not expand (quoted, or no shell)
            matches = sorted(glob.glob(raw, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{raw}: no such file, folder or matching glob")
            jobs += [Job(Path(m), out_dir / Path(m).name) for m in matches if Path(m).is_file()]
    jobs = [Job(j.source, retarget(j.target, fmt)) for j in jobs]
    sources = {j.source.resolve() for j in jobs}
    clash = [j for j in jobs if j.target.resolve() in sources]
    if clash:
        raise ValueError(f"{clash[0].target} is an input: choose another --out")
    return jobs


def retarget(target: Path, fmt: str) -> Path:
    return target if fmt == "same" else target.with_suffix(FORMAT_SUFFIXES[fmt])


def write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)


def read_and_decode(purifier: Purifier, path: Path) -> DecodedImage:
    return purifier.decode(path.read_bytes())


def finish_and_write(
    purifier: Purifier, job: Job, decoded: DecodedImage, purified, fmt: str, quality: int | None
) -> Purified:
    result = purifier.finish(decoded, purified, fmt, quality)
    write_atomically(job.target, result.data)
    return result


class Progress:
    """One line on stderr: done / total and images per second."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.tty or self.done == self.total or self.done % 50 == 0:
            end = "\n" if self.done == self.total or not self.tty else ""
            print(
                f"\r{self.done}/{self.total} images, {rate:.2f} images/s", end=end, file=sys.stderr
            )


def decoded_ahead(
    pool: ThreadPoolExecutor, purifier: Purifier, jobs: list[Job], ahead: int
) -> Iterator[tuple[Job, Future]]:
    """The jobs in order, each with its decoding already submitted `ahead` jobs early."""
    pending: deque[tuple[Job, Future]] = deque()
    for job in jobs:
        pending.append((job, pool.submit(read_and_decode, purifier, job.source)))
        if len(pending) > ahead:
            yield pending.popleft()
    yield from pending


def purify_files(
    purifier: Purifier, jobs: list[Job], fmt: str, quality: int | None, workers: int
) -> Summary:
    summary = Summary(total=len(jobs))
    todo = [j for j in jobs if not j.target.exists()]
    summary.skipped = len(jobs) - len(todo)
    progress = Progress(len(todo))
    writes: list[tuple[Job, Future]] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="codec") as pool:
        for job, decoding in decoded_ahead(pool, purifier, todo, 2 * workers):
            try:
                decoded = decoding.result()
                purified = purifier.purify_pixels(decoded.pixels)
            except (ImageError, OSError, ValueError) as err:
                summary.failures.append((job.source, describe(err)))
                progress.step()
                continue
            writes.append(
                (job, pool.submit(finish_and_write, purifier, job, decoded, purified, fmt, quality))
            )
            progress.step()
        for job, writing in writes:
            try:
                result = writing.result()
            except (ImageError, OSError, ValueError) as err:
                summary.failures.append((job.source, describe(err)))
                continue
            summary.written += 1
            summary.linf.append(result.linf)
            summary.suspicious += int(result.suspicious)
    return summary


def describe(err: Exception) -> str:
    message = getattr(err, "message", None) or str(err)
    return f"{type(err).__name__}: {message}"


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        jobs = collect(args.inputs, args.out, args.format)
        purifier = Purifier(args.model, args.repository)
    except (FileNotFoundError, ValueError, PurifierError) as err:
        print(f"purifier purify: {err}", file=sys.stderr)
        return 2
    print(f"{purifier!r}: {len(jobs)} images -> {args.out}", file=sys.stderr)
    summary = purify_files(purifier, jobs, args.format, args.quality, args.workers)
    for line in summary.lines(time.perf_counter() - started):
        print(line)
    return 1 if summary.failures else 0
