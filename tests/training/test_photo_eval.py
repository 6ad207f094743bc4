"""The natural-image table at toy size: unlabelled photo crops, attacks crafted once on
the source and measured on every target (transfer), fooling rates in every cell."""

import torch

from tests.conftest import REPO, write_yaml
from tests.training.helpers import tiny_photo_overrides
from training.config import load_config
from training.evaluation import Evaluation, markdown_table
from training.models import build_model


def test_transfer_table_on_photos(tmp_path):
    torch.manual_seed(0)
    purifier = {"arch": "nrp_unet", "nf": 4, "width": 8, "gc": 4, "blocks": 1}
    torch.save(build_model(purifier).state_dict(), tmp_path / "p.pt")
    purifier_cfg = write_yaml(
        tmp_path / "p.yaml", {"purifier": purifier, "weights": str(tmp_path / "p.pt")}
    )
    config = load_config(
        REPO / "training" / "configs" / "photo_eval.yaml",
        tiny_photo_overrides(4, 64, f"purifiers.nrp={purifier_cfg}"),
    )
    keep = {"FGSM 16/255", "DIM 16/255", "TI-DIM 16/255", "SSP 16/255", "BPDA+PGD-10 16/255"}
    config["attacks"] = [
        {**a, **({"steps": 2} if "steps" in a else {})}
        for a in config["attacks"]
        if a["name"] in keep
    ]
    ev = Evaluation(config)
    assert ev.y is None and ev.source is not None
    tables = {}
    for name, spec in config["targets"].items():
        rows: list = []
        ev.evaluate_target(build_model(spec).eval(), rows)
        tables[name] = rows
    clean = tables["mobilenet_v2"][0]
    assert clean["attack"] == "clean" and clean["error"]["none"] == 0.0  # its own reference
    for rows in tables.values():
        assert [r["attack"] for r in rows[1:]] == [a["name"] for a in config["attacks"]]
        for row in rows:
            assert all(v is None or 0 <= v <= 100 for v in row["error"].values())
    # FGSM at 16/255 against the model it was crafted on fools it at least sometimes.
    assert tables["mobilenet_v2"][1]["error"]["none"] > 0
    result = {
        "num_images": 4,
        "device": "cpu",
        "command": "x",
        "defenses": list(ev.defenses),
        "labelled": False,
        "source": config["source"],
        "targets": {k: {"rows": v} for k, v in tables.items()},
    }
    assert "Fooling rate" in markdown_table(result)


def test_a_table_of_classic_defenses_needs_no_purifier(tmp_path):
    """`--set purifiers={}` measures the classic columns alone (the photo baselines, before
    a photo purifier exists): the report is written, and no purifier figure is drawn."""
    from training.evaluation import evaluate_from_config

    result = evaluate_from_config(
        REPO / "training" / "configs" / "photo_eval.yaml",
        tiny_photo_overrides(
            2,
            32,
            "purifiers={}",
            f"output_dir={tmp_path}",
            "attacks=[{name: FGSM 16/255, kind: fgsm, eps: 0.0627},"
            " {name: PGD-10 16/255, kind: pgd, eps: 0.0627, alpha: 0.0157, steps: 1}]",
            "figure_attack=PGD-10 16/255",
        ),
    )
    assert result["purifiers"] == []
    assert result["defenses"] == ["none", "jpeg75", "bitdepth4", "median3", "tv"]
    for target in result["targets"].values():
        assert [r["attack"] for r in target["rows"]] == ["clean", "FGSM 16/255", "PGD-10 16/255"]
    assert (tmp_path / "table.md").exists() and not (tmp_path / "examples.png").exists()


def test_a_randomised_purifier_column_repeats_cell_by_cell_with_eot_rows(tmp_path):
    """noise-then-denoise (the pretrained prior, issue 37's baseline) as a column: its
    noise is drawn from each cell's seed, so a cell measured alone equals the same cell
    measured with others; the adaptive rows average gradients over noise draws (EOT)."""
    from training.attacks import ExpectationOverNoise
    from training.evaluation import engine

    config = load_config(
        REPO / "training" / "configs" / "photo_eval.yaml",
        tiny_photo_overrides(4, 64, "purifiers={}"),
    )
    config["defenses"] = {
        "none": {"kind": "none"},
        "prior": {"kind": "noise_then_denoise", "noise_255": 24, "level_255": 30},
    }
    config["attacks"] = [
        {"name": "FGSM 16/255", "kind": "fgsm", "eps": 0.0627},
        {"name": "PGD-2 16/255", "kind": "pgd", "eps": 0.0627, "alpha": 0.03, "steps": 2},
        {
            "name": "BPDA+EOT PGD-2 16/255",
            "kind": "pgd",
            "eps": 0.0627,
            "alpha": 0.03,
            "steps": 2,
            "adaptive": "bpda",
            "eot": 3,
            "batch": 2,
        },
    ]
    target = build_model(config["targets"]["efficientnet_lite0"]).eval()
    seen_draws = []
    original = ExpectationOverNoise.forward

    def counting(self, x):
        seen_draws.append((self.draws, len(x)))
        return original(self, x)

    ExpectationOverNoise.forward = counting
    try:
        both: list = []
        Evaluation(config).evaluate_target(target, both)
        alone: list = []
        Evaluation(config).evaluate_target(target, alone, attacks=["PGD-2 16/255"])
    finally:
        ExpectationOverNoise.forward = original
    assert seen_draws and all(d == 3 and n <= 2 for d, n in seen_draws)
    pgd_both = next(r for r in both if r["attack"] == "PGD-2 16/255")
    pgd_alone = next(r for r in alone if r["attack"] == "PGD-2 16/255")
    assert pgd_both["error"] == pgd_alone["error"]  # the same cell, whatever ran before
    assert both[0]["error"] == alone[0]["error"]  # clean, noise included
    # Purified once (for MobileNetV2, first) and kept for the next target: EfficientNet-
    # Lite0's cells are those measured without the reuse.
    reused: list = []
    ev = Evaluation({**config, "reuse_purified": True})
    ev.evaluate_target(build_model(config["targets"]["mobilenet_v2"]).eval(), [])
    ev.evaluate_target(target, reused)
    assert [r["error"] for r in reused] == [r["error"] for r in both]
    assert ev._purified and all(k[1] != "none" for k in ev._purified)
    assert engine.cell_seed(0, "a", "b") != engine.cell_seed(0, "a", "c")
    assert engine.cell_seed(0, "a", "b") == engine.cell_seed(0, "a", "b")
