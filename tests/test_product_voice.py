"""The product speaks to its users: no issue numbers, internal files or development notes in the
code, the README, the zoo card or the CLI's help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: words that belong to the project's development, not to its users
INTERNAL = re.compile(r"\bissue #?\d+|DESIGN\.md|\bshared/|\bseed 00\d|STYLE\.md", re.IGNORECASE)


def _shipped_texts() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "app.py", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "taskarith_core").rglob("*.py"))
    files += sorted((ROOT / "benchmarks").glob("*.py"))
    files += [ROOT / "assets" / "zoo" / "README.md", ROOT / "assets" / "zoo" / "card.json"]
    return [f for f in files if f.is_file()]


def test_shipped_text_names_no_internal_things():
    found = []
    for path in _shipped_texts():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if INTERNAL.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert found == []


@pytest.mark.parametrize("argv", [["--help"], ["analyse", "xi", "--help"], ["zoo", "--help"]])
def test_help_texts_name_no_internal_things(argv, capsys):
    from taskarith_core.cli import main

    assert main(argv) == 0
    assert not INTERNAL.search(capsys.readouterr().out)
