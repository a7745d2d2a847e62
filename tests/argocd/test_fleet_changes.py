"""Scenario 2: the fleet changes by commits alone. argocd/README.md's "Add a device" (its commands and
its device file, as written), "Change a device" and "Remove a device", each a commit that Argo CD
picks up from git; every other device is left exactly as it was.

The tests run in order on the shared fleet: the device added by the first is the one removed by the
last, so the fleet ends as it started (plus the changed value of the second)."""

from __future__ import annotations

import pytest
import yaml

from facepipe_dev import gitops as f
from facepipe_dev.argocd import app_state, synced_and_healthy
from facepipe_dev.processes import wait_until
from facepipe_dev.simcluster import FakeNode

pytestmark = [pytest.mark.argocd]

NEW_DEVICE = "dock-3"  # the device of the README's "Add a device"
# Its hardware: the README's file asks for the camera from a device plugin (accessMode devicePlugin).
NEW_NODE = FakeNode(NEW_DEVICE, extended_resources={"squat.ai/video": "1"})
PASSWORD = "test-password-dock-3"
CHANGED_DEVICE = "gate-2"
NEW_FILE = f"argocd/devices/canary/{NEW_DEVICE}.yaml"


def others_untouched(before: dict, after: dict, changed: str) -> None:
    """Every device except `changed` has the same Deployments, same uid, same generation."""
    for device_id, workloads in before.items():
        if device_id != changed:
            assert after[device_id] == workloads, f"{device_id} changed though its file did not"


def test_adding_a_device_file_adds_an_application_that_syncs_the_new_device(bootstrapped: f.Fleet, gitops_tools) -> None:
    fleet = bootstrapped
    sim, _ = gitops_tools
    before = fleet.workloads()
    device = fleet.start_device(NEW_DEVICE, NEW_NODE, sim)
    fleet.register(NEW_DEVICE)  # step 1: its k3s, registered under its id ("Behind NAT" A)
    substitutions = {"<password>": PASSWORD}
    fleet.shell(f.readme_block("Add a device", 0, substitutions), fleet.cloud.kubeconfig)  # step 2, on the cloud
    fleet.shell(f.readme_block("Add a device", 1, substitutions), device.kubeconfig)  # step 2, on the device
    device_file = f.readme_yaml_block("Add a device", 0)
    sha = fleet.commit(f"add device {NEW_DEVICE}", lambda root: (root / NEW_FILE).write_text(device_file))  # step 3

    fleet.wait_settled(f"{NEW_DEVICE} added by a commit: every Application Synced and Healthy", sha)
    app = fleet.argocd.get("applications", f"face-edge-{NEW_DEVICE}")
    assert app["metadata"]["labels"]["facepipe.io/ring"] == "canary"
    assert app["spec"]["destination"] == {"name": NEW_DEVICE, "namespace": f.FACEPIPE_NS}
    values = yaml.safe_load(device_file)
    deployments = f.deployments(device)
    assert set(deployments) == {"face-edge-broker", "face-edge-camera", "face-edge-forwarder", "face-edge-logger"}
    assert all(f.rolled_out(d) for d in deployments.values()), {n: d.get("status") for n, d in deployments.items()}
    camera = deployments["face-edge-camera"]
    assert f.container_env(camera, "camera")["FACEPIPE_DEVICE_ID"] == NEW_DEVICE
    assert f.container_env(camera, "camera")["FACEPIPE_SOURCE"] == values["camera"]["device"]
    assert f.camera_access(camera["spec"]["template"]["spec"]) == values["camera"]["accessMode"]
    assert {p["spec"]["nodeName"] for p in f.pods(device).values()} == {NEW_DEVICE}
    namespace = device.api.request("GET", f"/api/v1/namespaces/{f.FACEPIPE_NS}")[1]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == values["podSecurity"]["level"]
    # The cloud broker knows the device's user, and its restart left face-cloud Synced and Healthy.
    users = f.objects(fleet.cloud, f"/api/v1/namespaces/{f.FACEPIPE_NS}/secrets")["facepipe-broker-users"]
    assert NEW_DEVICE in users["data"]
    broker = f.deployments(fleet.cloud)["face-cloud-broker"]
    assert "kubectl.kubernetes.io/restartedAt" in broker["spec"]["template"]["metadata"].get("annotations", {})
    assert f.rolled_out(broker)
    others_untouched(before, fleet.workloads(), NEW_DEVICE)


def test_changing_one_value_in_one_device_file_rolls_only_that_devices_deployment(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    cluster = fleet.devices[CHANGED_DEVICE]
    before = fleet.workloads()
    old_pods = {name for name in f.pods(cluster) if name.startswith("face-edge-camera-")}
    path = f.device_files(fleet.checkout.path)[CHANGED_DEVICE].relative_to(fleet.checkout.path)
    text = (fleet.checkout.path / path).read_text()
    assert "scoreThreshold: 0.75" in text
    sha = fleet.commit(
        f"{CHANGED_DEVICE}: detector score threshold 0.8",
        lambda root: (root / path).write_text(text.replace("scoreThreshold: 0.75", "scoreThreshold: 0.8")),
    )

    def camera_rolled() -> bool:
        camera = f.deployments(cluster)["face-edge-camera"]
        return f.container_env(camera, "camera").get("FACEPIPE_SCORE_THRESHOLD") == "0.8" and f.rolled_out(camera)

    wait_until(camera_rolled, 300, f.PROBE_INTERVAL, f"{CHANGED_DEVICE}'s camera rolled out with the new threshold", fleet.fleet_state)
    fleet.wait_settled(f"after the change of {CHANGED_DEVICE}: every Application Synced and Healthy", sha)
    after = fleet.workloads()
    others_untouched(before, after, CHANGED_DEVICE)
    changed = {name for name, state in after[CHANGED_DEVICE].items() if state != before[CHANGED_DEVICE][name]}
    assert changed == {"face-edge-camera"}
    uid, generation = after[CHANGED_DEVICE]["face-edge-camera"]
    assert uid == before[CHANGED_DEVICE]["face-edge-camera"][0] and generation > before[CHANGED_DEVICE]["face-edge-camera"][1]
    pods = {name: p for name, p in f.pods(cluster).items() if name.startswith("face-edge-camera-")}
    assert pods and not set(pods) & old_pods, f"the camera's pods did not roll: before {old_pods}, now {set(pods)}"
    for name, pod in pods.items():
        assert {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}.get("Ready") == "True", (name, pod["status"])


def test_deleting_a_device_file_removes_its_application_and_prunes_the_device(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    device = fleet.devices[NEW_DEVICE]
    assert f.tracked_objects(device), f"nothing of Argo CD's on {NEW_DEVICE} to prune"
    before = fleet.workloads()
    sha = fleet.commit(f"remove device {NEW_DEVICE}", lambda root: (root / NEW_FILE).unlink())

    wait_until(
        lambda: fleet.argocd.get("applications", f"face-edge-{NEW_DEVICE}") is None,
        300,
        f.PROBE_INTERVAL,
        f"face-edge-{NEW_DEVICE} deleted",
        fleet.fleet_state,
    )
    assert f.tracked_objects(device) == [], "the finalizer left resources on the device"
    wait_until(lambda: not f.pods(device), 120, f.PROBE_INTERVAL, f"{NEW_DEVICE}'s pods gone", lambda: str(sorted(f.pods(device))))
    # Then, as the README says, its cluster registration goes (and here its cluster).
    fleet.unregister(NEW_DEVICE)
    fleet.wait_settled(f"after removing {NEW_DEVICE}: the others Synced and Healthy", sha)
    after = fleet.workloads()
    others_untouched({d: w for d, w in before.items() if d != NEW_DEVICE}, after, NEW_DEVICE)
    for app in fleet.applications().values():
        assert synced_and_healthy(app, sha), app_state(app)
