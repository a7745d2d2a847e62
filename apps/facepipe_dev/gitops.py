"""A GitOps fleet on loopback: a cloud cluster running Argo CD, one cluster per edge device, and the
git repository Argo CD reads (tests/argocd's fixtures).

`Fleet` holds them and does what an operator does outside git: register a device's cluster with Argo
CD (the declarative cluster Secret of argocd/README.md, "Behind NAT" A), make the Secrets the README
says must exist before the first sync, commit and push. Waiting is on outcomes (an Application's
status, a Deployment's rollout), with generous deadlines and the state so far in the failure message.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facepipe_dev.argocd import NAMESPACE, ArgoCD, ArgoTools, app_state, synced_and_healthy
from facepipe_dev.gitserver import Checkout, GitHttpServer, git_env
from facepipe_dev.helm import find_kubectl
from facepipe_dev.paths import REPO
from facepipe_dev.processes import wait_until
from facepipe_dev.simcluster import FakeNode, SimTools, SimulatedCluster

README = REPO / "argocd" / "README.md"
PLACEHOLDER_URL = "https://git.example.com/CHANGE-ME/facepipe.git"
FACEPIPE_NS = "facepipe"
EDGE_PROJECT = "facepipe-edge"
APPSET = "face-edge"
PROBE_INTERVAL = 1.0  # seconds between two looks at the clusters (each look is a few API calls)

# The devices' hardware, as their kubelets would register it (argocd/devices/*/<id>.yaml describe
# what each device file asks for; these say what the device has).
DEVICE_NODES: dict[str, FakeNode] = {
    # Raspberry Pi 4, stock k3s, USB webcam.
    "pi-kitchen": FakeNode("pi-kitchen", arch="arm64", cpu="4", memory="4Gi"),
    # x86 box at the gate, reserved for facepipe by a taint, labelled for its camera.
    "gate-2": FakeNode(
        "gate-2",
        labels={"facepipe.io/camera": "gate-2"},
        taints=({"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"},),
    ),
    # arm64 board whose camera a device plugin (squat.ai's generic-device-plugin) advertises.
    "lobby-01": FakeNode("lobby-01", arch="arm64", extended_resources={"squat.ai/video": "1"}),
    # x86 mini PC reading an IP camera's RTSP stream.
    "parking-north": FakeNode("parking-north"),
}
CLOUD_NODE = FakeNode("cloud-vm", cpu="4", memory="16Gi")


def device_files(root: Path) -> dict[str, Path]:
    """deviceId -> device file (argocd/devices/<ring>/<deviceId>.yaml) under a checkout."""
    found = {}
    for path in sorted((root / "argocd" / "devices").glob("*/*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        found[values.get("deviceId", path.stem)] = path
    return found


@dataclass
class Fleet:
    """Everything of one GitOps test session."""

    workdir: Path
    git_server: GitHttpServer
    checkout: Checkout
    repo_url: str
    cloud: SimulatedCluster
    argocd: ArgoCD
    devices: dict[str, SimulatedCluster] = field(default_factory=dict)
    kubectl: Path = field(default_factory=lambda: find_kubectl() or Path("kubectl"))

    # --- devices -------------------------------------------------------------------------------

    def start_device(self, device_id: str, node: FakeNode, tools: SimTools) -> SimulatedCluster:
        cluster = SimulatedCluster(device_id, self.workdir / "devices" / device_id, tools, [node]).start()
        self.devices[device_id] = cluster
        return cluster

    def register(self, device_id: str) -> None:
        """What "Behind NAT" A describes: a ServiceAccount on the device with a token, and on the
        cloud a declarative cluster Secret named after the device, in the edge project."""
        device = self.devices[device_id].api
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "argocd-manager", "namespace": "kube-system"}}
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "argocd-manager"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "argocd-manager", "namespace": "kube-system"}],
        }
        token_secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": "argocd-manager-token",
                "namespace": "kube-system",
                "annotations": {"kubernetes.io/service-account.name": "argocd-manager"},
            },
        }
        for path, doc in (
            ("/api/v1/namespaces/kube-system/serviceaccounts", sa),
            ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding),
            ("/api/v1/namespaces/kube-system/secrets", token_secret),
        ):
            status, body = device.request("POST", path, doc)
            assert status in (201, 409), f"{device_id}: {path}: HTTP {status}: {body}"

        def token() -> str | None:
            status, body = device.request("GET", "/api/v1/namespaces/kube-system/secrets/argocd-manager-token")
            value = ((body.get("data") or {}).get("token")) if status == 200 else None
            return base64.b64decode(value).decode() if value else None

        bearer = wait_until(token, 60, PROBE_INTERVAL, f"{device_id}: token of argocd-manager")
        config = {"bearerToken": bearer, "tlsClientConfig": {"caData": base64.b64encode(device.ca_cert.read_bytes()).decode()}}
        # The README's own Secret, for this device: its name, its API address, its credentials.
        secret = yaml.safe_load(readme_yaml_block("A. A central Argo CD with the devices registered as clusters (push)"))
        assert secret["stringData"]["project"] == EDGE_PROJECT, secret
        secret["metadata"]["name"] = f"cluster-{device_id}"
        secret["stringData"].update({"name": device_id, "server": device.server, "config": json.dumps(config)})
        status, body = self.cloud.api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
        assert status == 201, f"cluster Secret of {device_id}: HTTP {status}: {body}"

    def device_secrets(self, device_id: str, values: Mapping[str, Any]) -> None:
        """The Secrets a device file names (cloud.auth.existingSecret, broker.auth.existingSecret),
        made on the device before its first sync, as "Add a device" says."""
        names = [((values.get(k) or {}).get("auth") or {}).get("existingSecret") for k in ("cloud", "broker")]
        self.kubectl_run(self.devices[device_id].kubeconfig, "create", "namespace", FACEPIPE_NS, check=False)
        for name in filter(None, names):
            self.kubectl_run(
                self.devices[device_id].kubeconfig,
                "-n", FACEPIPE_NS, "create", "secret", "generic", name,
                f"--from-literal=username={device_id}", "--from-literal=password=test-password-" + device_id,
            )  # fmt: skip

    # --- git -----------------------------------------------------------------------------------

    def commit(self, message: str, change: Callable[[Path], None]) -> str:
        """Change the checkout, commit everything, push to the server; the new commit's sha."""
        change(self.checkout.path)
        sha = self.checkout.commit_all(message)
        self.checkout.push()
        return sha

    def head(self) -> str:
        return self.checkout.head()

    # --- commands --------------------------------------------------------------------------------

    def kubectl_run(self, kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=False, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
        return result

    def shell(self, script: str, kubeconfig: Path, *, tools_path: str = "") -> subprocess.CompletedProcess[str]:
        """Run a README snippet with bash in the checkout, against `kubeconfig`'s cluster."""
        env = {**git_env(), "KUBECONFIG": str(kubeconfig), "PATH": f"{tools_path}:{self.kubectl.parent}:/usr/local/bin:/usr/bin:/bin"}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=self.checkout.path, env=env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise AssertionError(
                f"README snippet failed (exit {result.returncode}):\n{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def unregister(self, device_id: str) -> None:
        """The last step of "Remove a device": its cluster Secret goes, then its cluster is stopped."""
        status, body = self.cloud.api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/cluster-{device_id}")
        assert status == 200, f"deleting the cluster Secret of {device_id}: HTTP {status}: {body}"
        self.devices.pop(device_id).stop()

    # --- Argo CD state ------------------------------------------------------------------------------

    def applications(self) -> dict[str, dict[str, Any]]:
        return self.argocd.applications()

    def expected_applications(self) -> set[str]:
        """The root, face-cloud and one Application per device that has a cluster."""
        return {"facepipe", "face-cloud", *(f"face-edge-{d}" for d in self.devices)}

    def settled(self, revision: str | None = None) -> bool:
        """Exactly the expected Applications exist, each Synced (at `revision`) and Healthy."""
        apps = self.applications()
        expected = self.expected_applications()
        return set(apps) == expected and all(synced_and_healthy(apps[name], revision) for name in expected)

    def wait_settled(self, what: str, revision: str | None = None, timeout: float = 600.0) -> None:
        wait_until(lambda: self.settled(revision), timeout, PROBE_INTERVAL, what, self.fleet_state)

    def appset_conditions(self) -> dict[str, dict[str, Any]]:
        """type -> condition of the face-edge ApplicationSet."""
        appset = self.argocd.get("applicationsets", APPSET) or {}
        return {c["type"]: c for c in (appset.get("status") or {}).get("conditions") or []}

    def workloads(self) -> dict[str, dict[str, tuple[str, int]]]:
        """device -> Deployment -> (uid, generation): what a sync that touches a device changes."""
        return {
            device_id: {name: (d["metadata"]["uid"], d["metadata"]["generation"]) for name, d in deployments(cluster).items()}
            for device_id, cluster in self.devices.items()
        }

    def fleet_state(self) -> str:
        """Every Application and ApplicationSet in a few lines, and the components' last warnings."""
        apps = "\n".join(app_state(a) for a in self.applications().values()) or "(no Applications)"
        appsets = "\n".join(
            f"ApplicationSet {s['metadata']['name']}: "
            + "; ".join(
                f"{c.get('type')}={c.get('status')} {c.get('message', '')[:300]}" for c in (s.get("status") or {}).get("conditions") or []
            )
            for s in self.argocd.items("applicationsets")
        )
        return f"{apps}\n{appsets}\n{self.argocd.warnings()}"

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda c: c.stop(), self.devices.values()))
        self.argocd.stop()
        self.cloud.stop()
        self.git_server.stop()


def readme_blocks(path: Path = README, languages: tuple[str, ...] = ("sh", "bash", "shell")) -> list[tuple[str, int, str]]:
    """Every fenced block of those languages in a markdown file: (heading it is under, its index
    among that heading's blocks of those languages, its text)."""
    blocks: list[tuple[str, int, str]] = []
    heading, counts = "", dict[str, int]()
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"#{1,6} ", line):
            heading = line.lstrip("#").strip()
        elif line.strip().startswith("```") and line.strip()[3:] in languages:
            indent = line[: len(line) - len(line.lstrip())]
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i][len(indent) :])
                i += 1
            index = counts.get(heading, 0)
            counts[heading] = index + 1
            blocks.append((heading, index, "\n".join(body) + "\n"))
        i += 1
    return blocks


def readme_block(heading: str, index: int = 0, substitutions: Mapping[str, str] | None = None) -> str:
    """The README's sh block `index` under `heading`, with `substitutions` (each must occur)."""
    for h, i, text in readme_blocks():
        if h == heading and i == index:
            for old, new in (substitutions or {}).items():
                assert old in text, f"argocd/README.md, {heading!r} block {index}: {old!r} no longer in it:\n{text}"
                text = text.replace(old, new)
            return text
    raise AssertionError(f"argocd/README.md has no sh block {index} under {heading!r}")


def readme_yaml_block(heading: str, index: int = 0) -> str:
    """The README's yaml block `index` under `heading` (e.g. the device file of "Add a device")."""
    for h, i, text in readme_blocks(languages=("yaml",)):
        if h == heading and i == index:
            return text
    raise AssertionError(f"argocd/README.md has no yaml block {index} under {heading!r}")


def start_fleet(workdir: Path, sim: SimTools, argo_tools: ArgoTools, devices: Mapping[str, FakeNode]) -> Fleet:
    """Git server with a snapshot of the working tree, the cloud cluster, one cluster per device.
    Nothing of the README's bootstrap is done yet."""
    server = GitHttpServer(workdir / "git").start()
    started: list[Any] = [server]
    try:
        bare = server.create("facepipe.git")
        checkout = Checkout.snapshot(REPO, workdir / "checkout", bare)
        with ThreadPoolExecutor(max_workers=3) as pool:
            cloud_future = pool.submit(lambda: SimulatedCluster("cloud", workdir / "cloud", sim, [CLOUD_NODE]).start())
            cloud = cloud_future.result()
            started.append(cloud)
            argocd = ArgoCD(cloud.api, workdir / "argocd", argo_tools, find_kubectl() or Path("kubectl"))
            fleet = Fleet(workdir, server, checkout, server.url("facepipe.git"), cloud, argocd)
            started = [fleet]
            for future in [pool.submit(fleet.start_device, d, node, sim) for d, node in devices.items()]:
                future.result()
        return fleet
    except BaseException:
        for item in reversed(started):
            item.stop()
        raise


POLL_SECONDS = 10  # how often Argo CD looks at git and the clusters in the tests (default 180)
INSTALL_URL = "https://raw.githubusercontent.com/argoproj/argo-cd/v3.6.1/manifests/core-install.yaml"
FORK_URL = "https://github.com/acme/facepipe.git"  # the example fork of "Point it at your repository"


def cloud_secrets(fleet: Fleet, device_ids: list[str]) -> None:
    """Bootstrap step 3: the cloud's Secrets, made outside git (names from argocd/values/cloud.yaml)."""
    from facepipe_dev.pki import LocalPKI

    kubeconfig = fleet.cloud.kubeconfig
    fleet.kubectl_run(kubeconfig, "create", "namespace", FACEPIPE_NS, check=False)
    users = [f"--from-literal={user}=test-password-{user}" for user in ["processor", *device_ids]]
    fleet.kubectl_run(kubeconfig, "-n", FACEPIPE_NS, "create", "secret", "generic", "facepipe-broker-users", *users)
    pki = LocalPKI(fleet.workdir / "cloud-pki")
    server = pki.server()
    fleet.kubectl_run(
        kubeconfig,
        "-n", FACEPIPE_NS, "create", "secret", "generic", "mqtt-faces-example-com-tls",
        f"--from-file=tls.crt={server.cert_file}", f"--from-file=tls.key={server.key_file}", f"--from-file=ca.crt={pki.ca_file}",
    )  # fmt: skip


def bootstrap(fleet: Fleet) -> None:
    """argocd/README.md from "Point it at your repository" to "Bootstrap" step 4, its commands run as
    written (the fork's URL is the test's git server, the install manifest the built release's)."""
    fleet.shell(readme_block("Point it at your repository", 0, {FORK_URL: fleet.repo_url}), fleet.cloud.kubeconfig)
    assert PLACEHOLDER_URL not in (fleet.checkout.path / "argocd" / "root.yaml").read_text()
    fleet.shell(readme_block("Bootstrap (once)", 0, {INSTALL_URL: str(fleet.argocd.install_manifest)}), fleet.cloud.kubeconfig)
    fleet.argocd.configure(POLL_SECONDS)
    fleet.argocd.start()
    for device_id in fleet.devices:  # "Behind NAT" A: each device's cluster, registered by name
        fleet.register(device_id)
    fleet.shell(readme_block("Bootstrap (once)", 1), fleet.cloud.kubeconfig)
    cloud_secrets(fleet, sorted(fleet.devices))
    for device_id, path in device_files(fleet.checkout.path).items():
        if device_id in fleet.devices:
            fleet.device_secrets(device_id, yaml.safe_load(path.read_text()) or {})
    fleet.shell(readme_block("Bootstrap (once)", 2), fleet.cloud.kubeconfig)


# --- what is on a cluster -------------------------------------------------------------------------


def objects(cluster: SimulatedCluster, path: str) -> dict[str, dict[str, Any]]:
    """name -> object of a list (e.g. "/apis/apps/v1/namespaces/facepipe/deployments")."""
    status, body = cluster.api.request("GET", path)
    if status == 404:
        return {}
    assert status == 200, f"{cluster.name}: GET {path}: HTTP {status}: {body}"
    return {item["metadata"]["name"]: item for item in body.get("items", [])}


def deployments(cluster: SimulatedCluster, namespace: str = FACEPIPE_NS) -> dict[str, dict[str, Any]]:
    return objects(cluster, f"/apis/apps/v1/namespaces/{namespace}/deployments")


def pods(cluster: SimulatedCluster, namespace: str = FACEPIPE_NS) -> dict[str, dict[str, Any]]:
    return objects(cluster, f"/api/v1/namespaces/{namespace}/pods")


def container_env(workload: Mapping[str, Any], container: str) -> dict[str, str]:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    return {e["name"]: e.get("value", "") for e in found.get("env", [])}


def rolled_out(deployment: Mapping[str, Any]) -> bool:
    """The Deployment's current template is fully rolled out and available (kubectl rollout status)."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    want = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )


def camera_access(pod_spec: Mapping[str, Any]) -> str:
    """How the camera pod reaches its video device, read from the pod spec itself."""
    (camera,) = [c for c in pod_spec["containers"] if c["name"] == "camera"]
    if (camera.get("securityContext") or {}).get("privileged"):
        return "privileged"
    if any("/" in name for name in ((camera.get("resources") or {}).get("limits") or {})):
        return "devicePlugin"
    if any((v.get("hostPath") or {}).get("path", "").startswith("/dev/") for v in pod_spec.get("volumes", [])):
        return "hostDevice"
    return "none"


TRACKED_KINDS = (
    "/api/v1/namespaces/{ns}/configmaps",
    "/api/v1/namespaces/{ns}/secrets",
    "/api/v1/namespaces/{ns}/services",
    "/api/v1/namespaces/{ns}/serviceaccounts",
    "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "/apis/apps/v1/namespaces/{ns}/deployments",
    "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
)


def tracked_objects(cluster: SimulatedCluster, namespace: str = FACEPIPE_NS) -> list[str]:
    """Objects in the namespace that an Argo CD Application tracks (annotation tracking, 3.x's default)."""
    found = []
    for template in TRACKED_KINDS:
        path = template.format(ns=namespace)
        for name, item in objects(cluster, path).items():
            if "argocd.argoproj.io/tracking-id" in (item["metadata"].get("annotations") or {}):
                found.append(f"{path.rsplit('/', 1)[1]}/{name}")
    return found


def last_history_id(app: Mapping[str, Any]) -> int:
    """The id of an Application's latest sync in its history (ids only grow; the history is capped)."""
    return max((entry["id"] for entry in (app.get("status") or {}).get("history") or []), default=-1)
