"""model.cpu.onnx beside an exported model.onnx: onnxruntime's own optimised graph for
its CPU execution provider, saved once at export (ORT's "offline" graph optimisation) so
that a serving session does not redo constant folding and the conv + activation fusions
at every start.

Saved at the extended level, not "all": the "all" level adds NCHWc layout transforms
chosen for the exporting machine's vector width (AVX2 vs AVX-512), which onnxruntime's
documentation says to leave to the serving machine; a session there still applies them.
The graph uses onnxruntime's contrib operators (FusedConv), so the card records the
onnxruntime version that wrote it and the service uses it (PURIFIER_CPU_GRAPH=true) only
under that version and on the CPU, model.onnx otherwise. Parity with model.onnx: within
1e-4. Measured on the exported models (benchmarks/results/model_latency.md): a session
opens 10-15 ms sooner and runs no faster (fmnist-nrp a little slower), so the service
serves model.onnx unless asked.

`purifier export` writes it; for a model exported before that:

    python -m training.export.cpu_graph training/configs/NAME.yaml [--output-root R]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.export.variant import variant_cli, write_variant

CPU_GRAPH_TOLERANCE = 1e-4  # fusions reorder float arithmetic, nothing more


def optimise_for_cpu(fp32_path: Path, out: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])


def add_cpu_graph(version_dir: Path, inputs: list[np.ndarray]) -> dict[str, object]:
    """Write version_dir/model.cpu.onnx, check it, record it in card.json (`cpu_graph`)."""
    import onnxruntime as ort

    return write_variant(
        version_dir,
        "cpu_graph",
        optimise_for_cpu,
        inputs,
        max_abs=CPU_GRAPH_TOLERANCE,
        onnxruntime=ort.__version__,
        level="extended",
    )


if __name__ == "__main__":
    variant_cli(add_cpu_graph, __doc__)
