"""The README's configuration reference is the one the code generates."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_is_current() -> None:
    table = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_reference.py")], capture_output=True, text=True, check=True
    ).stdout.strip()
    readme = (REPO / "README.md").read_text()
    embedded = readme.split("<!-- config-reference:start -->")[1].split("<!-- config-reference:end -->")[0].strip()
    assert embedded == table, "README configuration table is stale: run scripts/config_reference.py and paste its output"


def test_readme_first_screen_gives_the_two_commands() -> None:
    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:15])
    assert "make demo" in first_screen and "make test" in first_screen
