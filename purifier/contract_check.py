"""`python -m purifier.contract_check exported_models/NAME [VERSION]`: check an exported
model folder against the model contract (purifier.contract; the team's copy of this
check is ../shared/checks/model_contract.py, which it follows finding for finding).

Needs numpy and onnxruntime. Prints each finding; exits 1 when the folder breaks the
contract, 0 when it holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from purifier.contract import (
    CARD_FILE,
    INPUT_NAME,
    MODEL_FILE,
    NOISE_CARD_FIELD,
    NOISE_INPUT_NAME,
    OUTPUT_NAME,
    REQUIRED_CARD_FIELDS,
    TRITON_CONFIG_FILE,
    VARIANT_FILES,
    sha256_of,
)
from purifier.noise import feed


def findings(folder: Path, version: str | None = None) -> list[str]:
    """Every way the folder breaks the contract (empty: it holds)."""
    import numpy as np
    import onnxruntime as ort

    versions = sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        return [f"{folder}: no numbered version folder (Triton layout: {folder}/1/{MODEL_FILE})"]
    vdir = folder / version if version else versions[-1]
    onnx_path, card_path = vdir / MODEL_FILE, vdir / CARD_FILE
    missing = [
        f"missing {p}"
        for p in (onnx_path, card_path, folder / TRITON_CONFIG_FILE)
        if not p.exists()
    ]
    if missing:
        return missing
    problems: list[str] = []
    card = json.loads(card_path.read_text())
    problems += [f"card.json lacks '{k}'" for k in REQUIRED_CARD_FIELDS if k not in card]
    digest = sha256_of(onnx_path)
    if card.get("sha256") != digest:
        problems.append(f"card sha256 {card.get('sha256')} != {MODEL_FILE} {digest}")
    pbtxt = (folder / TRITON_CONFIG_FILE).read_text()
    for needle in (f'name: "{folder.name}"', "onnxruntime", "max_batch_size", "dynamic_batching"):
        if needle not in pbtxt:
            problems.append(f"{TRITON_CONFIG_FILE} lacks {needle!r}")

    problems += variant_findings(vdir, card)
    problems += detection_findings(card)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want = expected_inputs(card)
    if [i.name for i in inputs] != want or [o.name for o in outputs] != [OUTPUT_NAME]:
        problems.append(
            f"inputs {[i.name for i in inputs]} / outputs {[o.name for o in outputs]}: "
            f"want {want} / [{OUTPUT_NAME!r}]"
            + (f" (the card's `{NOISE_CARD_FIELD}` says stochastic)" if len(want) > 1 else "")
        )
        return problems
    problems += noise_findings(card, inputs)
    shape = inputs[0].shape
    if len(shape) != 4 or any(isinstance(d, int) for d in (shape[0], shape[2], shape[3])):
        problems.append(f"input shape {shape}: want [N, C, H, W] with N, H, W dynamic")
    if inputs[0].type != "tensor(float)":
        problems.append(f"input type {inputs[0].type}: want tensor(float)")
    channels = shape[1] if isinstance(shape[1], int) else card.get("channels", 3)
    if card.get("channels") not in (None, channels):
        problems.append(f"card channels {card.get('channels')} != model {channels}")
    multiple = int(card.get("size_multiple", 1))
    rng = np.random.default_rng(0)
    for n, h, w in ((1, 32 * multiple, 48 * multiple), (3, 40 * multiple, 40 * multiple)):
        x = rng.random((n, channels, h, w), dtype=np.float32)
        y = session.run(None, dict(feed(session, x)))[0]
        if y.shape != x.shape:
            problems.append(f"output shape {y.shape} for input {x.shape}")
        elif y.min() < 0 or y.max() > 1 or not np.isfinite(y).all():
            problems.append(f"output outside [0, 1] or not finite: [{y.min():.3f}, {y.max():.3f}]")
    return problems


def expected_inputs(card: dict) -> list[str]:
    """`image`, and `noise` for a stochastic model (its card has a `noise` field)."""
    return [INPUT_NAME, NOISE_INPUT_NAME] if NOISE_CARD_FIELD in card else [INPUT_NAME]


def noise_findings(card: dict, inputs: list) -> list[str]:
    """A stochastic model: `noise` has the image's shape and type, and the card records
    the sigma the graph scales it by."""
    section = card.get(NOISE_CARD_FIELD)
    if section is None:
        return []
    problems = []
    if not isinstance(section, dict) or section.get("input") != NOISE_INPUT_NAME:
        problems.append(f"card {NOISE_CARD_FIELD}.input: want {NOISE_INPUT_NAME!r}")
    sigma = section.get("sigma") if isinstance(section, dict) else None
    if not isinstance(sigma, (int, float)) or not 0 < sigma <= 1:
        problems.append(f"card {NOISE_CARD_FIELD}.sigma {sigma!r}: want a number in (0, 1]")
    image, noise = inputs
    if noise.type != image.type or len(noise.shape) != len(image.shape):
        problems.append(f"noise input {noise.type} {noise.shape}: want the image's {image.shape}")
    return problems


def variant_findings(vdir: Path, card: dict) -> list[str]:
    """Each variant the card lists (fp16, cpu_graph, int8) exists, matches its sha256 and
    keeps model.onnx's float32 `image` -> `purified` interface."""
    import onnxruntime as ort

    problems = []
    for section, default in VARIANT_FILES.items():
        record = card.get(section)
        if not isinstance(record, dict):
            continue
        path = vdir / str(record.get("file", default))
        if not path.exists():
            problems.append(f"card lists {section} but {path} is missing")
            continue
        if record.get("sha256") != sha256_of(path):
            problems.append(f"card {section}.sha256 != {path.name} {sha256_of(path)}")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        io = [(a.name, a.type) for a in (*session.get_inputs(), *session.get_outputs())]
        want = [(name, "tensor(float)") for name in (*expected_inputs(card), OUTPUT_NAME)]
        if io != want:
            problems.append(f"{path.name}: inputs/outputs {io}, want {want}")
    return problems


def detection_findings(card: dict) -> list[str]:
    """A `detection` section names a known statistic and a threshold at each calibrated
    false-positive rate, for model.onnx and any other file it lists."""
    from purifier.suspicion import FALSE_POSITIVE_RATES, STATISTICS

    section = card.get("detection")
    if section is None:
        return []
    problems = []
    if section.get("statistic") not in STATISTICS:
        problems.append(
            f"detection.statistic {section.get('statistic')!r}: not one of {sorted(STATISTICS)}"
        )
    tables = {"thresholds": section.get("thresholds")} | {
        f"thresholds_by_file.{k}": v for k, v in section.get("thresholds_by_file", {}).items()
    }
    for where, thresholds in tables.items():
        if not isinstance(thresholds, dict) or any(
            not isinstance(thresholds.get(r), (int, float)) for r in FALSE_POSITIVE_RATES
        ):
            problems.append(f"detection.{where}: want a number at each of {FALSE_POSITIVE_RATES}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__)
        return 2
    folder = Path(args[0])
    problems = findings(folder, args[1] if len(args) > 1 else None)
    for problem in problems:
        print(problem)
    verdict = "breaks" if problems else "holds"
    print(f"{folder}: {verdict} the model contract ({len(problems)} findings)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
