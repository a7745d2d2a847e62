"""Shared fixtures: real Mosquitto brokers, a real S3 server (Ceph RGW), helm binaries, a Kubernetes API server.

The machinery behind them is the devkit (apps/facepipe_dev). Every fixture starts its processes on free
loopback ports and stops them even when a test fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from facepipe import mqtt_properties
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.paths import SHARED_DATA, fetched_models
from facepipe_dev.rgw import RadosGateway, rgw_available

mqtt_properties.install()  # as facepipe.cli.main does: the tests' own MQTT clients use the same codec


def unavailable(require_switch: str, reason: str) -> NoReturn:
    """Skip a test whose tool is missing, or fail it when CI requires the tool (`require_switch` set)."""
    if os.environ.get(require_switch, "") not in ("", "0"):
        pytest.fail(f"{require_switch} is set but {reason}", pytrace=False)
    pytest.skip(reason)


# --- data and models ---


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared test data (../shared/data): real faces, a labelled set, a video."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def test_video(shared_data: Path) -> Path:
    return shared_data / "video" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model of models/manifest.json, fetched through the real fetch step (mirror: ../shared/models)."""
    return fetched_models(tmp_path_factory.mktemp("models"), os.environ.get("FACEPIPE_MODEL_DIR", ""))


# --- brokers ---


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start Mosquitto brokers on free loopback ports; all are stopped when the test ends."""
    started: list[MosquittoBroker] = []

    def start(name: str = "broker", **kwargs: object) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"{name}-{len(started)}", name=name, **kwargs)  # type: ignore[arg-type]
        started.append(broker)
        return broker.start()

    yield start
    for broker in reversed(started):
        broker.stop()


@pytest.fixture
def edge_broker(broker_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return broker_factory("edge-broker")


@pytest.fixture
def cloud_broker(broker_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return broker_factory("cloud-broker")


# --- S3 (Ceph RADOS Gateway) ---


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadosGateway]:
    """One real single-node Ceph RGW per session; tests use their own buckets."""
    reason = rgw_available()
    if reason:
        pytest.skip(reason)
    with RadosGateway(tmp_path_factory.mktemp("rgw"), conf_overrides={"debug_rgw": "0"}) as gateway:
        yield gateway


@pytest.fixture
def s3_bucket(rgw: RadosGateway, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the session's RGW, named after the test."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    rgw.client().create_bucket(Bucket=name)
    return name


def _mosquitto_clients_hint() -> str | None:
    return None if shutil.which("mosquitto_sub") else "mosquitto_sub not found: apt-get install mosquitto-clients"


@pytest.fixture(scope="session")
def mosquitto_sub() -> str:
    reason = _mosquitto_clients_hint()
    if reason:
        pytest.skip(reason)
    return str(shutil.which("mosquitto_sub"))


# --- helm (charts) ---
# Real helm 3 and helm 4 binaries (`bash .ci/install-helm.sh`, or FACEPIPE_HELM3 / FACEPIPE_HELM4).
# Tests take `helm` (parametrized over both: each test runs once per helm version) and
# `render_cache` (each chart/profile rendered once per helm per session). Imports other than
# pytest are local, so this section stays self-contained.


@pytest.fixture(scope="session")
def helm_binaries():
    """{"helm3": Helm | None, "helm4": Helm | None}: the binaries found, None where absent."""
    from facepipe_dev import helm as support

    found = {}
    for major in (3, 4):
        path = support.find_helm(major)
        found[f"helm{major}"] = support.Helm(f"helm{major}", path) if path else None
    return found


@pytest.fixture(scope="session", params=["helm3", "helm4"])
def helm(request, helm_binaries):
    """One helm binary per parameter; the test skips, naming the installer, when it is absent."""
    from facepipe_dev import helm as support

    binary = helm_binaries[request.param]
    if binary is None:
        pytest.skip(f"{request.param} not found: {support.INSTALL_HINT}")
    return binary


@pytest.fixture(scope="session")
def helm_any(helm_binaries):
    """One helm (4, else 3) for checks where both render the same objects (test_render proves it)."""
    from facepipe_dev import helm as support

    binary = helm_binaries["helm4"] or helm_binaries["helm3"]
    if binary is None:
        pytest.skip(f"no helm found: {support.INSTALL_HINT}")
    return binary


@pytest.fixture(scope="session")
def render_cache():
    """Rendered documents per (helm, chart, profile), computed once per session."""
    from facepipe_dev import helm as support

    return support.RenderCache()


@pytest.fixture(scope="session")
def checkov_binary():
    """The pinned checkov (`bash .ci/install-checkov.sh`, or FACEPIPE_CHECKOV); skips when absent."""
    from facepipe_dev import helm as support

    path = support.find_checkov()
    if path is None:
        pytest.skip("checkov not found: run `bash .ci/install-checkov.sh` (or set FACEPIPE_CHECKOV)")
    return path


# --- kubernetes API server ---
# A real etcd + kube-apiserver (+ kube-controller-manager) v1.36.3 on loopback, started once per
# session for the tests marked `kube` (tests/kube). `bash .ci/install-kube.sh` builds the binaries
# (FACEPIPE_TOOLS_CACHE moves the cache); see apps/facepipe_dev/kube.py. Absent binaries skip the tests
# with the reason; FACEPIPE_REQUIRE_KUBE=1 (CI) turns that skip into a failure.


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory):
    """The session's KubeAPIServer: .server, .kubeconfig, .env(), .create_namespace(), .request()."""
    from facepipe_dev.kube import KubeAPIServer, kube_binaries

    bin_dir, reason = kube_binaries()
    if bin_dir is None:
        unavailable("FACEPIPE_REQUIRE_KUBE", reason)
    with KubeAPIServer(tmp_path_factory.mktemp("kube"), bin_dir) as server:
        yield server


# --- Prometheus ---
# prometheus and promtool 3.16.0 (`bash .ci/install-prometheus.sh`; see apps/facepipe_dev/prometheus.py).
# Absent binaries skip the monitoring tests with the reason; FACEPIPE_REQUIRE_PROMETHEUS=1 (CI)
# turns that skip into a failure.


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """The directory holding the prometheus and promtool binaries."""
    from facepipe_dev import prometheus as support

    directory, reason = support.binaries()
    if directory is None:
        unavailable("FACEPIPE_REQUIRE_PROMETHEUS", reason)
    return directory


# --- a real browser ---
# Debian's Chromium driven by Playwright (apps/facepipe_dev/browser.py), one browser per session; every
# test gets its own context (fresh cookies and storage). Missing: skipped with the command that
# installs it; FACEPIPE_REQUIRE_BROWSER=1 (CI) turns that skip into a failure.


@pytest.fixture(scope="session")
def browser():
    from facepipe_dev import browser as support

    reason = support.unavailable_reason()
    if reason:
        unavailable("FACEPIPE_REQUIRE_BROWSER", reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=support.chromium_path(), headless=True, args=support.ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """The test's output folder for screenshots (test-output/<test>/, or under FACEPIPE_TEST_OUTPUT)."""
    from facepipe_dev import browser as support

    folder = support.OUTPUT / "".join(c if c.isalnum() or c in "-_." else "-" for c in request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- Argo CD (the GitOps tier, tests/argocd) ---
# Argo CD v3.6.1 (`bash .ci/install-argocd.sh`), KWOK and kube-scheduler (`bash .ci/install-kwok.sh`,
# `bash .ci/install-kube.sh kube-scheduler`), Debian's redis-server and Helm 4; see
# apps/facepipe_dev/argocd.py and simcluster.py. Absent tools skip the tier with the reason;
# FACEPIPE_REQUIRE_ARGOCD=1 (CI) turns that skip into a failure.


@pytest.fixture(scope="session")
def gitops_tools():
    """(SimTools, ArgoTools): the simulated clusters' and Argo CD's binaries."""
    from facepipe_dev.argocd import ArgoTools
    from facepipe_dev.simcluster import SimTools

    sim, reason = SimTools.find()
    argo, argo_reason = ArgoTools.find()
    if sim is None or argo is None:
        unavailable("FACEPIPE_REQUIRE_ARGOCD", "; ".join(r for r in (reason, argo_reason) if r))
    return sim, argo


# --- containers (podman) ---
# The application image built from apps/Dockerfile once per session (FROM the local debootstrap
# base; `bash .ci/install-podman.sh`), a Mosquitto image on the same base, and a report of build
# time, image size and start-up times printed at the end of the run. Skips only where podman is
# absent (fails instead when FACEPIPE_REQUIRE_PODMAN is set). Imports are local.

_CONTAINER_REPORT: list[str] = []


@pytest.fixture(scope="session")
def container_report() -> list[str]:
    """Lines appended here are printed in the test run's closing summary."""
    return _CONTAINER_REPORT


@pytest.fixture(scope="session")
def podman():
    from facepipe_dev import podman as support

    binary = support.find_podman()
    if binary is None:
        reason = f"podman not found: {support.INSTALL_HINT}"
        unavailable("FACEPIPE_REQUIRE_PODMAN", reason)
    return support.setup(binary)


@pytest.fixture(scope="session")
def app_image(podman, container_report: list[str]) -> str:
    """localhost/facepipe:test, built once per session from the real apps/Dockerfile."""
    from facepipe_dev import podman as support

    built = support.build_app_image(podman)
    container_report.append(f"app image {built.describe()}")
    return built.image


@pytest.fixture(scope="session")
def mosquitto_image(podman, container_report: list[str]) -> str:
    from facepipe_dev import podman as support

    built = support.build_mosquitto_image(podman)
    container_report.append(f"broker image {built.describe()}")
    return built.image


def pytest_terminal_summary(terminalreporter) -> None:
    if _CONTAINER_REPORT:
        terminalreporter.section("container tier")
        for line in _CONTAINER_REPORT:
            terminalreporter.write_line(line)
