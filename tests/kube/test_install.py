"""helm install of every chart profile (helm 3 and helm 4) into the live API server, the wiring read
back with the `kubernetes` client, and helm uninstall leaving nothing of the release behind.

Each (helm, profile) is one release in its own namespace, installed once for the tests of its group;
the last test of a group uninstalls it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facepipe_dev import helm as h
from tests.kube import checks, live
from tests.kube.conftest import installed, release_cases

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module", params=release_cases("face-edge"))
def edge(request, cluster, helm_binaries) -> Iterator[live.Release]:
    yield from installed(request, cluster, helm_binaries, "face-edge")


@pytest.fixture(scope="module", params=release_cases("face-cloud"))
def cloud(request, cluster, helm_binaries) -> Iterator[live.Release]:
    yield from installed(request, cluster, helm_binaries, "face-cloud")


def assert_uninstall_leaves_nothing(release: live.Release) -> None:
    """helm uninstall removes every object of the release (waiting for the PVC protection
    finalizer), except what the chart marks helm.sh/resource-policy: keep; the test's own
    Secrets and the namespace's baseline stay."""
    cluster = release.cluster
    kept = release.kept_objects()
    release.uninstall()
    ours = {("Secret", name) for name in release.made_secrets}
    left = cluster.wait_for_empty(release.namespace, allowed=ours | kept, timeout=30)
    assert left == [], f"left behind by helm uninstall in {release.namespace}: {left}"
    present = set(cluster.namespace_contents(release.namespace))
    assert kept <= present, f"resource-policy keep objects should survive uninstall: {sorted(kept - present)}"
    assert present <= ours | kept, sorted(present - ours - kept)


# --- face-edge -----------------------------------------------------------------------------------


def test_edge_install_is_deployed_and_every_object_is_on_the_server(edge: live.Release) -> None:
    checks.assert_deployed_and_on_server(edge)


def test_edge_wiring_read_back(edge: live.Release) -> None:
    checks.assert_edge_wiring(edge, h.effective_values("face-edge", edge.profile))


def test_edge_referenced_secrets_exist(edge: live.Release) -> None:
    checks.assert_referenced_secrets_exist(edge)


def test_edge_uninstall_leaves_nothing_behind(edge: live.Release) -> None:
    assert_uninstall_leaves_nothing(edge)


# --- face-cloud ----------------------------------------------------------------------------------


def test_cloud_install_is_deployed_and_every_object_is_on_the_server(cloud: live.Release) -> None:
    checks.assert_deployed_and_on_server(cloud)


def test_cloud_wiring_read_back(cloud: live.Release) -> None:
    checks.assert_cloud_wiring(cloud, h.effective_values("face-cloud", cloud.profile))


def test_cloud_referenced_secrets_exist(cloud: live.Release) -> None:
    checks.assert_referenced_secrets_exist(cloud)


def test_cloud_uninstall_leaves_nothing_behind(cloud: live.Release) -> None:
    assert_uninstall_leaves_nothing(cloud)


# --- the profiles' Secrets table -----------------------------------------------------------------


@pytest.mark.parametrize("chart,profile", [(c, p) for c in h.CHART_NAMES for p in h.profile_ids(c)])
def test_external_secrets_table_matches_the_profiles(chart: str, profile: str) -> None:
    """live.EXTERNAL_SECRETS holds exactly the Secrets each profile names (existingSecret,
    passwordFileSecret, imagePullSecrets): a new profile value fails here, not silently."""
    named = live.named_secrets(h.effective_values(chart, profile))
    assert set(live.EXTERNAL_SECRETS.get(profile, {})) == named
