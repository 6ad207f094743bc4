"""docs/service.md's settings table is the one generated from the Settings class: every
setting, its real default and its description (python -m service.settings_doc)."""

from service.config import Settings
from service.settings_doc import settings_table
from tests.conftest import REPO


def test_the_settings_page_shows_the_generated_table():
    page = (REPO / "docs" / "service.md").read_text()
    assert settings_table() in page, "run: python -m service.settings_doc docs/service.md"


def test_every_setting_is_described():
    undocumented = [n for n, f in Settings.model_fields.items() if not f.description]
    assert not undocumented
