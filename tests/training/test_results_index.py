"""results/README.md is the generated index of the measured tables (issue 26)."""

from tests.conftest import REPO
from training.reports.results_index import render


def test_the_results_index_is_current():
    index = (REPO / "results" / "README.md").read_text()
    assert index == render(REPO / "results"), "run: python -m training.reports.results_index"


def test_the_index_names_every_table_with_its_command(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "table.md").write_text("\nTop-1 error on 5 images; `purifier eval x.yaml`.\n")
    text = render(tmp_path)
    assert "- [table.md](a/table.md): Top-1 error on 5 images; `purifier eval x.yaml`." in text


def test_the_readme_results_table_is_rendered_from_the_measured_tables():
    import json

    from training.reports.results_summary import END, LATENCY, PHOTO_TABLE, START, more_tables
    from training.reports.results_summary import render as render_summary

    readme = (REPO / "README.md").read_text()
    table = json.loads((REPO / PHOTO_TABLE).read_text())
    latency = json.loads((REPO / LATENCY).read_text())
    shown = readme[readme.index(START) : readme.index(END) + len(END)]
    assert shown == render_summary(table, latency, more=more_tables(REPO)), (
        "run: python -m training.reports.results_summary"
    )
