"""The library chart both charts share (charts/facepipe-common), and how they get it.

Each chart depends on it with `repository: file://../facepipe-common`, and carries it as a committed
symlink, charts/<chart>/charts/facepipe-common -> ../../facepipe-common: a git checkout (a user's, or
Argo CD's repo-server) renders and installs with Helm 3 and Helm 4 with no `helm dependency build`,
there is one copy of the helpers, and `helm package` puts the library's files into the chart archive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from facepipe_dev import helm as h

LIBRARY = h.CHARTS / "facepipe-common"


def chart_yaml(path: Path) -> dict:
    return yaml.safe_load((path / "Chart.yaml").read_text())


def kinds_and_names(docs: list[dict]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_both_charts_depend_on_the_library(chart: str) -> None:
    library = chart_yaml(LIBRARY)
    assert library["type"] == "library"
    (dependency,) = chart_yaml(h.chart_dir(chart))["dependencies"]
    assert dependency == {"name": "facepipe-common", "version": library["version"], "repository": "file://../facepipe-common"}


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_the_dependency_is_a_committed_symlink_to_the_library(chart: str) -> None:
    link = h.chart_dir(chart) / "charts" / "facepipe-common"
    assert link.is_symlink() and os.readlink(link) == "../../facepipe-common"
    assert link.resolve() == LIBRARY.resolve()
    staged = subprocess.run(["git", "ls-files", "-s", str(link)], cwd=h.REPO, capture_output=True, text=True, check=True).stdout
    assert staged.startswith("120000 "), f"git must keep charts/{chart}/charts/facepipe-common as a symlink: {staged!r}"


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_a_copy_of_the_charts_folder_renders_with_no_dependency_step(helm: h.Helm, tmp_path: Path, chart: str) -> None:
    """What a checkout has is enough: the charts/ folder alone, links kept, renders the same objects."""
    copy = tmp_path / "charts"
    shutil.copytree(h.CHARTS, copy, symlinks=True)
    values, sets = h.profile_args(chart, "default")
    docs = helm.template(copy / chart, values, sets)
    assert kinds_and_names(docs) == kinds_and_names(helm.template(chart, values, sets))
    assert not (copy / chart / "Chart.lock").exists() and not list((copy / chart / "charts").glob("*.tgz"))


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_the_packaged_chart_carries_the_library(helm: h.Helm, tmp_path: Path, chart: str) -> None:
    """`helm package` (what a chart repository or an OCI registry serves) holds the library's files, and renders alone."""
    helm.run("package", str(h.chart_dir(chart)), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob(f"{chart}-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    for template in sorted(p.name for p in (LIBRARY / "templates").glob("*.tpl")):
        member = members.get(f"{chart}/charts/facepipe-common/templates/{template}")
        assert member is not None and member.isfile(), f"{template} is not in {archive.name}"
    values, sets = h.profile_args(chart, "default")
    assert kinds_and_names(helm.template(archive, values, sets)) == kinds_and_names(helm.template(chart, values, sets))


PROBLEMS = {
    "face-edge": (
        ("cloud.host=", "broker.auth.enabled=true", "forwarder.spool.size=8Mi"),
        ("cloud.host is required", "broker.auth.existingSecret or broker.auth.password", "forwarder.spool.size (8Mi) is too small"),
    ),
    "face-cloud": (
        ("processor.store.type=s3", "broker.tls.enabled=false"),
        ("processor.store.s3.bucket", "broker.service.exposePlain"),
    ),
}


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_every_problem_with_the_values_is_reported_at_once(helm: h.Helm, chart: str) -> None:
    sets, messages = PROBLEMS[chart]
    result = helm.template_text(chart, sets=sets, check=False)
    assert result.returncode != 0
    assert f"{chart}: {len(messages)} problems with the values:" in result.stderr, result.stderr
    for number, message in enumerate(messages, 1):
        assert message in result.stderr.split(f"\n{number}. ", 1)[1].split("\n\n", 1)[0], (message, result.stderr)
