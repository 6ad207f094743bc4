"""The methods table (defenses as rows) is a pivot of the measured eval result: every
cell comes from table.json, robust classifiers come from their own targets, and the best
purifier is chosen by the numbers."""

from __future__ import annotations

import json

import pytest

from training.studies.methods_table import best_purifier, build, replace_in_readme, write

NR = "not run"


def _row(attack: str, kind: str, errors: dict) -> dict:
    return {"attack": attack, "budget": "-", "kind": kind, "error": errors}


def _result() -> dict:
    defenses = ["none", "jpeg75", "arn", "nrp"]
    lenet = [
        _row("clean", "clean", {"none": 7.0, "jpeg75": 8.0, "arn": 9.0, "nrp": 10.0}),
        _row("FGSM", "unseen", {"none": 80.0, "jpeg75": 70.0, "arn": 30.0, "nrp": 20.0}),
        _row("PGD", "seen by arn", {"none": 97.0, "jpeg75": 90.0, "arn": 5.0, "nrp": 35.0}),
        _row("DDN", "unseen", {"none": 99.0, "jpeg75": 10.0, "arn": 30.0, "nrp": 22.0}),
        _row("WB", "adaptive (whitebox)", {"none": None, "jpeg75": None, "arn": 90.0, "nrp": NR}),
    ]
    at = [
        _row(r["attack"], r["kind"], {"none": 20.0 + i, "jpeg75": NR, "arn": NR, "nrp": NR})
        for i, r in enumerate(lenet)
    ]
    cas = [
        _row(r["attack"], r["kind"], {"none": 30.0 + i, "jpeg75": NR, "arn": 40.0, "nrp": 50.0 + i})
        for i, r in enumerate(lenet)
    ]
    return {
        "num_images": 100,
        "device": "cpu",
        "command": "purifier eval x.yaml",
        "defenses": defenses,
        "purifiers": ["arn", "nrp"],
        "targets": {
            "lenet": {"rows": lenet},
            "resnet": {"rows": lenet},
            "lenet_at": {"rows": at},
            "lenet_cas": {"rows": cas},
        },
    }


SPEC = {
    "white_box": "lenet",
    "cross_model": "resnet",
    "robust_classifiers": {"AT-PGD": "lenet_at", "AT+CAS": "lenet_cas"},
}


def test_best_purifier_is_chosen_on_attacks_no_purifier_saw():
    # arn wins the seen PGD row by far, but on the unseen rows nrp is better (21 vs 30).
    result = _result()
    assert best_purifier(result, result["targets"]["lenet"]) == "nrp"


def test_rows_are_defenses_then_robust_classifiers_then_best_purifier_on_cas():
    tables = build(_result(), SPEC)
    wb = tables["white_box"]
    assert wb["attacks"] == ["clean", "FGSM", "PGD", "DDN", "WB"]
    labels = [label for label, _ in wb["rows"]]
    assert labels == ["none", "jpeg75", "arn", "nrp", "AT-PGD", "AT+CAS", "nrp + AT+CAS"]
    cells = dict(wb["rows"])
    assert cells["AT-PGD"] == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert cells["nrp + AT+CAS"] == [50.0, 51.0, 52.0, 53.0, 54.0]
    assert cells["nrp"][4] == NR and cells["arn"][2] == 5.0
    assert [label for label, _ in tables["cross_model"]["rows"]] == ["none", "jpeg75", "arn", "nrp"]


def test_write_renders_markdown_csv_and_json(tmp_path):
    text = write(_result(), build(_result(), SPEC), tmp_path)
    assert "| nrp + AT+CAS | 50.0 | 51.0 | 52.0 | 53.0 | 54.0 |" in text
    assert (
        "| *(attack kind)* | clean | unseen | seen by arn | unseen | adaptive (whitebox) |" in text
    )
    assert "| none | 7.0 | 80.0 | 97.0 | 99.0 | n/a |" in text
    saved = json.loads((tmp_path / "methods.json").read_text())
    assert saved["white_box"]["rows"][0] == ["none", [7.0, 80.0, 97.0, 99.0, None]]
    assert (tmp_path / "methods.csv").read_text().startswith("white_box,clean,FGSM")


def test_cards_receive_the_methods_table(tmp_path):
    from training.studies.methods_table import add_to_cards

    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "x", "sha256": "abc"}))
    result = _result()
    add_to_cards(build(result, SPEC), result, [card])
    saved = json.loads(card.read_text())
    assert saved["sha256"] == "abc" and saved["methods_table"]["command"] == result["command"]
    assert saved["methods_table"]["white_box"]["rows"][-1][0] == "nrp + AT+CAS"


def test_the_readme_section_is_replaced_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- methods-table -->\nold table\n<!-- /methods-table -->\nafter\n")
    replace_in_readme(readme, "new table")
    assert readme.read_text() == (
        "intro\n<!-- methods-table -->\nnew table\n<!-- /methods-table -->\nafter\n"
    )
    replace_in_readme(readme, "newer")  # idempotent shape: run it again
    assert "new table" not in readme.read_text() and "newer" in readme.read_text()
    (tmp_path / "other.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="methods-table"):
        replace_in_readme(tmp_path / "other.md", "x")
