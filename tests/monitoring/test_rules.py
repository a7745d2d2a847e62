"""The shipped alert rules: valid for promtool, one unit test per alert that fires and one that stays
silent, and a runbook in the README for each."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from facepipe_dev.prometheus import REPO, RULE_FILES

UNIT_TESTS = sorted((Path(__file__).parent / "rules").glob("*-tests.yaml"))


def alerts(chart: str) -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULE_FILES[chart].read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALL_ALERTS = [rule["alert"] for chart in RULE_FILES for rule in alerts(chart)]


def promtool(prometheus_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(prometheus_bin / "promtool"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("chart", sorted(RULE_FILES))
def test_promtool_checks_the_rules(prometheus_bin: Path, chart: str) -> None:
    done = promtool(prometheus_bin, "check", "rules", "--lint=all", "--lint-fatal", str(RULE_FILES[chart]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts(chart))} rules found" in done.stdout


@pytest.mark.parametrize("unit_tests", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(prometheus_bin: Path, unit_tests: Path) -> None:
    done = promtool(prometheus_bin, "test", "rules", str(unit_tests))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_can_fail(prometheus_bin: Path, tmp_path: Path) -> None:
    """A rules file whose threshold is off makes promtool report the alert that no longer fires."""
    rules = RULE_FILES["face-cloud"].read_text().replace("> 0.05", "> 0.5")
    (tmp_path / "rules.yaml").write_text(rules)
    tests = (Path(__file__).parent / "rules" / "cloud-tests.yaml").read_text()
    tests = re.sub(r"rule_files:\n  - .*\n", "rule_files:\n  - rules.yaml\n", tests)
    (tmp_path / "tests.yaml").write_text(tests)
    done = promtool(prometheus_bin, "test", "rules", str(tmp_path / "tests.yaml"))
    assert done.returncode != 0 and "alertname: FacepipeRejectionsRising" in done.stdout + done.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert sorted(firing) == sorted(ALL_ALERTS)
    assert sorted(silent) == sorted(ALL_ALERTS)


def test_every_alert_has_a_severity_a_summary_and_a_runbook_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    headings = {m.group(1) for m in re.finditer(r"^#### `?(Facepipe\w+)`?$", readme, re.MULTILINE)}
    for chart in RULE_FILES:
        for rule in alerts(chart):
            name = rule["alert"]
            assert rule["labels"]["severity"] in ("warning", "critical"), name
            assert rule["annotations"]["summary"], name
            assert rule["annotations"]["runbook_url"].endswith(f"README.md#{name.lower()}"), name
            assert name in headings, f"README.md has no '#### {name}' runbook"
    assert headings == set(ALL_ALERTS), "a runbook for an alert that does not exist"
