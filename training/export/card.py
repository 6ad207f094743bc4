"""card.json: the one place that writes it. `build_card` makes it at export from the
config, the graph and the measured evaluation; `update_card` adds a section later
(the half-precision model's record, the methods table it is compared in)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from torch import nn

from purifier.contract import CARD_FILE, NOISE_CARD_FIELD, NOISE_INPUT_NAME, OPSET, sha256_of
from training.export.graph import count_gflops, is_stochastic
from training.export.receptive_field import recommended_overlap


def served_name(config: dict[str, Any]) -> str:
    """The model name an export is served under: `export.name`, else the config's own, so
    that a later stage or size can be a new version of a served model (Triton's layout:
    the service serves a model's highest version)."""
    return str(config.get("export", {}).get("name", config["name"]))


def export_dir(config: dict[str, Any], output_root: str | Path, version: int) -> Path:
    """Where this config's export of that version lives: OUTPUT_ROOT/NAME/VERSION."""
    return Path(output_root) / served_name(config) / str(version)


def write_card(version_dir: Path, card: dict[str, Any]) -> Path:
    path = version_dir / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def update_card(version_dir: Path, **sections: Any) -> dict[str, Any]:
    """Set these top-level sections of an exported model's card; the rest stays."""
    card = json.loads((version_dir / CARD_FILE).read_text())
    card.update(sections)
    write_card(version_dir, card)
    return card


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def build_card(
    config: dict[str, Any],
    net: nn.Module,
    onnx_path: Path,
    version: int,
    parity: float,
    evaluation: dict[str, Any] | None,
    receptive_field: int | None = None,
) -> dict[str, Any]:
    spec, ex = config["purifier"], config.get("export", {})
    channels = int(spec.get("in_channels", 3))
    summary_path = Path(config["weights"]).with_suffix(".json")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return {
        "name": served_name(config),
        "version": version,
        "method": config["method"],
        "channels": channels,
        "size_multiple": int(getattr(net, "size_multiple", 1)),
        "min_size": int(ex.get("min_size", 8)),
        "recommended_tile": int(ex.get("recommended_tile", 256)),
        **(
            {
                "receptive_field_px": receptive_field,
                "tile_overlap": recommended_overlap(receptive_field),
            }
            if receptive_field is not None
            else {}
        ),
        "params": sum(p.numel() for p in net.parameters()),
        "gflops_at_224": count_gflops(net, channels),
        "sha256": sha256_of(onnx_path),
        "opset": OPSET,
        "parity_max_abs_diff": parity,
        **noise_section(net),
        "architecture": spec,
        "training": {
            "dataset": ex.get("dataset", config["data"].get("dataset")),
            **training_inputs(config),
            "seed": config.get("seed", 0),
            "config": config.get("_path"),
            "loss": config.get("loss"),
            "train": {k: v for k, v in config["train"].items() if k != "max_minutes"},
            "run": summary,
            "git_commit": git_commit(),
        },
        "evaluation": evaluation_summary(evaluation, purifier_column(evaluation, config))
        if evaluation
        else None,
    }


def noise_section(net: nn.Module) -> dict[str, Any]:
    """A stochastic model's `noise` card field: the input's name and the sigma the graph
    scales it by (and the level its denoiser is told), in [0, 1] units and in /255."""
    if not is_stochastic(net):
        return {}
    sigma, level = float(net.sigma), float(getattr(net, "level", net.sigma))
    return {
        NOISE_CARD_FIELD: {
            "input": NOISE_INPUT_NAME,
            "sigma": sigma,
            "sigma_255": round(255 * sigma, 3),
            "denoiser_level_255": round(255 * level, 3),
            "distribution": "standard normal, the image's shape",
        }
    }


def training_inputs(config: dict[str, Any]) -> dict[str, Any]:
    """What the purifier learnt from: NRP's self-supervised SSP in a feature extractor's
    space, or ARN's seen attacks crafted on a target classifier."""
    if config["method"] == "arn":
        return {
            "target": config["target"]["model"],
            "attacks": [a.get("name", a["kind"]) for a in config["seen_attacks"]],
            "seen_attacks": config["seen_attacks"],
            "include_natural": config.get("include_natural", True),
        }
    if config["method"] in ("guided", "prior"):
        bank = config["bank"]
        return {
            "feature_extractor": {
                "model": config["guide"]["model"],
                "layers": config["guide"]["layers"],
            },
            "attacks": sorted(bank["families"]),
            "eps": [e / 255 for e in bank["eps_255"]],
            "steps": sorted({f.get("steps", 1) for f in bank["families"].values()}),
        }
    fe = config["feature_extractor"]
    cafd = fe["layer"] == "class_activation"
    return {
        "feature_extractor": {"model": fe["model"], "layer": fe["layer"]},
        "attacks": ["CAFA (class activation features)" if cafd else "SSP (NRP Algorithm 1)"],
        "eps": config["ssp"]["eps"],
        "steps": config["ssp"]["steps"],
    }


def purifier_column(result: dict[str, Any], config: dict[str, Any]) -> str:
    """This purifier's column in a table of several: the one evaluated from this config."""
    own = Path(config.get("_path") or "").resolve()
    for column, path in result.get("purifier_configs", {}).items():
        if Path(path).resolve() == own:
            return column
    return next(iter(result["purifiers"]), config["name"])


def evaluation_summary(result: dict[str, Any], column: str) -> dict[str, Any]:
    """The measured table, as `purifier eval` wrote it, with the command that produced it."""
    return {
        "command": result["command"],
        "num_images": result["num_images"],
        "device": result["device"],
        "metric": "top-1 error (%)",
        "defenses": result["defenses"],
        "purifier_column": column,
        "targets": {
            name: [
                {
                    "attack": r["attack"],
                    "budget": r["budget"],
                    "kind": r["kind"],
                    **({"crafted_with": r["crafted_with"]} if "crafted_with" in r else {}),
                    "error": r["error"],
                }
                for r in block["rows"]
            ]
            for name, block in result["targets"].items()
        },
    }
