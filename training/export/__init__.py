"""`purifier export CONFIG`: ONNX per the model contract (docs/model-contract.md), a parity check
against torch, the Triton config, and card.json written from the measured evaluation.

Layout written: OUTPUT_ROOT/NAME/config.pbtxt and OUTPUT_ROOT/NAME/VERSION/{model.onnx,
model.fp16.onnx, model.cpu.onnx, card.json}, and model.int8.onnx where the config's
`export.int8` is true (training.export.int8). Input `image` and output `purified`:
float32 NCHW in [0, 1], N/H/W dynamic, in every variant (training.export.variant).
"""

from __future__ import annotations

import json
from pathlib import Path

from purifier.contract import MODEL_FILE, TRITON_CONFIG_FILE
from training.config import load_config
from training.export.card import build_card, export_dir, served_name, write_card
from training.export.cpu_graph import add_cpu_graph
from training.export.fp16 import add_fp16
from training.export.graph import (
    PARITY_TOLERANCE,
    ExportError,
    check_parity,
    count_gflops,
    export_onnx,
    is_stochastic,
    parity_inputs,
    real_images,
)
from training.export.receptive_field import measure_receptive_field
from training.export.triton import triton_config
from training.models import build_model, load_weights

__all__ = [
    "PARITY_TOLERANCE",
    "ExportError",
    "check_parity",
    "count_gflops",
    "export_from_config",
    "export_onnx",
]


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
    version_dir = export_dir(config, output_root, version)
    model_dir = version_dir.parent
    onnx_path = export_onnx(net, version_dir / MODEL_FILE, channels, (28, 28))

    real = real_images(config)
    inputs = parity_inputs(channels, real)
    parity = check_parity(net, onnx_path, inputs)

    result = json.loads(Path(evaluation).read_text()) if evaluation else None
    radius = measure_receptive_field(onnx_path, real, inputs)
    card = build_card(config, net, onnx_path, version, parity, result, radius)
    write_card(version_dir, card)
    (model_dir / TRITON_CONFIG_FILE).write_text(
        triton_config(served_name(config), channels, stochastic=is_stochastic(net))
    )
    arrays = [x.numpy() for x in inputs]
    variants = [add_fp16(version_dir, arrays), add_cpu_graph(version_dir, arrays)]
    if config.get("export", {}).get("int8"):
        from training.export.int8 import add_int8

        variants.append(add_int8(version_dir, arrays, config))
    from training.export.detection import add_detection  # imports the evaluation stack

    detection = add_detection(version_dir, config)  # after the variants it calibrates
    print(
        f"exported {onnx_path} (parity {parity:.1e}, receptive field {radius} px, "
        f"{card['params']} params, {card['gflops_at_224']} GFLOPs at 224) and "
        + ", ".join(
            f"{v['file']} (within {v['parity_max_abs_diff_vs_fp32']:.1e} of float32)"
            for v in variants
        )
        + (f"; detection thresholds {detection['thresholds']}" if detection else "")
    )
    return version_dir
