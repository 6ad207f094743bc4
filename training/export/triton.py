"""The Triton model configuration written beside each exported model."""

from __future__ import annotations

from purifier.contract import INPUT_NAME, NOISE_INPUT_NAME, OUTPUT_NAME

TRITON_MAX_BATCH = 64


def triton_config(
    name: str, channels: int, max_batch: int = TRITON_MAX_BATCH, stochastic: bool = False
) -> str:
    """Triton model configuration (protobuf text): ONNX Runtime backend, dynamic batching,
    per-image dims [C, -1, -1] (the batch dimension is implicit with max_batch_size > 0).
    A stochastic model has a second input, `noise`, that the Triton user feeds."""
    inputs = [INPUT_NAME, NOISE_INPUT_NAME] if stochastic else [INPUT_NAME]
    blocks = ",\n".join(
        f"""  {{
    name: "{tensor}"
    data_type: TYPE_FP32
    dims: [ {channels}, -1, -1 ]
  }}"""
        for tensor in inputs
    )
    return f"""name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [
{blocks}
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
