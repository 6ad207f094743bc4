"""The settings table of docs/service.md, generated from the Settings class (so that a
setting, its default and its meaning are written once, in service/config.py).

    python -m service.settings_doc docs/service.md    # rewrite the table in place
"""

from __future__ import annotations

import sys
from pathlib import Path

from service.config import Settings

START, END = "<!-- settings-table -->", "<!-- /settings-table -->"


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(f"| `PURIFIER_{name.upper()}` | `{field.default}` | {meaning} |")
    return "\n".join(lines)


def write_table(path: Path) -> None:
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {START} ... {END} section")
    path.write_text(text[: start + len(START)] + "\n" + settings_table() + "\n" + text[end:])


if __name__ == "__main__":
    write_table(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/service.md"))
