"""Fixtures of the GitOps tier: one fleet per session (facepipe_dev.gitops), bootstrapped as argocd/README.md says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facepipe_dev import gitops as f

BOOTSTRAP_TIMEOUT = 600.0
# The scenarios share one fleet and each leaves it as it found it or as the next expects, so they
# run in the order: bootstrap first, then the cloud, fleet changes by commits, an upgrade
# through the rings, drift, bad input, a device moved to its own Argo CD. Modules not listed run
# after them.
MODULE_ORDER = (
    "test_bootstrap",
    "test_cloud",
    "test_fleet_changes",
    "test_rollout",
    "test_drift",
    "test_bad_input",
    "test_standalone",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.path.stem
        if item.path.parent.name != "argocd" or module not in MODULE_ORDER:
            return -1 if item.path.parent.name != "argocd" else len(MODULE_ORDER)
        return MODULE_ORDER.index(module)

    items.sort(key=rank)  # stable: the order inside a module and of other tiers is kept


@pytest.fixture(scope="session")
def fleet(gitops_tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[f.Fleet]:
    """Git server, cloud cluster, one cluster per device of argocd/devices/, registered; not bootstrapped."""
    sim, argo = gitops_tools
    started = f.start_fleet(tmp_path_factory.mktemp("gitops"), sim, argo, f.DEVICE_NODES)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def bootstrapped(fleet: f.Fleet) -> f.Fleet:
    """The README's bootstrap done, and every Application it leads to Synced and Healthy."""
    f.bootstrap(fleet)
    fleet.wait_settled("every Application Synced and Healthy after the bootstrap", timeout=BOOTSTRAP_TIMEOUT)
    return fleet
