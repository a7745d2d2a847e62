"""Shared fixtures: real Mosquitto brokers, a real S3 server (Ceph RGW), helm binaries, a Kubernetes API server.

Every fixture starts its processes on free loopback ports and stops them even when a test fails.
"""

from __future__ import annotations

# --- helm (charts) ---
# Real helm 3 and helm 4 binaries (`bash .ci/install-helm.sh`, or FACEPIPE_HELM3 / FACEPIPE_HELM4).
# Tests take `helm` (parametrized over both: each test runs once per helm version) and
# `render_cache` (each chart/profile rendered once per helm per session). Imports other than
# pytest are local, so this section stays self-contained.
import pytest


@pytest.fixture(scope="session")
def helm_binaries():
    """{"helm3": Helm | None, "helm4": Helm | None}: the binaries found, None where absent."""
    from tests.support import helm as support

    found = {}
    for major in (3, 4):
        path = support.find_helm(major)
        found[f"helm{major}"] = support.Helm(f"helm{major}", path) if path else None
    return found


@pytest.fixture(scope="session", params=["helm3", "helm4"])
def helm(request, helm_binaries):
    """One helm binary per parameter; the test skips, naming the installer, when it is absent."""
    from tests.support import helm as support

    binary = helm_binaries[request.param]
    if binary is None:
        pytest.skip(f"{request.param} not found: {support.INSTALL_HINT}")
    return binary


@pytest.fixture(scope="session")
def render_cache():
    """Rendered documents per (helm, chart, profile), computed once per session."""
    from tests.support import helm as support

    return support.RenderCache()


@pytest.fixture(scope="session")
def checkov_binary():
    """The pinned checkov (`bash .ci/install-checkov.sh`, or FACEPIPE_CHECKOV); skips when absent."""
    from tests.support import helm as support

    path = support.find_checkov()
    if path is None:
        pytest.skip("checkov not found: run `bash .ci/install-checkov.sh` (or set FACEPIPE_CHECKOV)")
    return path
