"""docs/service.md's settings table lists every setting with its real default."""

import re

from service.config import Settings
from tests.conftest import REPO


def test_readme_documents_every_setting_with_its_default():
    readme = (REPO / "docs" / "service.md").read_text()
    rows = dict(re.findall(r"^\| `(PURIFIER_[A-Z_0-9]+)` \| `([^`]*)` \|", readme, re.M))
    for name, field in Settings.model_fields.items():
        variable = f"PURIFIER_{name.upper()}"
        assert variable in rows, f"{variable} is missing from docs/service.md"
        assert rows[variable] == str(field.default), (variable, rows[variable], field.default)
    assert len(rows) == len(Settings.model_fields)
