"""Image sizes as the benchmarks take them on the command line: "224" (a square) or
"640x480" (width x height)."""

from __future__ import annotations


def dims(size: str | int) -> tuple[int, int]:
    """(width, height)."""
    width, _, height = str(size).partition("x")
    return int(width), int(height or width)


def pixels(size: str | int) -> int:
    width, height = dims(size)
    return width * height


def label(size: str | int) -> str:
    width, height = dims(size)
    return f"{width}x{height}"
