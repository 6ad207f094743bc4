import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import write_yaml
from training.defenses import PurifierDefense, bit_depth, jpeg, median, total_variation
from training.evaluation import Evaluation, evaluate_from_config, load_target

ATTACKS = [
    {"name": "FGSM", "kind": "fgsm", "eps": 0.1},
    {"name": "PGD-5", "kind": "pgd", "eps": 0.1, "alpha": 0.03, "steps": 5},
    {"name": "SSP", "kind": "ssp", "eps": 0.1, "steps": 2, "seen": True},
    {"name": "BPDA", "kind": "pgd", "eps": 0.1, "alpha": 0.03, "steps": 5, "adaptive": "bpda"},
    {"name": "WB", "kind": "pgd", "eps": 0.1, "alpha": 0.03, "steps": 5, "adaptive": "whitebox"},
]


@pytest.fixture
def eval_config(tmp_path: Path, tiny_models: dict[str, Path]) -> dict:
    lenet = write_yaml(
        tmp_path / "lenet.yaml",
        {
            "name": "lenet",
            "method": "classifier",
            "output_dir": str(tmp_path / "l"),
            "weights": str(tiny_models["lenet"]),
            "model": {"arch": "lenet", "in_channels": 1},
        },
    )
    nrp = write_yaml(
        tmp_path / "nrp.yaml",
        {
            "name": "tiny-nrp",
            "method": "nrp",
            "weights": str(tiny_models["nrp"]),
            "purifier": {"arch": "nrp", "in_channels": 1, "nf": 8, "gc": 4, "num_basic_blocks": 1},
        },
    )
    return {
        "name": "tiny_eval",
        "seed": 0,
        "device": "cpu",
        "batch_size": 16,
        "output_dir": str(tmp_path / "results"),
        "data": {"dataset": "fashion_mnist", "split": "test", "num_images": 32},
        "targets": {"lenet": str(lenet)},
        "feature_extractor": {
            "model": {"arch": "vgg_small", "in_channels": 1, "width": 8},
            "weights": str(tiny_models["vgg"]),
            "layer": "relu2_2",
        },
        "defenses": {"none": {"kind": "none"}, "jpeg75": {"kind": "jpeg", "quality": 75}},
        "purifiers": {"nrp": str(nrp)},
        "figure_attack": "PGD-5",
        "attacks": ATTACKS,
    }


def test_identity_purifier_reproduces_the_no_defense_column(eval_config):
    eval_config["purifiers"] = {}
    ev = Evaluation(eval_config)
    ev.defenses["identity"] = PurifierDefense(nn.Identity())
    target = load_target(eval_config["targets"]["lenet"], ev.device)
    rows: list[dict] = []
    ev.evaluate_target(target, rows)
    by_name = {r["attack"]: r["error"] for r in rows}
    for name, errors in by_name.items():
        if name != "WB":
            assert errors["identity"] == errors["none"], name
    # White-box through an identity purifier is plain PGD on the classifier.
    assert by_name["WB"]["identity"] == by_name["PGD-5"]["none"]
    assert by_name["WB"]["none"] is None and by_name["WB"]["jpeg75"] is None
    assert by_name["PGD-5"]["none"] > by_name["clean"]["none"]


def test_eval_writes_markdown_csv_json_and_figure(eval_config, tmp_path):
    config_path = write_yaml(tmp_path / "eval.yaml", eval_config)
    result = evaluate_from_config(config_path)
    out = Path(eval_config["output_dir"])
    for name in ("table.md", "table.csv", "table.json", "examples.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "table.json").read_text())
    assert saved["defenses"] == ["none", "jpeg75", "nrp"] and saved["num_images"] == 32
    rows = saved["targets"]["lenet"]["rows"]
    assert [r["attack"] for r in rows] == ["clean"] + [a["name"] for a in ATTACKS]
    for row in rows:
        for value in row["error"].values():
            assert value is None or 0.0 <= value <= 100.0
    pgd = next(r for r in rows if r["attack"] == "PGD-5")
    assert pgd["perturbation"]["linf_max"] <= 0.1 + 1e-6
    assert pgd["kind"] == "unseen" and rows[3]["kind"] == "seen"
    with (out / "table.csv").open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["target", "attack", "budget", "kind", "none", "jpeg75", "nrp"]
    assert len(table) == 1 + len(rows)
    assert "| PGD-5 | Linf 0.1 | unseen |" in (out / "table.md").read_text()
    assert result["targets"]["lenet"]["rows"] == rows


@pytest.mark.parametrize("defense", [jpeg(75), bit_depth(3), median(3), total_variation(0.1)])
def test_baselines_keep_shape_range_and_change_noisy_images(defense, fmnist_test):
    x = fmnist_test[0][:8]
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    out = defense(noisy)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert (out - noisy).abs().mean() > 1e-3


def test_only_leaves_cells_not_run_and_seen_names_the_purifiers(eval_config):
    eval_config["attacks"] = [
        {"name": "PGD-2", "kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2, "seen": ["nrp"]},
        {"name": "BPDA", "kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2,
         "adaptive": "bpda", "only": ["nrp"]},
    ]  # fmt: skip
    ev = Evaluation(eval_config)
    rows: list[dict] = []
    ev.evaluate_target(load_target(eval_config["targets"]["lenet"], ev.device), rows)
    assert rows[1]["kind"] == "seen by nrp"
    assert rows[2]["error"]["none"] == "not run" and rows[2]["error"]["jpeg75"] == "not run"
    assert 0.0 <= rows[2]["error"]["nrp"] <= 100.0


def test_a_cell_that_cannot_run_stays_not_applicable_under_only(eval_config):
    eval_config["purifiers"] = {}
    eval_config["attacks"] = [
        {"name": "WB", "kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2,
         "adaptive": "whitebox", "only": []},
    ]  # fmt: skip
    ev = Evaluation(eval_config)
    rows: list[dict] = []
    ev.evaluate_target(load_target(eval_config["targets"]["lenet"], ev.device), rows)
    assert rows[1]["error"] == {"none": None, "jpeg75": None}  # n/a, not "not run"


def test_spatial_attack_rotates_and_shifts_without_new_pixels(fmnist_test, tiny_models):
    from training.attacks import build_attack

    model = load_target(
        {"arch": "lenet", "in_channels": 1}, torch.device("cpu")
    )  # random weights: any class change counts
    x, y = fmnist_test[0][:8], fmnist_test[1][:8]
    attack = build_attack(
        {"kind": "spatial", "max_rotation": 20, "max_translation": 2, "num_rotations": 3,
         "num_translations": 3}
    )  # fmt: skip
    adv = attack(model, x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    # A rotation/shift moves mass around, it does not add an L-inf budget of noise: the
    # total ink stays within what resampling and the border can lose.
    assert (adv.flatten(1).sum(1) <= x.flatten(1).sum(1) * 1.05 + 1).all()


def test_a_target_can_measure_only_some_columns_and_rows(eval_config):
    eval_config["attacks"] = [
        {"name": "FGSM", "kind": "fgsm", "eps": 0.1},
        {"name": "FGSM-big", "kind": "fgsm", "eps": 0.2},
    ]
    ev = Evaluation(eval_config)
    rows: list[dict] = []
    target = load_target(eval_config["targets"]["lenet"], ev.device)
    ev.evaluate_target(target, rows, None, defenses=["nrp"], attacks=["FGSM"])
    assert [r["attack"] for r in rows] == ["clean", "FGSM"]
    for row in rows:
        assert list(row["error"]) == ["none", "jpeg75", "nrp"]  # the table's column order
        assert row["error"]["none"] == "not run" and row["error"]["jpeg75"] == "not run"
        assert 0.0 <= row["error"]["nrp"] <= 100.0


def test_a_resumed_eval_reads_back_finished_cells_and_crafts_only_what_changed(
    eval_config, tmp_path, monkeypatch
):
    import training.evaluation.engine as evaluate

    first = evaluate_from_config(write_yaml(tmp_path / "eval.yaml", eval_config))
    crafted: list[int] = []
    real_run_attack = evaluate.run_attack

    def counting(*args, **kwargs):
        crafted.append(1)
        return real_run_attack(*args, **kwargs)

    monkeypatch.setattr(evaluate, "run_attack", counting)
    resumed = evaluate_from_config(write_yaml(tmp_path / "again.yaml", eval_config), resume=True)
    assert crafted == []  # every cell came back from the cache
    assert measured(resumed) == measured(first)
    assert all(r["cells_resumed"] > 0 for r in resumed["targets"]["lenet"]["rows"][1:])
    assert first["cells_resumed"] == 0 and resumed["cells_resumed"] > 0  # the run's total

    eval_config["attacks"][0] = {**eval_config["attacks"][0], "eps": 0.05}  # FGSM changed
    changed = evaluate_from_config(write_yaml(tmp_path / "fgsm.yaml", eval_config), resume=True)
    assert len(crafted) == 1
    rows = {r["attack"]: r for r in changed["targets"]["lenet"]["rows"]}
    assert rows["FGSM"]["perturbation"]["linf_max"] <= 0.05 + 1e-6
    assert measured(changed)["PGD-5"] == measured(first)["PGD-5"]
    assert rows["FGSM"]["cells_resumed"] == 0

    crafted.clear()
    evaluate_from_config(write_yaml(tmp_path / "fresh.yaml", eval_config))
    # Without --resume everything is crafted again: 3 transfer rows, BPDA through each of
    # the 3 defenses, white-box through the one purifier.
    assert len(crafted) == 3 + 3 + 1


def measured(result: dict) -> dict[str, tuple]:
    """Each row's numbers, without this run's timings."""
    return {
        r["attack"]: (r["error"], r["perturbation"]) for r in result["targets"]["lenet"]["rows"]
    }


def test_a_changed_weights_file_changes_the_cell_key(tmp_path):
    from training.evaluation.cache import cell_key, with_weight_hashes

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    before = cell_key(with_weight_hashes({"arch": "lenet", "weights": str(weights)}))
    with_weight_hashes.__globals__["file_sha256"].cache_clear()
    weights.write_bytes(b"two")
    after = cell_key(with_weight_hashes({"arch": "lenet", "weights": str(weights)}))
    assert before != after


def test_attack_overrides_craft_one_kind_of_row_otherwise_on_that_target_only(
    eval_config, tmp_path, monkeypatch
):
    import training.evaluation.engine as evaluate

    built: list[tuple[str, str]] = []
    real_build_attack = evaluate.build_attack

    def recording(spec, *args):
        built.append((spec["name"], spec["kind"]))
        return real_build_attack(spec, *args)

    monkeypatch.setattr(evaluate, "build_attack", recording)
    lenet = eval_config["targets"]["lenet"]
    eval_config["targets"] = {
        "lenet": lenet,
        "lenet_cas_loss": {"config": lenet, "attack_overrides": {"pgd": {"kind": "pgd_cas"}}},
    }
    eval_config["attacks"] = [ATTACKS[0], ATTACKS[1], ATTACKS[3]]  # FGSM, PGD-5, BPDA
    result = evaluate_from_config(write_yaml(tmp_path / "eval.yaml", eval_config))
    assert built == [
        *[("FGSM", "fgsm"), ("PGD-5", "pgd"), ("BPDA", "pgd")],
        *[("FGSM", "fgsm"), ("PGD-5", "pgd_cas"), ("BPDA", "pgd_cas")],
    ]
    assert result["targets"]["lenet_cas_loss"]["attack_overrides"] == {"pgd": {"kind": "pgd_cas"}}
    assert "attack_overrides" not in result["targets"]["lenet"]
    crafted_with = {
        name: [r.get("crafted_with") for r in t["rows"]] for name, t in result["targets"].items()
    }
    assert crafted_with == {
        "lenet": [None] * 4,
        "lenet_cas_loss": [
            None,
            None,
            {"kind": "pgd_cas"},
            {"kind": "pgd_cas"},
        ],  # FGSM, PGD-5, BPDA
    }
    table = (Path(eval_config["output_dir"]) / "table.md").read_text()
    assert "Every `pgd` row on lenet_cas_loss is crafted with `{'kind': 'pgd_cas'}`." in table
    # LeNet has no CAS module: the CAS loss is its CE, and the cells agree.
    rows = [[r["error"] for r in t["rows"]] for t in result["targets"].values()]
    assert rows[0] == rows[1]


def test_attack_overrides_must_name_known_attacks_and_surrogates():
    from training.evaluation import target_parts

    with pytest.raises(KeyError, match="unknown attacks"):
        target_parts({"config": "lenet.yaml", "attack_overrides": {"pgd": {"kind": "pgd_no"}}})
    with pytest.raises(KeyError, match="unknown surrogates"):
        target_parts({"config": "lenet.yaml", "attack_overrides": {"pgd": {"surrogate": "aux"}}})
    heads = {"pgd": {"surrogate": "cas_heads"}}
    assert target_parts({"config": "lenet.yaml", "attack_overrides": heads})[3] == heads
    assert target_parts("lenet.yaml")[3] == {}


def test_wilson_interval_matches_the_formula_and_stays_in_range():
    from training.evaluation import format_cell, wilson_interval

    low, high = wilson_interval(32, 256)  # 12.5%: a textbook value, 8.995-17.114%
    assert abs(low - 8.995) < 1e-3 and abs(high - 17.114) < 1e-3
    assert wilson_interval(0, 256)[0] == 0.0 and 1.4 < wilson_interval(0, 256)[1] < 1.5
    assert wilson_interval(256, 256)[1] == 100.0
    assert format_cell(12.5, 256) == "12.5 [9.0, 17.1]" and format_cell(12.5) == "12.5"
    assert format_cell(None, 256) == "n/a"
