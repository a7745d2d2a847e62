"""Scenario 1: bootstrap exactly as argocd/README.md says (its commands, run by the fixture
`bootstrapped`), and what it leads to in Argo CD and on every device's own cluster."""

from __future__ import annotations

import re

import pytest
import yaml

from facepipe_dev import gitops as f
from facepipe_dev.argocd import app_state, synced_and_healthy

pytestmark = [pytest.mark.argocd]


def device_values(fleet: f.Fleet) -> dict[str, dict]:
    return {d: yaml.safe_load(p.read_text()) for d, p in f.device_files(fleet.checkout.path).items()}


def test_the_root_creates_projects_the_cloud_application_and_the_fleet_applicationset(bootstrapped: f.Fleet) -> None:
    argocd = bootstrapped.argocd
    assert {p["metadata"]["name"] for p in argocd.items("appprojects")} >= {"facepipe-root", "facepipe-cloud", "facepipe-edge"}
    assert argocd.get("applications", "face-cloud") is not None
    assert [s["metadata"]["name"] for s in argocd.items("applicationsets")] == [f.APPSET]
    root = argocd.get("applications", "facepipe")
    managed = {(r["kind"], r["name"]) for r in root["status"]["resources"]}
    assert managed >= {("AppProject", "facepipe-edge"), ("Application", "face-cloud"), ("ApplicationSet", f.APPSET)}


def test_one_application_per_device_file_with_its_ring(bootstrapped: f.Fleet) -> None:
    files = f.device_files(bootstrapped.checkout.path)
    apps = bootstrapped.argocd.applications("app.kubernetes.io/part-of=facepipe,facepipe.io/device")
    assert set(apps) == {f"face-edge-{d}" for d in files}
    for device_id, path in files.items():
        app = apps[f"face-edge-{device_id}"]
        assert app["metadata"]["labels"]["facepipe.io/ring"] == path.parent.name
        assert app["spec"]["destination"] == {"name": device_id, "namespace": f.FACEPIPE_NS}
        owner = app["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("ApplicationSet", f.APPSET)


def test_every_application_is_synced_and_healthy_at_the_pushed_commit(bootstrapped: f.Fleet) -> None:
    head = bootstrapped.head()
    for app in bootstrapped.applications().values():
        assert synced_and_healthy(app, head), app_state(app)


@pytest.mark.parametrize("device_id", sorted(f.DEVICE_NODES))
def test_each_device_runs_its_own_values_in_its_own_cluster(bootstrapped: f.Fleet, device_id: str) -> None:
    values = device_values(bootstrapped)[device_id]
    common = yaml.safe_load((bootstrapped.checkout.path / "argocd" / "values" / "edge-common.yaml").read_text())
    cluster = bootstrapped.devices[device_id]
    deployments = f.deployments(cluster)
    expected = {"face-edge-broker", "face-edge-camera", "face-edge-forwarder"}
    if (values.get("logger") or {}).get("enabled", True):
        expected.add("face-edge-logger")
    assert set(deployments) == expected
    for name, deployment in deployments.items():
        assert f.rolled_out(deployment), (name, deployment.get("status"))
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = f.container_env(deployment, container["name"])
            if "FACEPIPE_DEVICE_ID" in env:
                assert env["FACEPIPE_DEVICE_ID"] == device_id, (name, container["name"])
    camera = deployments["face-edge-camera"]
    camera_values = values["camera"]
    assert f.container_env(camera, "camera")["FACEPIPE_SOURCE"] == camera_values.get("source", camera_values.get("device"))
    mode = camera_values.get("accessMode", "privileged") if "device" in camera_values else "none"
    assert f.camera_access(camera["spec"]["template"]["spec"]) == mode
    forwarder = f.container_env(deployments["face-edge-forwarder"], "forwarder")
    assert forwarder["REMOTE_MQTT_HOST"] == common["cloud"]["host"]


@pytest.mark.parametrize("device_id", sorted(f.DEVICE_NODES))
def test_pods_are_scheduled_on_the_devices_own_node_and_ready(bootstrapped: f.Fleet, device_id: str) -> None:
    """kube-scheduler placed every pod on the device's node (nodeSelector, tolerations and the device
    plugin's resource of the device file against the node's labels, taints and capacity)."""
    pods = f.pods(bootstrapped.devices[device_id])
    assert pods, f"no pods on {device_id}"
    for name, pod in pods.items():
        assert pod["spec"].get("nodeName") == device_id, name
        ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        assert ready.get("Ready") == "True", (name, pod["status"])


def pod_essentials(deployment: dict) -> dict:
    """What a rendering decides about a Deployment's pods (the API server adds defaults to the rest)."""
    spec = deployment["spec"]["template"]["spec"]

    def container(c: dict) -> dict:
        env = {e["name"]: e.get("value", f"<{next(iter(e.get('valueFrom') or {'?': 0}))}>") for e in c.get("env", [])}
        return {"name": c["name"], "image": c["image"], "command": c.get("command"), "args": c.get("args"), "env": env}

    return {
        "containers": [container(c) for c in spec["containers"]],
        "initContainers": [container(c) for c in spec.get("initContainers", [])],
        "nodeSelector": spec.get("nodeSelector"),
        "tolerations": spec.get("tolerations"),
    }


def test_the_readmes_local_rendering_of_a_device_file_is_what_argo_cd_deployed(bootstrapped: f.Fleet) -> None:
    """argocd/README.md "Device files": `helm template` with the two values files, run as written,
    renders the pods Argo CD's repo-server rendered and deployed for that device."""
    fleet = bootstrapped
    bin_dir = fleet.workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "helm").exists():
        (bin_dir / "helm").symlink_to(fleet.argocd.tools.helm)  # the repo-server's Helm 4
    block = f.readme_block("Device files", 0)
    (device_id,) = re.findall(r"argocd/devices/\w+/([\w-]+)\.yaml", block)
    output = fleet.shell(block, fleet.cloud.kubeconfig, tools_path=str(bin_dir)).stdout
    local = {d["metadata"]["name"]: d for d in yaml.safe_load_all(output) if d and d["kind"] == "Deployment"}
    live = f.deployments(fleet.devices[device_id])
    assert set(local) == set(live)
    for name, deployment in local.items():
        assert pod_essentials(deployment) == pod_essentials(live[name]), name
