"""`purifier export CONFIG`: ONNX per the model contract (DESIGN.md), a parity check
against torch, the Triton config, and card.json written from the measured evaluation.

Layout written: OUTPUT_ROOT/NAME/config.pbtxt and OUTPUT_ROOT/NAME/VERSION/{model.onnx,
model.fp16.onnx, card.json}. Input `image` and output `purified`: float32 NCHW in [0, 1],
N/H/W dynamic (also for the half-precision model: training.fp16).
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from purifier.contract import (
    CARD_FILE,
    INPUT_NAME,
    MODEL_FILE,
    OPSET,
    OUTPUT_NAME,
    TRITON_CONFIG_FILE,
    sha256_of,
)
from training.config import load_config
from training.data.registry import load_dataset
from training.fp16 import add_fp16
from training.models import build_model, load_weights
from training.receptive_field import effective_radius, recommended_overlap

PARITY_TOLERANCE = 1e-4
TRITON_MAX_BATCH = 64


class ExportError(RuntimeError):
    """The exported graph does not behave like the torch model."""


def export_onnx(net: nn.Module, path: Path, channels: int, sample_hw: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(1, channels, *sample_hw)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it handles
        # dynamic H/W of a plain conv net without onnxscript rewrites; parity is checked.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            net.eval(),
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def check_parity(net: nn.Module, onnx_path: Path, inputs: list[torch.Tensor]) -> float:
    """Max |onnxruntime - torch| over the inputs; raises ExportError past the tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(
                f"ONNX output {got.shape} != torch {expected.shape} for {tuple(x.shape)}"
            )
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        if diff > PARITY_TOLERANCE:
            raise ExportError(
                f"parity failed for input {tuple(x.shape)}: max abs diff {diff:.2e} > "
                f"{PARITY_TOLERANCE:.0e} ({onnx_path})"
            )
    return worst


def count_gflops(net: nn.Module, channels: int, size: int = 224) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, channels, size, size))
    return round(counter.get_total_flops() / 1e9, 3)


def triton_config(name: str, channels: int, max_batch: int = TRITON_MAX_BATCH) -> str:
    """Triton model configuration (protobuf text): ONNX Runtime backend, dynamic batching,
    per-image dims [C, -1, -1] (the batch dimension is implicit with max_batch_size > 0)."""
    return f"""name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {channels}, -1, -1 ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {channels}, -1, -1 ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    count: 1
    kind: KIND_AUTO
  }}
]
"""


def parity_inputs(channels: int, real: torch.Tensor | None, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs at two sizes, and real images at two sizes (native and upscaled)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = [
        torch.rand(2, channels, 28, 28, generator=gen),
        torch.rand(3, channels, 45, 61, generator=gen),
    ]
    if real is not None:
        inputs.append(real)
        inputs.append(nn.functional.interpolate(real, scale_factor=2, mode="bilinear"))
    return inputs


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
        "name": config["name"],
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
    if config["method"] == "guided":
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


def export_from_config(
    path: str | Path,
    evaluation: str | Path | None = None,
    output_root: str | Path = "exported_models",
    version: int = 1,
) -> Path:
    config = load_config(path)
    spec = config["purifier"]
    channels = int(spec.get("in_channels", 3))
    net = load_weights(build_model(spec), config["weights"]).eval()
    model_dir = Path(output_root) / config["name"]
    version_dir = model_dir / str(version)
    onnx_path = export_onnx(net, version_dir / MODEL_FILE, channels, (28, 28))

    real = real_images(config)
    inputs = parity_inputs(channels, real)
    parity = check_parity(net, onnx_path, inputs)

    result = json.loads(Path(evaluation).read_text()) if evaluation else None
    radius = measure_receptive_field(onnx_path, real, inputs)
    card = build_card(config, net, onnx_path, version, parity, result, radius)
    (version_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (model_dir / TRITON_CONFIG_FILE).write_text(triton_config(config["name"], channels))
    fp16 = add_fp16(version_dir, [x.numpy() for x in inputs])
    print(
        f"exported {onnx_path} (parity {parity:.1e}, receptive field {radius} px, "
        f"{card['params']} params, "
        f"{card['gflops_at_224']} GFLOPs at 224) and {fp16['file']} "
        f"(within {fp16['parity_max_abs_diff_vs_fp32']:.1e} of float32)"
    )
    return version_dir


def measure_receptive_field(
    onnx_path: Path, real: torch.Tensor | None, fallback: list[torch.Tensor]
) -> int:
    """training.receptive_field's effective radius of the exported graph, on a mosaic of
    real test images (the parity inputs when the dataset is missing)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = real if real is not None else fallback[0]
    return effective_radius(session, images.numpy().astype(np.float32))


def real_images(config: dict[str, Any]) -> torch.Tensor | None:
    """Eight test images of the purifier's dataset for the parity checks, if installed."""
    try:
        return load_dataset(config["data"], "test")[0][:8]
    except FileNotFoundError:
        print("no dataset found: parity checked on random inputs only")
        return None
