import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import REPO, write_yaml
from training.config import load_config
from training.export import ExportError, check_parity, export_from_config, export_onnx
from training.models import build_model


@pytest.fixture
def exported(nrp_config, tiny_models, tmp_path) -> Path:
    nrp_config["weights"] = str(tiny_models["nrp"])
    config_path = write_yaml(tmp_path / "tiny-nrp.yaml", nrp_config)
    evaluation = {
        "command": "purifier eval tiny.yaml",
        "num_images": 32,
        "device": "cpu",
        "defenses": ["none", "nrp"],
        "purifiers": ["nrp"],
        "targets": {
            "lenet": {
                "rows": [
                    {
                        "attack": "clean",
                        "budget": "-",
                        "kind": "clean",
                        "error": {"none": 10.0, "nrp": 11.0},
                    },
                    {
                        "attack": "PGD-40",
                        "budget": "Linf 0.1",
                        "kind": "unseen",
                        "crafted_with": {"surrogate": "cas_heads"},
                        "error": {"none": 50.0, "nrp": 30.0},
                    },
                ]
            }
        },
    }
    table = tmp_path / "table.json"
    table.write_text(json.dumps(evaluation))
    return export_from_config(config_path, evaluation=table, output_root=tmp_path / "models")


def test_export_writes_the_triton_layout_and_card(exported):
    model_dir = exported.parent
    assert (model_dir / "config.pbtxt").exists() and (exported / "model.onnx").exists()
    card = json.loads((exported / "card.json").read_text())
    assert card["name"] == "tiny-nrp" and card["version"] == 1 and card["channels"] == 1
    assert card["params"] == sum(
        p.numel()
        for p in build_model(
            {"arch": "nrp", "in_channels": 1, "nf": 8, "gc": 4, "num_basic_blocks": 1}
        ).parameters()
    )
    assert card["gflops_at_224"] > 0 and card["parity_max_abs_diff"] <= 1e-4
    clean, pgd = card["evaluation"]["targets"]["lenet"]
    assert clean["error"] == {"none": 10.0, "nrp": 11.0} and "crafted_with" not in clean
    assert pgd["crafted_with"] == {"surrogate": "cas_heads"}  # which PGD ran
    assert card["evaluation"]["command"] == "purifier eval tiny.yaml"
    assert card["training"]["eps"] == 0.1 and card["training"]["run"] is None


def test_exported_model_has_dynamic_batch_height_width(exported):
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "purified")
    assert inp.shape[1] == 1 and all(isinstance(d, str) for d in (inp.shape[0], *inp.shape[2:]))
    y = session.run(None, {"image": np.random.rand(5, 1, 33, 71).astype(np.float32)})[0]
    assert y.shape == (5, 1, 33, 71) and y.min() >= 0 and y.max() <= 1


def test_export_holds_the_model_contract(exported):
    run = subprocess.run(
        [sys.executable, "-m", "purifier.contract_check", str(exported.parent)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_contract_check_finds_a_broken_folder(exported, tmp_path):
    import shutil

    from purifier.contract_check import findings

    broken = tmp_path / exported.parent.name
    shutil.copytree(exported.parent, broken)
    card = json.loads((broken / "1" / "card.json").read_text())
    del card["evaluation"]
    card["sha256"] = "0" * 64  # not the model's
    (broken / "1" / "card.json").write_text(json.dumps(card))
    found = findings(broken)
    assert any("lacks 'evaluation'" in f for f in found)
    assert any("sha256" in f for f in found)


def test_parity_check_fails_loudly_on_a_mismatch(tmp_path):
    net = build_model({"arch": "nrp", "in_channels": 1, "nf": 8, "gc": 4, "num_basic_blocks": 1})
    path = export_onnx(net, tmp_path / "model.onnx", 1, (28, 28))
    x = [torch.rand(2, 1, 28, 28)]
    assert check_parity(net, path, x) <= 1e-4
    with torch.no_grad():
        net.conv_last.bias += 0.01  # the torch model now differs from the exported graph
    with pytest.raises(ExportError, match="parity failed"):
        check_parity(net, path, x)


def test_serving_sized_purifier_exports_with_parity_at_odd_sizes(tmp_path):
    """nrp_unet pads to a multiple of 4 inside the graph: the ONNX model must agree with
    torch at sizes that need the padding, and keep the dynamic shapes."""
    torch.manual_seed(0)
    net = build_model({"arch": "nrp_unet", "nf": 4, "width": 8, "gc": 4, "blocks": 1}).eval()
    path = export_onnx(net, tmp_path / "model.onnx", channels=3, sample_hw=(32, 32))
    inputs = [torch.rand(1, 3, 37, 61), torch.rand(2, 3, 64, 48), torch.rand(1, 3, 5, 3)]
    assert check_parity(net, path, inputs) <= 1e-4


def test_export_writes_a_half_precision_model_with_the_float32_contract(exported):
    card = json.loads((exported / "card.json").read_text())
    fp16_path = exported / card["fp16"]["file"]
    assert fp16_path.name == "model.fp16.onnx"
    assert card["fp16"]["sha256"] == hashlib.sha256(fp16_path.read_bytes()).hexdigest()
    assert 0 < card["fp16"]["parity_max_abs_diff_vs_fp32"] <= 1 / 255
    model = onnx.load(fp16_path)
    floats = {i.name: i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in floats.values()  # the weights are half precision
    assert onnx.TensorProto.FLOAT not in {
        t for n, t in floats.items() if "weight" in n
    }  # every conv weight converted
    session = ort.InferenceSession(str(fp16_path), providers=["CPUExecutionProvider"])
    (image,), (purified,) = session.get_inputs(), session.get_outputs()
    assert (image.name, image.type, purified.name, purified.type) == (
        "image",
        "tensor(float)",
        "purified",
        "tensor(float)",
    )
    x = np.random.default_rng(0).random((3, 1, 33, 47), dtype=np.float32)
    assert session.run(None, {"image": x})[0].shape == x.shape  # dynamic N, H, W kept


def test_a_half_precision_model_past_the_tolerance_is_not_written(exported, monkeypatch):
    import training.export.fp16 as fp16

    (exported / "model.fp16.onnx").unlink()
    monkeypatch.setattr(fp16, "FP16_TOLERANCE", 1e-9)
    with pytest.raises(fp16.FP16ParityError, match="from float32"):
        fp16.add_fp16(exported, [np.random.default_rng(0).random((2, 1, 28, 28), np.float32)])
    assert not list(exported.glob("model.fp16.onnx*"))


def test_export_writes_onnxruntime_s_cpu_graph_for_the_serving_version(exported):
    card = json.loads((exported / "card.json").read_text())
    record = card["cpu_graph"]
    path = exported / record["file"]
    assert path.name == "model.cpu.onnx"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["onnxruntime"] == ort.__version__ and record["level"] == "extended"
    assert record["parity_max_abs_diff_vs_fp32"] <= 1e-4
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert "FusedConv" in ops  # onnxruntime's fusions, not a copy of model.onnx
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 1, 36, 52), dtype=np.float32)
    assert session.run(None, {"image": x})[0].shape == x.shape  # dynamic N, H, W kept


def test_the_int8_variant_is_quantised_calibrated_and_recorded(exported, nrp_config):
    from training.export.int8 import add_int8

    nrp_config["data"]["train_limit"] = 64
    inputs = [np.random.default_rng(0).random((2, 1, 28, 28), np.float32)]
    record = add_int8(exported, inputs, nrp_config)
    path = exported / "model.int8.onnx"
    card = json.loads((exported / "card.json").read_text())
    assert card["int8"] == record and record["file"] == path.name
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["calibration"]["split"] == "train"
    assert 0 < record["parity_mean_abs_diff_vs_fp32"] <= 2 / 255
    model = onnx.load(path)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,), (purified,) = session.get_inputs(), session.get_outputs()
    assert (image.type, purified.type) == ("tensor(float)", "tensor(float)")


def test_an_int8_model_past_its_tolerance_is_not_written(exported, nrp_config, monkeypatch):
    import training.export.int8 as int8

    nrp_config["data"]["train_limit"] = 16
    monkeypatch.setattr(int8, "CALIBRATION", {**int8.CALIBRATION, "crops": 16})
    monkeypatch.setattr(int8, "INT8_MEAN_TOLERANCE", 1e-9)
    with pytest.raises(int8.VariantParityError, match="mean abs diff"):
        int8.add_int8(
            exported, [np.random.default_rng(0).random((1, 1, 28, 28), np.float32)], nrp_config
        )
    assert not list(exported.glob("model.int8.onnx*"))
    assert "int8" not in json.loads((exported / "card.json").read_text())


def test_the_int8_summary_puts_float32_beside_int8():
    from training.export.int8 import int8_summary

    rows = [
        {"attack": "clean", "error": {"none": 0.0, "fp32": 2.0, "int8": 3.5}},
        {"attack": "PGD-10 16/255", "error": {"none": 100.0, "fp32": 60.0, "int8": 64.0}},
    ]
    result = {
        "command": "purifier eval x.yaml",
        "num_images": 200,
        "data": {},
        "device": "cpu",
        "targets": {"mobilenet_v2": {"rows": rows}},
    }
    summary = int8_summary(result)["targets"]["mobilenet_v2"]
    assert summary["clean_agreement"] == {"fp32": 98.0, "int8": 96.5}
    assert summary["fooling"]["PGD-10 16/255"] == {"none": 100.0, "fp32": 60.0, "int8": 64.0}


def test_an_export_is_served_under_export_name_else_the_config_name(tmp_path):
    from training.export.card import export_dir, served_name

    plain = {"name": "photo-guided", "export": {"int8": True}}
    assert served_name(plain) == "photo-guided"
    assert export_dir(plain, tmp_path, 1) == tmp_path / "photo-guided" / "1"
    staged = {"name": "photo-guided-large-stage2", "export": {"name": "photo-guided-large"}}
    assert export_dir(staged, tmp_path, 2) == tmp_path / "photo-guided-large" / "2"
    config = load_config(REPO / "training" / "configs" / "photo_guided_large_stage2.yaml")
    assert served_name(config) == "photo-guided-large"


@pytest.fixture
def stochastic_export(tmp_path) -> Path:
    """A small noise-then-denoise purifier (the photo-prior's shape, untrained) exported
    through the whole pipeline."""
    torch.manual_seed(0)
    spec = {"arch": "noise_prior", "sigma_255": 24, "level_255": 32, "width": 8, "depth": 3}
    spec["pretrained"] = False
    weights = tmp_path / "prior.pt"
    torch.save(build_model(spec).state_dict(), weights)
    config = {
        "name": "tiny-prior",
        "method": "prior",
        "data": {"dataset": "photos", "test_crops": 2, "crop": 32},
        "guide": {"model": {"arch": "mobilenet_v2_imagenet"}, "layers": ["18"]},
        "bank": {"eps_255": [8], "families": {"fgsm": {"kind": "fgsm"}}},
        "purifier": spec,
        "weights": str(weights),
        "train": {"lr": 1e-5},
    }
    path = write_yaml(tmp_path / "tiny-prior.yaml", config)
    return export_from_config(path, output_root=tmp_path / "models")


def test_a_stochastic_model_exports_with_a_noise_input_and_its_sigma(stochastic_export):
    card = json.loads((stochastic_export / "card.json").read_text())
    assert card["noise"]["input"] == "noise"
    assert card["noise"]["sigma"] == pytest.approx(24 / 255)
    session = ort.InferenceSession(str(stochastic_export / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["image", "noise"]
    assert "noise" in (stochastic_export.parent / "config.pbtxt").read_text()
    x = np.random.default_rng(0).random((1, 3, 45, 61), dtype=np.float32)
    n1 = np.random.default_rng(1).standard_normal(x.shape, dtype=np.float32)
    n2 = np.random.default_rng(2).standard_normal(x.shape, dtype=np.float32)
    first = session.run(None, {"image": x, "noise": n1})[0]
    again = session.run(None, {"image": x, "noise": n1})[0]
    other = session.run(None, {"image": x, "noise": n2})[0]
    assert np.array_equal(first, again)  # the graph draws nothing itself
    assert np.abs(first - other).max() > 1e-3  # the noise input reaches the output
    run = subprocess.run(
        [sys.executable, "-m", "purifier.contract_check", str(stochastic_export.parent)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_contract_check_wants_the_card_and_graph_to_agree_on_noise(stochastic_export):
    from purifier.contract_check import findings

    card_path = stochastic_export / "card.json"
    card = json.loads(card_path.read_text())
    del card["noise"]  # a two-input graph whose card says deterministic
    card_path.write_text(json.dumps(card))
    assert any("inputs ['image', 'noise']" in f for f in findings(stochastic_export.parent))
    card["noise"] = {"input": "noise", "sigma": 0}
    card_path.write_text(json.dumps(card))
    assert any("noise.sigma" in f for f in findings(stochastic_export.parent))
