"""argocd/README.md "C. Standalone": a device moved from the central Argo CD to an Argo CD of its own.

As the README says, by commit the central ApplicationSet leaves the device out (its `exclude` entry,
as written), which removes the device's central Application and prunes the device; then the device
gets its own Argo CD core install and argocd/standalone/face-edge-device.yaml (the README's commands),
which deploys the same Application into the device's own cluster from the same git repository, and
follows commits to the device's file from there. At the end the device goes back to the central
Argo CD the same way round, so the fleet is as it was."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facepipe_dev import gitops as f
from facepipe_dev.argocd import ArgoCD, app_state, synced_and_healthy
from facepipe_dev.processes import wait_until

pytestmark = [pytest.mark.argocd]

HEADING = "C. Standalone: Argo CD on each device"
STABLE_INSTALL_URL = "https://raw.githubusercontent.com/argoproj/argo-cd/stable/manifests/core-install.yaml"
APPSET_FILE = "argocd/apps/face-edge.yaml"
COMMENTED_EXCLUDE = """\
          # A device run by its own Argo CD (argocd/standalone/) is left out here, e.g.:
          # - path: argocd/devices/*/pi-kitchen.yaml
          #   exclude: true
"""


@pytest.fixture
def device_argocd(bootstrapped: f.Fleet, gitops_tools) -> Iterator[ArgoCD]:
    _, argo_tools = gitops_tools
    device_id = device_of_the_readme()
    argocd = ArgoCD(bootstrapped.devices[device_id].api, bootstrapped.workdir / f"argocd-{device_id}", argo_tools, bootstrapped.kubectl)
    try:
        yield argocd
    finally:
        argocd.stop()


def device_of_the_readme() -> str:
    (line,) = [
        line for line in f.readme_yaml_block(HEADING).splitlines() if "exclude" not in line and "*/*" not in line and "path:" in line
    ]
    return line.rsplit("/", 1)[1].removesuffix(".yaml")


def excluded(text: str) -> str:
    """The central ApplicationSet with the README's exclude entry in its files generator."""
    entries = f.readme_yaml_block(HEADING).split("\n", 1)[1]  # the list under `files:`
    assert COMMENTED_EXCLUDE in text and "          - path: argocd/devices/*/*.yaml\n" in text
    generator = "".join(" " * 8 + line + "\n" for line in entries.splitlines() if line.strip())
    return text.replace("          - path: argocd/devices/*/*.yaml\n" + COMMENTED_EXCLUDE, generator)


def test_a_device_moved_to_its_own_argo_cd_follows_its_file_from_there(bootstrapped: f.Fleet, device_argocd: ArgoCD) -> None:
    fleet = bootstrapped
    device_id = device_of_the_readme()
    app_name = f"face-edge-{device_id}"
    device = fleet.devices[device_id]
    fleet.wait_settled("before the move: every Application Synced and Healthy", fleet.head())
    others = {d: w for d, w in fleet.workloads().items() if d != device_id}
    central = (fleet.checkout.path / APPSET_FILE).read_text()
    fleet.commit(f"{device_id} runs its own Argo CD", lambda root: (root / APPSET_FILE).write_text(excluded(central)))
    wait_until(
        lambda: fleet.argocd.get("applications", app_name) is None, 300, f.PROBE_INTERVAL, f"central {app_name} removed", fleet.fleet_state
    )
    wait_until(
        lambda: not f.tracked_objects(device), 120, f.PROBE_INTERVAL, f"{device_id} pruned by the central Argo CD", fleet.fleet_state
    )

    # On the device, the README's commands (the release's manifest for the `stable` URL).
    block = f.readme_block(HEADING, 0, {STABLE_INSTALL_URL: str(device_argocd.install_manifest)})
    fleet.shell(block, device.kubeconfig)
    device_argocd.configure(f.POLL_SECONDS)
    device_argocd.start()

    def deployed_by_the_device() -> dict | None:
        app = device_argocd.get("applications", app_name)
        return app if app and synced_and_healthy(app, fleet.head()) else None

    def state() -> str:
        return "\n".join(app_state(a) for a in device_argocd.applications().values()) + "\n" + device_argocd.warnings()

    app = wait_until(deployed_by_the_device, 600, f.PROBE_INTERVAL, f"{app_name} Synced and Healthy on the device's own Argo CD", state)
    assert app["spec"]["destination"] == {"server": "https://kubernetes.default.svc", "namespace": f.FACEPIPE_NS}
    camera = f.deployments(device)["face-edge-camera"]
    assert f.container_env(camera, "camera")["FACEPIPE_DEVICE_ID"] == device_id
    assert all(f.rolled_out(d) for d in f.deployments(device).values())

    # A commit to the device's file reaches it through its own Argo CD.
    path = f.device_files(fleet.checkout.path)[device_id].relative_to(fleet.checkout.path)
    text = (fleet.checkout.path / path).read_text()
    assert "  maxFps: 10\n" in text
    sha = fleet.commit(f"{device_id}: 5 fps", lambda root: (root / path).write_text(text.replace("  maxFps: 10\n", "  maxFps: 5\n")))

    def followed() -> bool:
        camera = f.deployments(device)["face-edge-camera"]
        app = device_argocd.get("applications", app_name) or {}
        return f.container_env(camera, "camera").get("FACEPIPE_MAX_FPS") == "5" and synced_and_healthy(app, sha)

    wait_until(followed, 300, f.PROBE_INTERVAL, f"{device_id} at 5 fps from its own Argo CD", state)
    assert {d: w for d, w in fleet.workloads().items() if d != device_id} == others, "another device changed"

    # Back to the central Argo CD: the device's ApplicationSet goes (its Application prunes the
    # device), then the exclude entry.
    fleet.kubectl_run(device.kubeconfig, "-n", "argocd", "delete", "applicationset", "face-edge-device", "--wait=true")
    wait_until(
        lambda: device_argocd.get("applications", app_name) is None, 300, f.PROBE_INTERVAL, f"{app_name} gone from the device", state
    )
    sha = fleet.commit(f"{device_id} back to the central Argo CD", lambda root: (root / APPSET_FILE).write_text(central))
    fleet.wait_settled(f"{device_id} back: every Application Synced and Healthy", sha)
