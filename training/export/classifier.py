"""A real downstream model for proxy mode (issue 39): MobileNetV2 with the ImageNet weights
the photo purifier was trained against (training.models.imagenet), as one ONNX graph that
takes images in [0, 1] (FP32 NCHW, any size: ImageNet normalisation and global pooling
are inside) and answers ImageNet logits. The KServe model server of
examples/kserve_classifier serves it; the proxy tests and benchmarks call it upstream.

    python -m training.export.classifier examples/kserve_classifier/model.onnx
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from training.export.graph import OPSET

INPUT, OUTPUT = "input", "logits"
PARITY_TOLERANCE = 1e-4


def export_classifier(path: Path) -> Path:
    """Write MobileNetV2 to `path` (ONNX), checked against torch."""
    import onnxruntime as ort

    from training.models.imagenet import mobilenet_v2_imagenet

    net = mobilenet_v2_imagenet().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.rand(2, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            net,
            (sample,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = net(sample).numpy()
    got = session.run([OUTPUT], {INPUT: sample.numpy()})[0]
    worst = float(np.abs(got - expected).max())
    if worst > PARITY_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise RuntimeError(f"{path}: ONNX differs from torch by {worst:.2e}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    path = export_classifier(parser.parse_args().out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
