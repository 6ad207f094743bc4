"""`purifier eval CONFIG`: run the table a config describes and write its reports."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

from training.config import apply_run_settings, load_config
from training.device import device_label
from training.evaluation.engine import Evaluation
from training.evaluation.report import write_reports
from training.evaluation.targets import load_target, target_parts


def evaluate_from_config(
    path: str | Path, overrides: list[str] | None = None, resume: bool = False
) -> dict[str, Any]:
    """The whole table for a config. `resume`: reuse the cells a stopped run of the same
    specs and weights already measured (training.evaluation.cache)."""
    config = load_config(path, overrides)
    apply_run_settings(config)
    start = time.time()
    ev = Evaluation(config, resume)
    result: dict[str, Any] = {
        # The command that reproduces the table: without --resume, which changes what is
        # measured again, not the numbers (rows count their `cells_resumed`).
        "command": "purifier eval "
        + " ".join(shlex.quote(a) for a in sys.argv[2:] if a != "--resume")
        if sys.argv[1:2] == ["eval"]
        else f"purifier eval {path}",
        "config": str(path),
        "num_images": len(ev.x),
        "data": config["data"],
        "labelled": ev.y is not None,
        "source": config.get("source"),
        "seed": ev.seed,
        "device": device_label(ev.device),
        "defenses": list(ev.defenses),
        "purifiers": list(ev.purifiers),
        "purifier_configs": dict(config["purifiers"]),
        "targets": {},
    }
    examples = None
    out_dir = Path(config["output_dir"])
    for name, entry in config["targets"].items():
        print(f"target {name}", flush=True)
        target_cfg, columns, attacks, attack_overrides = target_parts(entry)
        target = load_target(target_cfg, ev.device)
        rows: list[dict[str, Any]] = []
        result["targets"][name] = {"config": target_cfg, "rows": rows}
        if attack_overrides:
            result["targets"][name]["attack_overrides"] = attack_overrides
        adv = ev.evaluate_target(
            target,
            rows,
            on_row=lambda: write_reports(result, out_dir),
            defenses=columns,
            attacks=attacks,
            target_spec=target_cfg,
            attack_overrides=attack_overrides,
        )
        if examples is None:
            examples = (target, adv)
    # This run's seconds: cells read back by --resume were measured (and timed) earlier.
    result["elapsed_s"] = round(time.time() - start, 1)
    result["cells_resumed"] = sum(
        row.get("cells_resumed", 0) for t in result["targets"].values() for row in t["rows"]
    )
    write_reports(result, out_dir)
    # The figure shows a purifier's output: a table of classic defenses only has none.
    if ev.purifiers and examples is not None and config.get("figure_attack") in examples[1]:
        from training.evaluation.figures import example_figure

        target, adv = examples
        purifier = next(iter(ev.purifiers.values()))
        example_figure(
            ev.x[:8].cpu(),
            adv[config["figure_attack"]],
            purifier.cpu(),
            out_dir / "examples.png",
            title=config["figure_attack"],
        )
    resumed = f", {result['cells_resumed']} cells read back" if result["cells_resumed"] else ""
    print(f"wrote {out_dir}/table.md, table.csv, table.json in {result['elapsed_s']} s{resumed}")
    return result
