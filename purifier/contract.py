"""The model contract between training and the service (docs/model-contract.md), as code.

`training/` writes exported_models/ by it and `service/` reads exported_models/ by it;
neither imports the other. Numpy-free and torch-free, so that `purifier serve` imports it
where neither training nor torch is installed.

Layout (a Triton model repository): NAME/config.pbtxt and NAME/VERSION/{model.onnx,
card.json} and, where the card lists them, the variants model.fp16.onnx (GPUs),
model.cpu.onnx (onnxruntime's CPU-optimised graph) and model.int8.onnx (quantised).
One float32 NCHW input `image` in [0, 1], one output `purified` of the same shape and
range; N, H and W dynamic, C fixed. A stochastic model (its card has `noise`) takes a
second input `noise` of the image's shape.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

INPUT_NAME = "image"
OUTPUT_NAME = "purified"
# A stochastic model's second input: standard-normal noise of the image's shape, scaled in
# the graph by the card's `noise.sigma` (purifier/noise.py says who draws it).
NOISE_INPUT_NAME = "noise"
NOISE_CARD_FIELD = "noise"
MODEL_FILE = "model.onnx"
FP16_MODEL_FILE = "model.fp16.onnx"
CPU_MODEL_FILE = "model.cpu.onnx"
INT8_MODEL_FILE = "model.int8.onnx"
# card.json section -> the variant file it describes ({"file", "sha256", ...}).
VARIANT_FILES = {"fp16": FP16_MODEL_FILE, "cpu_graph": CPU_MODEL_FILE, "int8": INT8_MODEL_FILE}
CARD_FILE = "card.json"
TRITON_CONFIG_FILE = "config.pbtxt"
OPSET = 17

# What every card.json holds (training/export/card.py writes it; `python -m
# purifier.contract_check` and the service's registry read it).
REQUIRED_CARD_FIELDS = (
    "name",
    "version",
    "method",
    "channels",
    "size_multiple",
    "min_size",
    "params",
    "gflops_at_224",
    "sha256",
    "training",
    "evaluation",
)


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks: the card's `sha256` of model.onnx."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
