"""results/README.md is the generated index of the measured tables (issue 26)."""

from tests.conftest import REPO
from training.results_index import render


def test_the_results_index_is_current():
    index = (REPO / "results" / "README.md").read_text()
    assert index == render(REPO / "results"), "run: python -m training.results_index"


def test_the_index_names_every_table_with_its_command(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "table.md").write_text("\nTop-1 error on 5 images; `purifier eval x.yaml`.\n")
    text = render(tmp_path)
    assert "- [table.md](a/table.md): Top-1 error on 5 images; `purifier eval x.yaml`." in text
