"""The rendered configuration is the one the apps accept.

For every container of the facepipe image in every rendered profile, run
`facepipe <its args> --check-config` with the environment the chart renders (`value`s as
rendered; secretKeyRef / fieldRef as placeholders) and require exit 0, and that every variable the
chart sets is one the component reads and shows up, with the rendered value, in the effective
configuration it prints.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from facepipe_dev import helm as h

CASES = [(chart, profile) for chart in h.CHART_NAMES for profile in h.profile_ids(chart)]


def facepipe_command() -> list[str]:
    exe = shutil.which("facepipe") or str(Path(sys.executable).with_name("facepipe"))
    if Path(exe).is_file():
        return [exe]
    return [sys.executable, "-m", "facepipe"]


def run_check_config(container: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
    rendered = h.env_map(container, placeholder="from-a-secret")
    return _check_config(tuple(container["args"]), tuple(sorted(rendered.items())))


@functools.cache
def _check_config(args: tuple[str, ...], rendered: tuple[tuple[str, str], ...]) -> subprocess.CompletedProcess[str]:
    """Cached: Helm 3 and Helm 4 render the same containers, each is checked once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "LOCAL_MQTT_", "REMOTE_MQTT_", "AWS_"))}
    env.update(rendered)
    return subprocess.run(
        [*facepipe_command(), *args, "--check-config"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(("chart", "profile"), CASES, ids=[f"{c}:{p}" for c, p in CASES])
def test_apps_accept_the_rendered_configuration(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    pytest.importorskip("facepipe.cli", reason="the facepipe CLI is not installed in this environment")
    containers = h.facepipe_containers(render_cache.get(helm, chart, profile))
    assert containers
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda item: run_check_config(item[1]), containers))
    problems = []
    for (where, container), result in zip(containers, results, strict=True):
        component = container["args"][0]
        if result.returncode != 0:
            problems.append(
                f"{where}: facepipe {' '.join(container['args'])} --check-config exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
            continue
        report = json.loads(result.stdout)
        assert report["valid"] is True and report["component"] == component
        problems += [f"{where}: {problem}" for problem in h.check_config_problems(container, report["config"])]
    assert not problems, "\n".join(problems)


def test_every_component_is_covered(helm: h.Helm, render_cache: h.RenderCache) -> None:
    """Across the profiles, every component (and the helm test probes) is checked."""
    seen = set()
    for chart, profile in CASES:
        for _, c in h.facepipe_containers(render_cache.get(helm, chart, profile)):
            seen.add(c["args"][0])
    assert seen == set(h.COMPONENT_SETTINGS)


def test_the_check_catches_a_bad_value() -> None:
    """The harness itself: a value the app refuses makes check-config fail (exit 2, naming it)."""
    pytest.importorskip("facepipe.cli", reason="the facepipe CLI is not installed in this environment")
    container = {"args": ["camera"], "env": [{"name": "FACEPIPE_JPEG_QUALITY", "value": "500"}]}
    result = run_check_config(container)
    assert result.returncode == 2
    assert "FACEPIPE_JPEG_QUALITY" in result.stderr + result.stdout
