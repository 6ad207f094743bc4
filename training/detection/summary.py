"""`python -m training.detection.summary DOC RESULT.json ...`: the measured section of
docs/detection.md, rendered from the detection studies' results (so that the page cannot
drift from them; a test checks it is current). Per study: the served statistic's AUROC
and true-positive rate at the served 1% threshold for every attack, the false alarms on
the reported clean images, and the adaptive attacker's rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

START, END = "<!-- detection-results -->", "<!-- /detection-results -->"


def percent_cell(r: dict[str, Any]) -> str:
    """A rate with its 95% Wilson interval: `12.5 (8-18)`."""
    low, high = r["ci95"]
    return f"{r['percent']:.1f} ({low:.0f}-{high:.0f})"


def _caption(result: dict[str, Any]) -> str:
    models = ", ".join(f"`{m}`" for m in result["models"])
    return (
        f"`python -m training.detection {result['config_path']} --card` ({models}; "
        f"n = {result['n_clean']} clean images and as many attacked per row; "
        f"{result['elapsed_s']:.0f} s on the CPU)"
    )


def per_model(result: dict[str, Any]) -> list[str]:
    """One table per model: attack, fooling of the source, AUROC, TPR at 1% and 5%."""
    lines = []
    for name, model in result["models"].items():
        served = model["served"]
        alarms = ", ".join(f"{percent_cell(r)}% at {f}" for f, r in model["false_alarms"].items())
        lines += [
            f"**{name}** (statistic `{served}`; false alarms on the reported clean images: "
            f"{alarms})",
            "",
            "| attack | fools the source % | AUROC | TPR % at 1% FPR | TPR % at 5% FPR |",
            "|---|---|---|---|---|",
        ]
        for attack, per_stat in model["attacks"].items():
            cell, fooled = per_stat[served], result["source_fooled"][attack]
            at = [percent_cell(cell["served"][f]) for f in ("0.01", "0.05")]
            lines.append(
                f"| {attack} | {percent_cell(fooled)} | {cell['auroc']:.3f} | {at[0]} | {at[1]} |"
            )
        lines.append("")
    return lines


def across_models(result: dict[str, Any]) -> list[str]:
    """Many models: AUROC (TPR % at the served 1% threshold), models by attacks."""
    attacks = list(next(iter(result["models"].values()))["attacks"])
    lines = [
        "AUROC (TPR % at the served 1% threshold) of each model's statistic:",
        "",
        "| model (statistic) | " + " | ".join(attacks) + " |",
        "|---" * (len(attacks) + 1) + "|",
    ]
    for name, model in result["models"].items():
        served = model["served"]
        cells = [
            f"{model['attacks'][a][served]['auroc']:.2f} "
            f"({model['attacks'][a][served]['served']['0.01']['percent']:.0f})"
            for a in attacks
        ]
        lines.append(f"| {name} (`{served}`) | " + " | ".join(cells) + " |")
    fooled = [f"{result['source_fooled'][a]['percent']:.0f}" for a in attacks]
    lines += ["| *fools the source, %* | " + " | ".join(fooled) + " |", ""]
    alarms = "; ".join(
        f"{name} {m['false_alarms']['0.01']['percent']:.1f}%"
        for name, m in result["models"].items()
    )
    lines += [f"False alarms at the 1% threshold on the reported clean images: {alarms}.", ""]
    return lines


def adaptive(result: dict[str, Any]) -> list[str]:
    if "adaptive" not in result:
        return []
    a, spec = result["adaptive"], result["adaptive"]["spec"]
    lines = [
        f"Adaptive attacker: white-box PGD-{spec['steps']} at L-inf {spec['eps']} through the "
        "purifier and the source classifier, minus lambda x score / threshold "
        f"(n = {a['n']}; lambda 0 is plain white-box PGD; judged as served, at the 1% "
        "threshold):",
        "",
        "| model | lambda | fooled % | detected % | fooled and not detected % | "
        "mean score / threshold |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in a["models"].items():
        for r in rows:
            cells = [r["fooled"], r["detected"]["0.01"], r["fooled_undetected"]["0.01"]]
            lines.append(
                f"| {name} | {r['weight']:g} | "
                + " | ".join(percent_cell(c) for c in cells)
                + f" | {r['mean_score_over_threshold']:.2f} |"
            )
    return [*lines, ""]


def render(results: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for result in results:
        lines += [_caption(result) + ":", ""]
        lines += per_model(result) if len(result["models"]) == 1 else across_models(result)
        lines += adaptive(result)
    return "\n".join(lines).rstrip() + "\n"


def write_section(doc: Path, result_paths: list[Path]) -> None:
    results = [json.loads(p.read_text()) for p in result_paths]
    text = doc.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{doc} has no {START} ... {END} section")
    doc.write_text(text[: start + len(START)] + "\n" + render(results) + text[end:])


if __name__ == "__main__":
    write_section(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
