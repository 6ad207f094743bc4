"""The table as people read it: markdown with Wilson intervals, CSV and JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def attack_kind(spec: dict[str, Any]) -> str:
    if spec.get("adaptive"):
        return f"adaptive ({spec['adaptive']})"
    seen = spec.get("seen")
    if isinstance(seen, (str, list)):  # seen by some purifiers only
        return "seen by " + (seen if isinstance(seen, str) else ", ".join(seen))
    return "seen" if seen else "unseen"


def format_cell(value: float | str | None, n: int | None = None) -> str:
    """A rate in percent; with n, its 95% Wilson interval beside it."""
    if isinstance(value, str):
        return value
    if value is None:
        return "n/a"
    if n is None:
        return f"{value:.1f}"
    low, high = wilson_interval(round(value * n / 100), n)
    return f"{value:.1f} [{low:.1f}, {high:.1f}]"


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial rate, in percent (Wilson 1927): unlike
    the normal approximation it stays inside [0, 100] and is honest near 0% and 100%."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def markdown_table(result: dict[str, Any]) -> str:
    if result.get("labelled", True):
        what = f"Top-1 error (%) on {result['num_images']} Fashion-MNIST test images"
    else:
        what = (
            f"Fooling rate (%): top-1 differs from the target's clean top-1, on "
            f"{result['num_images']} held-out photo crops (clean row: 100 - clean agreement)"
        )
        if "min_confidence" in result.get("data", {}):
            what += (
                f", those the source and every target classify with top-1 probability >= "
                f"{result['data']['min_confidence']}"
            )
        if result.get("source"):
            what += f"; attacks crafted on {result['source']['arch']}"
    # Photo tables are a few hundred crops: each rate carries its 95% Wilson interval.
    n = None if result.get("labelled", True) else int(result["num_images"])
    if n is not None:
        what += f"; [95% Wilson interval], n = {n}"
    lines = [f"{what}; device: {result['device']}; `{result['command']}`.", ""]
    defenses = result["defenses"]
    for target, block in result["targets"].items():
        lines += [f"### Target: {target}", ""]
        for kind, override in block.get("attack_overrides", {}).items():
            lines += [f"Every `{kind}` row on {target} is crafted with `{override}`.", ""]
        lines.append("| attack | budget | kind | " + " | ".join(defenses) + " |")
        lines.append("|---|---|---|" + "---|" * len(defenses))
        for row in block["rows"]:
            cells = " | ".join(format_cell(row["error"][d], n) for d in defenses)
            lines.append(f"| {row['attack']} | {row['budget']} | {row['kind']} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def write_reports(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.json").write_text(json.dumps(result, indent=2))
    (out_dir / "table.md").write_text(markdown_table(result))
    with (out_dir / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["target", "attack", "budget", "kind", *result["defenses"]])
        for target, block in result["targets"].items():
            for row in block["rows"]:
                writer.writerow(
                    [
                        target,
                        row["attack"],
                        row["budget"],
                        row["kind"],
                        *(
                            "" if row["error"][d] is None else row["error"][d]
                            for d in result["defenses"]
                        ),
                    ]
                )
