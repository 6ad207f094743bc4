"""`python -m training.reports.results_summary [README.md]`: the README's one results table,
rendered from the photo table (results/photos_confident/table.json, `purifier eval`), the
larger size's column measured on the same crops (results/photos_large/table.json) and
the per-model latency benchmark (benchmarks/results/model_latency.json), between the
README's `<!-- results-summary -->` markers - so that no number in it is typed by hand
(issue 26; a test checks it is current).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PHOTO_TABLE = Path("results/photos_confident/table.json")
# More purifier columns, each from its own table on the same crops and adversaries.
MORE_TABLES = {"photo-guided-large": Path("results/photos_large/table.json")}
LATENCY = Path("benchmarks/results/model_latency.json")
START, END = "<!-- results-summary -->", "<!-- /results-summary -->"
CLASSIC = {"jpeg75": "JPEG 75", "bitdepth4": "bit depth 4", "median3": "median 3x3", "tv": "TV"}
UNSEEN = "efficientnet_lite0"
SOURCE = "mobilenet_v2"
ATTACKS = ("FGSM", "PGD-10", "MI-FGSM", "DIM", "TI-DIM", "SSP")


def _rows(table: dict[str, Any], target: str) -> dict[str, dict[str, float]]:
    return {row["attack"]: row["error"] for row in table["targets"][target]["rows"]}


def _best_classic(errors: dict[str, float], lower: bool = True) -> str:
    name = (min if lower else max)(CLASSIC, key=lambda k: errors[k])
    return f"{errors[name]:.1f} ({CLASSIC[name]})"


def _purifier_column(table: dict[str, Any]) -> dict[str, Any]:
    """A table's first purifier column: clean agreement and EfficientNet-Lite0's rows."""
    column = next(iter(table["purifiers"]))
    source, unseen = _rows(table, SOURCE), _rows(table, UNSEEN)
    return {
        "agree": (100 - source["clean"][column], 100 - unseen["clean"][column]),
        "fooled": {a: unseen[f"{a} 16/255"][column] for a in ATTACKS},
    }


def _median_ms(latency: dict[str, Any], model: str) -> float:
    return next(
        r["median_ms"]
        for r in latency["rows"]
        if r["model"] == model
        and str(r["size"]) == "224"
        and r.get("file", "model.onnx") == "model.onnx"
    )


def render(
    table: dict[str, Any],
    latency: dict[str, Any],
    model: str = "photo-guided",
    more: dict[str, dict[str, Any]] | None = None,
) -> str:
    """`table`'s none, best classic and `model` columns, then one column per entry of
    `more` (model name -> its table on the same crops)."""
    source, unseen = _rows(table, SOURCE), _rows(table, UNSEEN)
    agree = {k: (100 - source["clean"][k], 100 - unseen["clean"][k]) for k in source["clean"]}
    best_agree = max(CLASSIC, key=lambda k: sum(agree[k]))
    columns = {model: _purifier_column(table)}
    columns.update({name: _purifier_column(t) for name, t in (more or {}).items()})
    commands = [f"`{table['command']}`"] + [f"`{t['command']}`" for t in (more or {}).values()]
    # Each table's page beside its table.json: the same paths update_readme reads.
    pages = [PHOTO_TABLE.with_suffix(".md")] + [
        MORE_TABLES[n].with_suffix(".md") for n in more or {}
    ]
    lines = [
        START,
        f"Rendered by `python -m training.reports.results_summary` from {', '.join(commands)} "
        f"(n = {table['num_images']} confident held-out photo crops; attacks crafted on "
        "MobileNetV2; EfficientNet-Lite0 never seen in training or selection) and "
        f"`{latency['command']}`.",
        "",
        f"| {table['num_images']} photo crops | none | best classic | "
        + " | ".join(columns)
        + " |",
        "|---|---|---|" + "---|" * len(columns),
        "| clean agreement %, MobileNetV2 / EfficientNet-Lite0 | 100 / 100 | "
        f"{agree[best_agree][0]:.1f} / {agree[best_agree][1]:.1f} ({CLASSIC[best_agree]}) | "
        + " | ".join(f"{c['agree'][0]:.1f} / {c['agree'][1]:.1f}" for c in columns.values())
        + " |",
    ]
    for attack in ATTACKS:
        errors = unseen[f"{attack} 16/255"]
        lines.append(
            f"| EfficientNet-Lite0 fooled %, {attack} 16/255 | {errors['none']:.1f} | "
            f"{_best_classic(errors)} | "
            + " | ".join(f"{c['fooled'][attack]:.1f}" for c in columns.values())
            + " |"
        )
    lines += [
        f"| ms per 224x224 image, onnxruntime, {latency['threads']} CPU threads | - | - | "
        + " | ".join(f"{_median_ms(latency, name):.1f}" for name in columns)
        + " |",
        "",
        "Full tables with 95% Wilson intervals, MobileNetV2's rows, BPDA and white-box: "
        + ", ".join(f"[{page}]({page})" for page in pages)
        + ".",
        END,
    ]
    return "\n".join(lines)


def more_tables(root: Path = Path(".")) -> dict[str, dict[str, Any]]:
    return {name: json.loads((root / path).read_text()) for name, path in MORE_TABLES.items()}


def update_readme(readme: Path, root: Path = Path(".")) -> str:
    table = json.loads((root / PHOTO_TABLE).read_text())
    latency = json.loads((root / LATENCY).read_text())
    text = readme.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    updated = text[:start] + render(table, latency, more=more_tables(root)) + text[end:]
    readme.write_text(updated)
    return updated


if __name__ == "__main__":
    update_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
