"""Security scan of the rendered manifests with checkov: every remaining finding is justified in
the chart's README (the table between `checkov-skips` markers), and every justification still
matches a finding."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from facepipe_dev import helm as h

BEGIN, END = "<!-- checkov-skips:begin -->", "<!-- checkov-skips:end -->"


def justified(chart: str) -> set[str]:
    readme = (h.chart_dir(chart) / "README.md").read_text()
    table = readme[readme.index(BEGIN) : readme.index(END)]
    return set(re.findall(r"^\| `(CKV2?_K8S_\d+)` \|", table, flags=re.MULTILINE))


def scan(checkov: Path, folder: Path) -> list[dict]:
    """checkov's reports on one folder, scanned on its own (given several `-d`, checkov 3 reports every earlier folder
    again with each later one, so one profile's NetworkPolicies would still cover another's pods)."""
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    result = subprocess.run(
        [str(checkov), "-d", str(folder), "--framework", "kubernetes", "--skip-download", "--quiet", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout) if result.stdout.strip() else []
    return reports if isinstance(reports, list) else [reports]


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_checkov_findings_are_justified(chart: str, helm_any: h.Helm, checkov_binary: Path, tmp_path: Path) -> None:
    """Each profile is rendered into a folder of its own and scanned on its own, so no profile's NetworkPolicies or
    ServiceAccounts cover another's pods (the review found findings the shared folder hid)."""
    folders = []
    for profile in h.profile_ids(chart):
        values, sets = h.profile_args(chart, profile)
        folder = tmp_path / profile
        folder.mkdir()
        (folder / f"{profile}.yaml").write_text(helm_any.template_text(chart, values, sets).stdout)
        folders.append(folder)
    reports = [report for found in h.parallel(lambda folder: scan(checkov_binary, folder), folders, workers=2) for report in found]
    findings: dict[str, set[str]] = {}
    for report in reports:
        for failed in report.get("results", {}).get("failed_checks", []):
            findings.setdefault(failed["check_id"], set()).add(f"{Path(failed['file_path']).name}: {failed['resource']}")
    reasons = justified(chart)
    unexplained = {k: sorted(v) for k, v in findings.items() if k not in reasons}
    assert not unexplained, f"checkov findings not justified in charts/{chart}/README.md: {json.dumps(unexplained, indent=1)}"
    stale = reasons - set(findings)
    assert not stale, f"charts/{chart}/README.md justifies checks that no longer fail: {sorted(stale)}"
