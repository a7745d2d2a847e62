"""Scenario 4: drift. A Deployment deleted by hand on a device shows on its Application (OutOfSync,
the Deployment OutOfSync) and comes back from git, nothing else in the fleet moving.

With progressive syncs on (this fleet, as argocd/README.md's bootstrap does), Argo CD 3.6's
RollingSync has turned the Applications' own automated sync (and so selfHeal) off and syncs only for
a new revision or spec: the test checks that the drift stays visible rather than being silently
kept, then heals it with the README's command ("Drift on a device"). If a later Argo CD starts
healing it by itself, the test says so and the README must change."""

from __future__ import annotations

import time

import pytest

from facepipe_dev import gitops as f
from facepipe_dev.argocd import app_state
from facepipe_dev.processes import wait_until

pytestmark = [pytest.mark.argocd]

DEVICE = "lobby-01"
DEPLOYMENT = "face-edge-forwarder"
# Two refreshes of the Applications and the ApplicationSet: time enough for a sync to start, had
# Argo CD meant to start one.
SETTLE_SECONDS = 2 * f.POLL_SECONDS + 5


def deployment_state(app: dict) -> dict:
    (found,) = [r for r in app["status"]["resources"] if (r["kind"], r["name"]) == ("Deployment", DEPLOYMENT)]
    return found


def test_a_deployment_deleted_by_hand_shows_as_drift_and_is_restored_from_git(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    fleet.wait_settled("before the drift: every Application Synced and Healthy", fleet.head())
    wait_until(
        lambda: (fleet.appset_conditions().get("RolloutProgressing") or {}).get("status") == "False",
        300,
        f.PROBE_INTERVAL,
        "the ApplicationSet's rollout over",
        fleet.fleet_state,
    )
    time.sleep(f.POLL_SECONDS)  # RollingSync may still start a last, redundant sync of the revision
    fleet.wait_settled("before the drift: every Application Synced and Healthy", fleet.head())
    cluster = fleet.devices[DEVICE]
    app_name = f"face-edge-{DEVICE}"
    before = fleet.workloads()
    old_uid, _ = before[DEVICE][DEPLOYMENT]
    fleet.kubectl_run(cluster.kubeconfig, "-n", f.FACEPIPE_NS, "delete", "deployment", DEPLOYMENT, "--wait=true")
    assert DEPLOYMENT not in f.deployments(cluster)

    def drift_shown() -> dict | None:
        app = fleet.argocd.get("applications", app_name)
        shown = app["status"]["sync"]["status"] == "OutOfSync" and deployment_state(app).get("status") == "OutOfSync"
        return app if shown else None

    app = wait_until(drift_shown, 120, f.PROBE_INTERVAL, f"{app_name} OutOfSync with {DEPLOYMENT} missing", fleet.fleet_state)
    assert (deployment_state(app).get("health") or {}).get("status", "Missing") == "Missing", deployment_state(app)
    time.sleep(SETTLE_SECONDS)
    app = fleet.argocd.get("applications", app_name)
    last_sync = f.last_history_id(app)
    assert DEPLOYMENT not in f.deployments(cluster) and app["status"]["sync"]["status"] == "OutOfSync", (
        "Argo CD restored the Deployment by itself under RollingSync: update argocd/README.md "
        f'"Drift on a device" (selfHeal works again) and this test\n{app_state(app)}'
    )

    # The README's sync of that one Application, run as written.
    fleet.shell(f.readme_block("Drift on a device", 0, {"<deviceId>": DEVICE}), fleet.cloud.kubeconfig)

    def restored() -> bool:
        deployment = f.deployments(cluster).get(DEPLOYMENT)
        return deployment is not None and deployment["metadata"]["uid"] != old_uid and f.rolled_out(deployment)

    wait_until(restored, 300, f.PROBE_INTERVAL, f"{DEPLOYMENT} on {DEVICE} restored", fleet.fleet_state)
    fleet.wait_settled("after the drift: every Application Synced and Healthy", fleet.head())
    # The sync that restored it finishes (its entry in the history) once all its resources are Healthy.
    app = wait_until(
        lambda: (a := fleet.argocd.get("applications", app_name)) and f.last_history_id(a) > last_sync and a,
        300,
        f.PROBE_INTERVAL,
        f"{app_name}'s restoring sync in its history",
        fleet.fleet_state,
    )
    results = {(r["kind"], r["name"]): r for r in app["status"]["operationState"]["syncResult"]["resources"]}
    assert "created" in results[("Deployment", DEPLOYMENT)]["message"], results[("Deployment", DEPLOYMENT)]
    after = fleet.workloads()
    for device_id, workloads in before.items():
        expected = {**workloads, DEPLOYMENT: after[DEVICE][DEPLOYMENT]} if device_id == DEVICE else workloads
        assert after[device_id] == expected, f"{device_id}: more changed than the restored {DEPLOYMENT}"
    pods = {n: p for n, p in f.pods(cluster).items() if n.startswith(f"{DEPLOYMENT}-")}
    assert pods and {p["spec"]["nodeName"] for p in pods.values()} == {DEVICE}
