"""The README's configuration reference is the one the code generates."""

from pathlib import Path

from facepipe_dev import generate

REPO = Path(__file__).resolve().parents[2]


def test_readme_configuration_table_is_current() -> None:
    table = generate.config_table().strip()
    readme = (REPO / "README.md").read_text()
    embedded = readme.split("<!-- config-reference:start -->")[1].split("<!-- config-reference:end -->")[0].strip()
    assert embedded == table, f"README configuration table is stale: run {generate.COMMAND}"


def test_readme_first_screen_gives_the_two_commands() -> None:
    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:15])
    assert "make demo" in first_screen and "make test" in first_screen
