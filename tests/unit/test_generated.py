"""Every generated file is what its source generates now (README tables, the charts' app-settings schema)."""

import json

from facepipe_dev import generate
from facepipe_dev.paths import REPO


def test_every_generated_file_is_current() -> None:
    stale = [str(path.relative_to(REPO)) for path in generate.stale()]
    assert not stale, f"stale: {', '.join(stale)}: run {generate.COMMAND}"


def test_the_schema_gets_each_settings_limits() -> None:
    """A setting's limits reach the chart value a template hands it (here camera.stableFaces.maxFps: 0 or 1..1000)."""
    schema = json.loads(generate.render_schema("face-edge"))
    entry = schema["properties"]["camera"]["properties"]["stableFaces"]["properties"]["maxFps"]
    assert entry["anyOf"] == [{"enum": [0]}, {"minimum": 1}] and entry["maximum"] == 1000
