"""The README's configuration reference is the one the code generates."""

import re
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


def test_the_spool_limit_prose_states_the_generated_facts() -> None:
    """Hand-written sentences about the derived spool limit quote the share and the segment size that the
    chart reads from files/spool.json; they must not drift from it."""
    from facepipe.spool import SEGMENT_BYTES
    from facepipe_dev.helm import SPOOL_VOLUME_SHARE, chart_dir

    share, segment = f"{SPOOL_VOLUME_SHARE:.0%}", f"{SEGMENT_BYTES // 2**20} MiB"
    chart = chart_dir("face-edge")
    for path in (chart / "README.md", chart / "values.yaml", chart / "values.schema.json"):
        text = path.read_text()
        quoted = set(re.findall(r"\b(\d+%) of (?:`?size|it)\b", text))
        segments = set(re.findall(r"\b(\d+ MiB)\b(?= segment| below)", text))
        assert quoted == {share}, f"{path.name} quotes {quoted} of size; the chart takes {share}"
        assert segments == {segment}, f"{path.name} quotes segments of {segments}; they are {segment}"
