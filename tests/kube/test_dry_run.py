"""`kubectl apply --dry-run=server` of what `helm template` renders: what Argo CD does with a chart
(render, then apply), checked by the live API server's validation, defaulting and admission
without storing anything.

Also the face-edge renders Argo CD makes for each device of argocd/devices/ (release face-edge,
argocd/values/edge-common.yaml, then the device's file), when argocd/ has them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from facepipe_dev import helm as h
from tests.kube import live

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
CASES = [pytest.param(c, p, id=f"{c}:{p}") for c in h.CHART_NAMES for p in h.profile_ids(c)]
DEVICE_FILES = sorted((REPO / "argocd" / "devices").glob("*/*.yaml"))
EDGE_COMMON = REPO / "argocd" / "values" / "edge-common.yaml"


@pytest.fixture(scope="module")
def render_namespace(cluster: live.Cluster) -> str:
    """The namespace `helm template` renders into (facepipe_dev.helm.NAMESPACE), created once."""
    cluster.create_namespace(h.NAMESPACE)
    return h.NAMESPACE


def server_dry_run(kubectl: str, cluster: live.Cluster, text: str, tmp_path: Path, namespace: str) -> subprocess.CompletedProcess[str]:
    """kubectl apply --dry-run=server of a rendering. Its ServiceAccounts are created for real
    first: a dry run stores nothing, and the ServiceAccount admission plugin refuses a pod (the
    `helm test` hook pods) whose ServiceAccount does not exist yet."""
    for doc in h.parse_documents(text):
        if doc["kind"] == "ServiceAccount":
            status, body = cluster.create(doc, namespace)
            assert status in (201, 409), body
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(text)
    cmd = [kubectl, "--kubeconfig", str(cluster.api.kubeconfig), "apply", "--dry-run=server", "--namespace", namespace, "-f", str(rendered)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def assert_accepted(result: subprocess.CompletedProcess[str], docs: list[dict]) -> None:
    assert result.returncode == 0, f"kubectl apply --dry-run=server refused:\n{result.stderr}{result.stdout}"
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(docs), result.stdout


@pytest.mark.parametrize("chart,profile", CASES)
def test_server_dry_run_of_the_rendered_chart(chart, profile, helm4, render_cache, kubectl, cluster, render_namespace, tmp_path) -> None:
    docs = render_cache.get(helm4, chart, profile)
    result = server_dry_run(kubectl, cluster, live.dump_documents(docs), tmp_path, render_namespace)
    assert_accepted(result, docs)


@pytest.mark.parametrize(
    "device_file",
    [pytest.param(f, id=str(f.relative_to(REPO))) for f in DEVICE_FILES]
    or [pytest.param(None, marks=pytest.mark.skip(reason="argocd/ has no device files (argocd/devices/<ring>/<device>.yaml) yet"))],
)
def test_server_dry_run_of_each_argocd_device(device_file, helm4, kubectl, cluster, render_namespace, tmp_path) -> None:
    """What the face-edge ApplicationSet renders for a device (helm template with releaseName
    face-edge, edge-common.yaml then the device file; tests skipped as Argo CD's skipTests does)."""
    values = [EDGE_COMMON, device_file] if EDGE_COMMON.is_file() else [device_file]
    rendered = helm4.template("face-edge", values, release="face-edge", namespace=render_namespace)
    docs = [d for d in rendered if "test" not in (d["metadata"].get("annotations") or {}).get("helm.sh/hook", "")]
    assert docs and len(docs) < len(rendered), "expected the chart's objects and its helm test hook"
    result = server_dry_run(kubectl, cluster, live.dump_documents(docs), tmp_path, render_namespace)
    assert_accepted(result, docs)
