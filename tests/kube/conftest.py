"""Fixtures of the tests against a live API server (marker `kube`): see live.py and apps/facepipe_dev/kube.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facepipe_dev import helm as h
from tests.kube import live


@pytest.fixture(scope="session")
def cluster(kube_api) -> live.Cluster:
    """The session's API server (the `kube_api` fixture) with a `kubernetes` client and discovery, and
    the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), as on a cluster running
    kube-prometheus-stack: the charts' monitoring objects are created and validated by the server."""
    cluster = live.Cluster(kube_api)
    cluster.install_crds(sorted(h.OPERATOR_CRDS.glob("*.yaml")))
    return cluster


def need_helm(helm_binaries: dict[str, h.Helm | None], name: str) -> h.Helm:
    binary = helm_binaries[name]
    if binary is None:
        pytest.skip(f"{name} not found: {h.INSTALL_HINT}")
    return binary


@pytest.fixture(scope="session")
def helm4(helm_binaries) -> h.Helm:
    return need_helm(helm_binaries, "helm4")


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = h.find_kubectl()
    if path is None:
        pytest.skip(f"kubectl not found: {live.KUBECTL_HINT}")
    return str(path)


def release_cases(chart: str, helms: tuple[str, ...] = ("helm3", "helm4")) -> list:
    """pytest params (helm name, profile) for every profile of a chart, with readable ids."""
    return [pytest.param((name, profile), id=f"{name}-{profile}") for name in helms for profile in h.profile_ids(chart)]


def installed(request: pytest.FixtureRequest, cluster: live.Cluster, helm_binaries, chart: str) -> Iterator[live.Release]:
    """Body of a module-scoped release fixture: install (helm, profile) into its own namespace,
    yield the Release, and uninstall it afterwards unless a test did."""
    name, profile = request.param
    helm = need_helm(helm_binaries, name)
    namespace = live.dns_label("i", name, chart.removeprefix("face-"), profile)
    track: list[live.Release] = []
    try:
        yield live.install_profile(helm, cluster, chart, profile, namespace, track=track)
    finally:
        for release in track:
            live.remove(release)


@pytest.fixture
def releases(cluster: live.Cluster) -> Iterator[list[live.Release]]:
    """A list to append the test's releases to (live.install_profile(track=...)): each is
    uninstalled, unless the test did, and its namespace deleted when the test ends."""
    track: list[live.Release] = []
    yield track
    for release in track:
        live.remove(release)
