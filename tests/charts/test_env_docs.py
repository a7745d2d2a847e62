"""Each chart README's "Environment the chart sets" table names what the chart renders, no more, no less.

The table is prose (which variable comes with which option), so it is written by hand; this keeps it true:
every variable that any profile in tests/values/ renders into a facepipe container is named in it
(`LOCAL_MQTT_*` counts for that family), and every name it gives is rendered by some profile.
"""

from __future__ import annotations

import re

import pytest

from facepipe_dev import helm as h

HEADING = "## Environment the chart sets"
NAME = re.compile(r"`([A-Z][A-Z0-9_]*[A-Z0-9*])(?:=[^`]*)?`")


def documented(chart: str) -> set[str]:
    text = (h.chart_dir(chart) / "README.md").read_text()
    table = text.split(HEADING, 1)[1].split("\n\n", 2)[1]
    return set(NAME.findall(table))


def rendered(helm: h.Helm, render_cache: h.RenderCache, chart: str) -> set[str]:
    names: set[str] = set()
    for profile in h.profile_ids(chart):
        for _, container in h.facepipe_containers(render_cache.get(helm, chart, profile)):
            names.update(env["name"] for env in container.get("env", []))
    return names


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_the_environment_table_names_what_the_chart_renders(helm_any: h.Helm, render_cache: h.RenderCache, chart: str) -> None:
    docs, env = documented(chart), rendered(helm_any, render_cache, chart)
    families = {name.removesuffix("*") for name in docs if name.endswith("*")}
    undocumented = sorted(name for name in env if name not in docs and not name.startswith(tuple(families)))
    stale = sorted(name for name in docs if not name.endswith("*") and name not in env)
    assert not undocumented, f"charts/{chart}/README.md ({HEADING}) does not name {undocumented}"
    assert not stale, f"charts/{chart}/README.md ({HEADING}) names {stale}, which no profile renders"
