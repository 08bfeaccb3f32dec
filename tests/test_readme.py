"""The README states the settings and the two commands; keep it true."""

from __future__ import annotations

import re
from pathlib import Path

from cleaner.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.name}` | {default} | {s.meaning} |")
    return "\n".join(rows)


def test_the_settings_table_is_the_settings_module():
    block = README.split("<!-- settings:start -->\n", 1)[1].split("\n<!-- settings:end -->")[0]
    assert block == settings_table()


def test_every_environment_variable_the_package_reads_is_in_the_table():
    read = set()
    for path in (ROOT / "cleaner").rglob("*.py"):
        read |= set(re.findall(r"\"((?:CLEANER|GOOGLE_OAUTH)_[A-Z_]+)\"", path.read_text()))
    assert read <= {s.name for s in SETTINGS}


def test_the_two_commands_exist_and_ci_runs_the_test_command():
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
