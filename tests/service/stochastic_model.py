"""A small stochastic model repository for the keyed-noise tests, built with onnx's own
helpers (no torch): noise-then-denoise at its simplest, y = clip(blur(x + sigma * noise)),
a 5x5 box blur standing in for the denoiser. It follows the model contract (two inputs,
card `noise` field, sha256, Triton config), so the service loads it like any export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

NAME = "tiny-noisy"
SIGMA = 24 / 255
TILE = 64  # small, so that a 150x130 photo is cut into several tiles
OVERLAP = 16  # the blur's reach is 2 px: 16 leaves room


def build_graph(channels: int = 3) -> onnx.ModelProto:
    dims = ["N", channels, "H", "W"]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)
    noise = helper.make_tensor_value_info("noise", TensorProto.FLOAT, dims)
    out = helper.make_tensor_value_info("purified", TensorProto.FLOAT, dims)
    consts = [
        helper.make_tensor("sigma", TensorProto.FLOAT, [], [SIGMA]),
        helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("hi", TensorProto.FLOAT, [], [1.0]),
    ]
    nodes = [
        helper.make_node("Mul", ["noise", "sigma"], ["scaled"]),
        helper.make_node("Add", ["image", "scaled"], ["noisy"]),
        helper.make_node(
            "AveragePool",
            ["noisy"],
            ["blurred"],
            kernel_shape=[5, 5],
            pads=[2, 2, 2, 2],
            count_include_pad=0,
        ),
        helper.make_node("Clip", ["blurred", "lo", "hi"], ["purified"]),
    ]
    graph = helper.make_graph(nodes, "tiny_noisy", [image, noise], [out], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_repository(root: Path) -> Path:
    """ROOT/NAME/{config.pbtxt, 1/model.onnx, 1/card.json}; returns ROOT."""
    version = root / NAME / "1"
    version.mkdir(parents=True, exist_ok=True)
    onnx_path = version / "model.onnx"
    onnx.save(build_graph(), onnx_path)
    card = {
        "name": NAME,
        "version": 1,
        "method": "noise then a 5x5 box blur (test model)",
        "channels": 3,
        "size_multiple": 1,
        "min_size": 8,
        "recommended_tile": TILE,
        "receptive_field_px": 2,
        "tile_overlap": OVERLAP,
        "params": 0,
        "gflops_at_224": 0.0,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "noise": {"input": "noise", "sigma": SIGMA, "sigma_255": 24.0},
        "training": {"dataset": None},
        "evaluation": None,
    }
    (version / "card.json").write_text(json.dumps(card, indent=2))
    tensors = ",\n".join(
        f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] }}' for n in ("image", "noise")
    )
    (root / NAME / "config.pbtxt").write_text(
        f'name: "{NAME}"\nbackend: "onnxruntime"\nmax_batch_size: 8\ninput [\n{tensors}\n]\n'
        'output [\n  { name: "purified" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] }\n]\n'
        "dynamic_batching { }\n"
    )
    return root


def reference(image: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The graph's output for (N, C, H, W) float32 inputs, run whole by onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(build_graph().SerializeToString())
    return session.run(None, {"image": image, "noise": noise})[0]
