"""The methods table in the style of ARN's Tables 1-5: defenses as rows, attacks as
columns, built from one `purifier eval` result (table.json) - never typed by hand.

    python -m training.studies.methods_table results/fmnist_methods/table.json \
        --cards exported_models/fmnist-*/1/card.json --readme docs/methods.md

The eval config's `methods_table` names the white-box target, the cross-model target and
the robust classifiers (targets trained with adversarial training, measured undefended):

    methods_table:
      white_box: lenet
      cross_model: resnet_small
      robust_classifiers: {AT-PGD: lenet_at, AT+CAS: lenet_at_cas}

The last row puts the best purifier (lowest mean error over the attacks unseen by every
purifier, non-adaptive, on the white-box target) in front of the last robust classifier.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import yaml

from training.evaluation import format_cell

Row = tuple[str, list[float | str | None]]


def _attacks(block: dict[str, Any]) -> list[str]:
    return [row["attack"] for row in block["rows"]]


def _column(block: dict[str, Any], defense: str) -> list[float | str | None]:
    return [row["error"].get(defense) for row in block["rows"]]


def _measured(block: dict[str, Any], defense: str) -> bool:
    return any(not isinstance(v, str) and v is not None for v in _column(block, defense))


def best_purifier(result: dict[str, Any], block: dict[str, Any]) -> str | None:
    """The purifier with the lowest mean error over rows unseen by every purifier."""
    rows = [r for r in block["rows"] if r["kind"] == "unseen"]
    scores = {
        p: sum(r["error"][p] for r in rows) / len(rows)
        for p in result["purifiers"]
        if rows and all(isinstance(r["error"].get(p), float) for r in rows)
    }
    return min(scores, key=scores.get) if scores else None


def white_box_rows(result: dict[str, Any], spec: dict[str, Any]) -> list[Row]:
    block = result["targets"][spec["white_box"]]
    rows: list[Row] = [(d, _column(block, d)) for d in result["defenses"] if _measured(block, d)]
    robust = spec.get("robust_classifiers", {})
    for label, target in robust.items():
        rows.append((label, _column(result["targets"][target], "none")))
    best = best_purifier(result, block)
    if robust and best is not None:
        label, target = list(robust.items())[-1]
        if _measured(result["targets"][target], best):
            rows.append((f"{best} + {label}", _column(result["targets"][target], best)))
    return rows


def markdown(title: str, attacks: list[str], kinds: list[str], rows: list[Row]) -> str:
    lines = [
        f"#### {title}",
        "",
        "| defense | " + " | ".join(attacks) + " |",
        "|---|" + "---|" * len(attacks),
        "| *(attack kind)* | " + " | ".join(kinds) + " |",
    ]
    for label, cells in rows:
        lines.append(f"| {label} | " + " | ".join(format_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def build(result: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    tables = {}
    wb = result["targets"][spec["white_box"]]
    tables["white_box"] = {
        "target": spec["white_box"],
        "attacks": _attacks(wb),
        "kinds": [r["kind"] for r in wb["rows"]],
        "rows": white_box_rows(result, spec),
    }
    if spec.get("cross_model"):
        cm = result["targets"][spec["cross_model"]]
        tables["cross_model"] = {
            "target": spec["cross_model"],
            "attacks": _attacks(cm),
            "kinds": [r["kind"] for r in cm["rows"]],
            "rows": [(d, _column(cm, d)) for d in result["defenses"] if _measured(cm, d)],
        }
    return tables


def write(result: dict[str, Any], tables: dict[str, Any], out_dir: Path) -> str:
    """Write the built tables as methods.md/json/csv into out_dir; return the markdown."""
    intro = (
        f"Top-1 error (%) on {result['num_images']} Fashion-MNIST test images; "
        f"device: {result['device']}; `{result['command']}`; rendered by "
        "`python -m training.studies.methods_table`. Rows: defenses; columns: attacks "
        "(crafted on each row's classifier; 'seen by X': X trained on that attack)."
    )
    parts = [intro, ""]
    titles = {
        "white_box": "Attacks crafted on {target} (robust classifiers: their own attacks)",
        "cross_model": "Cross-model: attacks crafted on {target}, a model no purifier saw",
    }
    for key, table in tables.items():
        title = titles[key].format(target=table["target"])
        parts.append(markdown(title, table["attacks"], table["kinds"], table["rows"]))
    text = "\n".join(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "methods.md").write_text(text)
    (out_dir / "methods.json").write_text(json.dumps(tables, indent=2))
    with (out_dir / "methods.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        for key, table in tables.items():
            writer.writerow([key, *table["attacks"]])
            for label, cells in table["rows"]:
                writer.writerow([label, *("" if c is None else c for c in cells)])
    return text


def add_to_cards(tables: dict[str, Any], result: dict[str, Any], cards: list[Path]) -> None:
    """Each card carries the methods table it is compared in (beside its own evaluation)."""
    from training.export.card import update_card

    for path in cards:
        update_card(path.parent, methods_table={"command": result["command"], **tables})


README_START, README_END = "<!-- methods-table -->", "<!-- /methods-table -->"


def replace_in_readme(readme: Path, text: str) -> None:
    """The README's methods section between its two markers becomes `text`."""
    content = readme.read_text()
    start, end = content.find(README_START), content.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} section")
    head = content[: start + len(README_START)]
    readme.write_text(f"{head}\n{text}\n{content[end:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="table.json written by `purifier eval`")
    parser.add_argument("--cards", type=Path, nargs="*", default=[], help="card.json files")
    parser.add_argument("--readme", type=Path, help="a README with a methods-table section")
    args = parser.parse_args(argv)
    result = json.loads(args.table.read_text())
    spec = yaml.safe_load(Path(result["config"]).read_text())["methods_table"]
    tables = build(result, spec)
    text = write(result, tables, args.table.parent)
    print(text)
    add_to_cards(tables, result, args.cards)
    if args.readme is not None:
        replace_in_readme(args.readme, text)


if __name__ == "__main__":
    main()
