"""`python -m training.reports.results_summary [README.md]`: the README's one results table,
rendered from the photo table (results/photos_confident/table.json, `purifier eval`) and
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


def render(table: dict[str, Any], latency: dict[str, Any], model: str = "photo-guided") -> str:
    column = next(iter(table["purifiers"]))
    source, unseen = _rows(table, SOURCE), _rows(table, UNSEEN)
    agree = {k: (100 - source["clean"][k], 100 - unseen["clean"][k]) for k in source["clean"]}
    best_agree = max(CLASSIC, key=lambda k: sum(agree[k]))
    ms = next(
        r["median_ms"]
        for r in latency["rows"]
        if r["model"] == model
        and str(r["size"]) == "224"
        and r.get("file", "model.onnx") == "model.onnx"
    )
    lines = [
        START,
        f"Rendered by `python -m training.reports.results_summary` from `{table['command']}` "
        f"(n = {table['num_images']} confident held-out photo crops; attacks crafted on "
        "MobileNetV2; EfficientNet-Lite0 never seen in training or selection) and "
        f"`{latency['command']}`.",
        "",
        f"| {table['num_images']} photo crops | none | best classic | {model} |",
        "|---|---|---|---|",
        "| clean agreement %, MobileNetV2 / EfficientNet-Lite0 | 100 / 100 | "
        f"{agree[best_agree][0]:.1f} / {agree[best_agree][1]:.1f} ({CLASSIC[best_agree]}) | "
        f"{agree[column][0]:.1f} / {agree[column][1]:.1f} |",
    ]
    for attack in ATTACKS:
        errors = unseen[f"{attack} 16/255"]
        lines.append(
            f"| EfficientNet-Lite0 fooled %, {attack} 16/255 | {errors['none']:.1f} | "
            f"{_best_classic(errors)} | {errors[column]:.1f} |"
        )
    lines += [
        f"| ms per 224x224 image, onnxruntime, {latency['threads']} CPU threads | - | - | "
        f"{ms:.1f} |",
        "",
        "Full table with 95% Wilson intervals, MobileNetV2's rows, BPDA and white-box: "
        "[results/photos_confident/table.md](results/photos_confident/table.md).",
        END,
    ]
    return "\n".join(lines)


def update_readme(readme: Path, root: Path = Path(".")) -> str:
    table = json.loads((root / PHOTO_TABLE).read_text())
    latency = json.loads((root / LATENCY).read_text())
    text = readme.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    updated = text[:start] + render(table, latency) + text[end:]
    readme.write_text(updated)
    return updated


if __name__ == "__main__":
    update_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
