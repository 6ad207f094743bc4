"""exported_models/ is a Triton model repository: every config.pbtxt parses as Triton's
ModelConfig protobuf (tritonclient ships the schema) and matches its ONNX model."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as triton

from tests.conftest import REPO

CONFIGS = sorted((REPO / "exported_models").glob("*/config.pbtxt"))
ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}


def parse(path: Path) -> triton.ModelConfig:
    return text_format.Parse(path.read_text(), triton.ModelConfig())


def onnx_tensors(values) -> list[tuple[str, str, list[int]]]:
    """(name, Triton data type, dims with -1 for dynamic) of ONNX graph inputs/outputs."""
    out = []
    for value in values:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        out.append((value.name, ONNX_TO_TRITON[tensor.elem_type], dims))
    return out


def config_tensors(tensors) -> list[tuple[str, str, list[int]]]:
    return [(t.name, triton.DataType.Name(t.data_type), list(t.dims)) for t in tensors]


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_config_parses_and_matches_every_model_version(path: Path):
    config = parse(path)
    assert config.name == path.parent.name
    assert config.backend == "onnxruntime"
    assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
    versions = [p for p in path.parent.iterdir() if p.is_dir() and p.name.isdigit()]
    assert versions
    for version in versions:
        model = onnx.load(str(version / "model.onnx"), load_external_data=False)
        # With max_batch_size > 0, Triton's dims leave out the (dynamic) batch dimension.
        for ours, theirs in (
            (config_tensors(config.input), onnx_tensors(model.graph.input)),
            (config_tensors(config.output), onnx_tensors(model.graph.output)),
        ):
            assert [(n, t, [-1, *d]) for n, t, d in ours] == theirs


def test_the_parser_rejects_what_triton_would():
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\nmax_batch_sise: 4\n', triton.ModelConfig())
    with pytest.raises(text_format.ParseError):
        text_format.Parse(
            'input [ { name: "image" data_type: TYPE_FLOAT32 } ]', triton.ModelConfig()
        )
