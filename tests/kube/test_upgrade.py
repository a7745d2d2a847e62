"""helm upgrade with changed values, the checksum roll, helm rollback, against the live API server.

Each test installs its own release in its own namespace. "Pod template" below is the template as
the server stored it (after defaulting), read back with the `kubernetes` client: what a Deployment
or StatefulSet controller compares to decide whether to roll the pods.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from facepipe_dev import helm as h
from tests.kube import checks, live
from tests.kube.conftest import need_helm

pytestmark = pytest.mark.kube

HELMS = ["helm4", "helm3"]
APP_IMAGE = "ghcr.io/facepipe/facepipe"

# face-edge: a new cloud host, a new camera device, a new image tag, and a config change (the edge
# broker's mosquitto.conf, which the broker's pod template carries a checksum of).
EDGE_PROFILE = "edge-usb-privileged"
EDGE_CHANGES = (
    "cloud.host=mqtt2.faces.example.com",
    "camera.device=/dev/video1",
    "image.tag=9.9.9",
    "broker.maxQueuedMessages=30000",
)
# face-cloud: a new image tag, more processors, and a broker config change.
CLOUD_PROFILE = "default"
CLOUD_CHANGES = ("image.tag=9.9.9", "processor.replicaCount=2", "broker.maxQueuedMessages=200000")


def namespace(*parts: str) -> str:
    return live.dns_label("u", *parts)


def upgrade(release: live.Release, *sets: str) -> None:
    """helm upgrade with the profile's values plus `sets`: it must succeed, with no immutable field."""
    files, default_sets = h.profile_args(release.chart, release.profile)
    result = release.upgrade(files, [*default_sets, *sets], check=False)
    output = result.stderr + result.stdout
    assert result.returncode == 0 and "immutable" not in output, f"helm upgrade failed:\n{output}"


def app_images(release: live.Release) -> set[str]:
    return {
        c.image
        for w in release.cluster.workloads(release.namespace)
        for c in [*(w.spec.template.spec.init_containers or []), *w.spec.template.spec.containers]
        if c.image.startswith(APP_IMAGE)
    }


def annotations(templates: dict[str, dict[str, Any]], component_suffix: str) -> dict[str, str]:
    (key,) = [k for k in templates if k.endswith(f"-{component_suffix}")]
    return templates[key]["metadata"].get("annotations") or {}


def assert_history(release: live.Release, expected: list[tuple[int, str]]) -> None:
    history = [(r["revision"], r["status"]) for r in release.history()]
    assert history == expected


# --- face-edge ----------------------------------------------------------------------------------


@pytest.mark.parametrize("helm_name", HELMS)
def test_edge_upgrade_changed_values_then_rollback(helm_name, helm_binaries, cluster, releases) -> None:
    helm = need_helm(helm_binaries, helm_name)
    release = live.install_profile(helm, cluster, "face-edge", EDGE_PROFILE, namespace(helm_name, "edge"), track=releases)
    before = checks.templates(release)
    values_before = release.user_values()
    assert app_images(release) == {f"{APP_IMAGE}:{app_version('face-edge')}"}

    upgrade(release, *EDGE_CHANGES)
    after = checks.templates(release)
    checks.assert_edge_wiring(release, checks.effective(release, *EDGE_CHANGES))  # new host, new device
    assert app_images(release) == {f"{APP_IMAGE}:9.9.9"}
    checks.assert_referenced_secrets_exist(release)
    # The config change rolls the broker: its checksum annotation, hence its pod template, changed.
    assert annotations(after, "broker")["checksum/config"] != annotations(before, "broker")["checksum/config"]
    assert {k for k in before if before[k] != after[k]} == set(before), "every pod template changes (image tag)"

    release.rollback(1)
    assert release.user_values() == values_before
    assert release.user_values(3) == release.user_values(1)
    checks.assert_edge_wiring(release, h.effective_values("face-edge", EDGE_PROFILE))
    assert checks.templates(release) == before, "rollback restores revision 1's pod templates exactly"
    assert_history(release, [(1, "superseded"), (2, "superseded"), (3, "deployed")])


def test_edge_upgrade_across_access_modes_and_spool_types(helm4, cluster, releases) -> None:
    """privileged -> hostDevice -> devicePlugin, the spool from a PVC to hostPath and back: every
    step is an in-place update (no immutable field), and a dropped PVC is deleted."""
    release = live.install_profile(helm4, cluster, "face-edge", EDGE_PROFILE, namespace("helm4", "edge-modes"), track=releases)
    spool_pvc = ("PersistentVolumeClaim", f"{release.name}-face-edge-forwarder-spool")
    assert spool_pvc in cluster.namespace_contents(release.namespace)

    steps = [
        ("camera.accessMode=hostDevice", "forwarder.spool.type=hostPath", "forwarder.spool.volumePermissions.enabled=true"),
        ("camera.accessMode=devicePlugin", "forwarder.spool.type=emptyDir"),
        ("camera.accessMode=privileged", "forwarder.spool.type=persistentVolumeClaim"),
    ]
    for sets in steps:
        upgrade(release, *sets)
        values = checks.effective(release, *sets)
        checks.assert_edge_wiring(release, values)
        want = values["forwarder"]["spool"]["type"] == "persistentVolumeClaim"
        contents = wait_for_presence(cluster, release.namespace, spool_pvc, want)
        assert (spool_pvc in contents) == want, (sets, contents)


def wait_for_presence(cluster: live.Cluster, ns: str, obj: tuple[str, str], want: bool, timeout: float = 30.0) -> list[tuple[str, str]]:
    """The namespace's contents once obj's presence is `want` (a deleted PVC waits for its
    protection finalizer), or after the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        contents = cluster.namespace_contents(ns)
        if (obj in contents) == want or time.monotonic() > deadline:
            return contents
        time.sleep(0.25)


def app_version(chart: str) -> str:
    return str(yaml.safe_load((h.chart_dir(chart) / "Chart.yaml").read_text())["appVersion"])


# --- face-cloud ---------------------------------------------------------------------------------


@pytest.mark.parametrize("helm_name", HELMS)
def test_cloud_upgrade_changed_values_then_rollback(helm_name, helm_binaries, cluster, releases) -> None:
    """The default profile: the chart generates the broker's TLS certificate and the users'
    passwords; an upgrade must keep them (lookup), roll what reads the changed config, and a
    rollback restore revision 1."""
    helm = need_helm(helm_binaries, helm_name)
    release = live.install_profile(helm, cluster, "face-cloud", CLOUD_PROFILE, namespace(helm_name, "cloud"), track=releases)
    tls_name, users_name = f"{release.name}-face-cloud-broker-tls", f"{release.name}-face-cloud-broker-users"
    tls, users = cluster.secret_data(release.namespace, tls_name), cluster.secret_data(release.namespace, users_name)
    assert set(tls) == {"tls.crt", "tls.key", "ca.crt"} and "processor" in users
    before = checks.templates(release)
    values_before = release.user_values()

    upgrade(release, *CLOUD_CHANGES)
    assert cluster.secret_data(release.namespace, tls_name) == tls, "the generated certificate must survive an upgrade"
    assert cluster.secret_data(release.namespace, users_name) == users, "the generated passwords must survive an upgrade"
    after = checks.templates(release)
    checks.assert_cloud_wiring(release, checks.effective(release, *CLOUD_CHANGES))
    checks.assert_referenced_secrets_exist(release)
    assert app_images(release) == {f"{APP_IMAGE}:9.9.9"}
    processors = checks.workload(release, "processor")
    assert processors.spec.replicas == 2
    assert annotations(after, "broker")["checksum/config"] != annotations(before, "broker")["checksum/config"]

    release.rollback(1)
    assert release.user_values() == values_before
    assert checks.workload(release, "processor").spec.replicas == 1
    assert app_images(release) == {f"{APP_IMAGE}:{app_version('face-cloud')}"}
    assert checks.templates(release) == before, "rollback restores revision 1's pod templates exactly"
    assert cluster.secret_data(release.namespace, tls_name) == tls
    assert cluster.secret_data(release.namespace, users_name) == users
    assert_history(release, [(1, "superseded"), (2, "superseded"), (3, "deployed")])


# --- an upgrade that changes nothing rolls nothing ---------------------------------------------------

# Before 52f56947 the face-cloud profiles whose TLS certificate or passwords the chart generates
# failed here: the checksum annotations hashed a second random rendering of the Secrets, so the
# first upgrade restarted the broker (Recreate: an outage) and the processors.
NOOP_CASES = [pytest.param(c, p, id=f"{c}:{p}") for c in h.CHART_NAMES for p in h.profile_ids(c)]


@pytest.mark.parametrize("chart,profile", NOOP_CASES)
def test_noop_upgrade_keeps_every_pod_template(chart, profile, helm4, cluster, releases) -> None:
    """helm upgrade with the same values right after install: no pod template changes, so no pod
    restarts (the face-cloud broker is Recreate: a restart is an outage for every device)."""
    release = live.install_profile(helm4, cluster, chart, profile, namespace("noop", chart.removeprefix("face-"), profile), track=releases)
    before = checks.templates(release)
    upgrade(release)
    after = checks.templates(release)
    changed = {
        name: sorted(
            k
            for k in set(annotations_of(before[name])) | set(annotations_of(after[name]))
            if annotations_of(before[name]).get(k) != annotations_of(after[name]).get(k)
        )
        for name in before
        if before[name] != after[name]
    }
    assert changed == {}, f"pod templates changed by a no-op upgrade (changed annotations): {changed}"


def annotations_of(template: dict[str, Any]) -> dict[str, str]:
    return template["metadata"].get("annotations") or {}


# --- a release made by helm 3, carried on by helm 4 ------------------------------------------------


def test_helm3_release_upgraded_rolled_back_and_uninstalled_by_helm4(helm_binaries, cluster, releases) -> None:
    """An operator who installed with helm 3 and now has helm 4: upgrade (with changed values),
    rollback and uninstall of the same release all work, with no field-manager conflict."""
    helm3, helm4 = need_helm(helm_binaries, "helm3"), need_helm(helm_binaries, "helm4")
    ns = namespace("helm3-to-4", "edge")
    first = live.install_profile(helm3, cluster, "face-edge", EDGE_PROFILE, ns, track=releases)
    before = checks.templates(first)
    release = live.Release(helm4, cluster, "face-edge", ns, profile=EDGE_PROFILE, made_secrets=first.made_secrets)
    releases.append(release)

    upgrade(release, *EDGE_CHANGES)
    checks.assert_edge_wiring(release, checks.effective(release, *EDGE_CHANGES))
    assert app_images(release) == {f"{APP_IMAGE}:9.9.9"}
    release.rollback(1)
    assert checks.templates(release) == before
    kept = release.kept_objects()
    release.uninstall()
    first.uninstalled = True
    left = cluster.wait_for_empty(ns, allowed={("Secret", s) for s in release.made_secrets} | kept)
    assert left == [], left


# --- install again after uninstall ------------------------------------------------------------------


@pytest.mark.parametrize("helm_name", HELMS)
def test_cloud_reinstall_adopts_the_kept_faces_pvc(helm_name, helm_binaries, cluster, releases) -> None:
    """helm uninstall keeps the processors' faces PVC (helm.sh/resource-policy: keep); installing
    the same release again into the namespace must succeed and take that claim over (same uid: the
    stored faces are still there), not fail on an object that already exists."""
    helm = need_helm(helm_binaries, helm_name)
    release = live.install_profile(helm, cluster, "face-cloud", "cloud-pvc", namespace(helm_name, "reinstall"), track=releases)
    pvc_name = f"{release.name}-face-cloud-processor-faces"
    uid = cluster.core.read_namespaced_persistent_volume_claim(pvc_name, release.namespace).metadata.uid
    assert ("PersistentVolumeClaim", pvc_name) in release.kept_objects()
    release.uninstall()
    assert cluster.core.read_namespaced_persistent_volume_claim(pvc_name, release.namespace).metadata.uid == uid

    again = live.Release(helm, cluster, "face-cloud", release.namespace, profile="cloud-pvc")
    releases.append(again)
    files, sets = h.profile_args("face-cloud", "cloud-pvc")
    result = again.install(files, sets, check=False)
    assert result.returncode == 0, f"reinstall refused:\n{result.stderr}"
    assert cluster.core.read_namespaced_persistent_volume_claim(pvc_name, again.namespace).metadata.uid == uid
    checks.assert_deployed_and_on_server(again)
