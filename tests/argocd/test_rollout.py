"""Scenario 3: an upgrade through the rings. A commit to argocd/values/edge-common.yaml changes every
device; with progressive syncs enabled as argocd/README.md's bootstrap does, the ApplicationSet's
RollingSync syncs every canary first, no stable device until all canaries are Healthy, then the
stable devices at most 25% at a time, each batch Healthy before the next.

The order is read from Argo CD's own records, not from when the test happened to look: each
Application's sync history (when the sync of the new revision started and finished, and that the
ApplicationSet controller started it) and the ApplicationSet's per-Application progress (the step
and the time each Application became Healthy)."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from facepipe_dev import gitops as f
from facepipe_dev.argocd import app_state

pytestmark = [pytest.mark.argocd]

STABLE_MAX_UPDATE = 0.25  # argocd/apps/face-edge.yaml: maxUpdate 25% on the stable step


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_change_of_edge_common_rolls_out_canaries_first_then_stable_a_quarter_at_a_time(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    fleet.wait_settled("before the upgrade: every Application Synced and Healthy", fleet.head())
    rings = {d: p.parent.name for d, p in f.device_files(fleet.checkout.path).items() if d in fleet.devices}
    canaries = sorted(d for d, ring in rings.items() if ring == "canary")
    stable = sorted(d for d, ring in rings.items() if ring == "stable")
    assert canaries and len(stable) >= 2, rings
    common = fleet.checkout.path / "argocd" / "values" / "edge-common.yaml"
    text = common.read_text()
    assert "\nlogLevel: info\n" in text
    sha = fleet.commit(
        "edge-common: log level debug", lambda root: common.write_text(text.replace("\nlogLevel: info\n", "\nlogLevel: debug\n"))
    )

    fleet.wait_settled("the upgrade through the rings: every Application Synced and Healthy at the new commit", sha, timeout=900)
    for device_id, cluster in fleet.devices.items():
        levels = {}
        for name, deployment in f.deployments(cluster).items():
            assert f.rolled_out(deployment), (device_id, name)
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                env = f.container_env(deployment, container["name"])
                if "FACEPIPE_LOG_LEVEL" in env:  # the facepipe components (not the broker)
                    levels[f"{name}/{container['name']}"] = env["FACEPIPE_LOG_LEVEL"]
        assert levels and set(levels.values()) == {"debug"}, (device_id, levels)

    appset = fleet.argocd.get("applicationsets", f.APPSET)
    progress = {s["application"]: s for s in appset["status"]["applicationStatus"]}
    started, finished, healthy = {}, {}, {}
    for device_id in fleet.devices:
        app = fleet.argocd.get("applications", f"face-edge-{device_id}")
        syncs = [h for h in app["status"]["history"] if sha in (h.get("revisions") or [h.get("revision")])]
        assert syncs, f"{device_id}: no sync of {sha} in its history: {app['status']['history']}"
        entry = min(syncs, key=lambda h: h["id"])  # the rollout's sync of the new commit
        started[device_id], finished[device_id] = when(entry["deployStartedAt"]), when(entry["deployedAt"])
        # RollingSync turned the automated policy off: the ApplicationSet controller started the sync.
        automated = app["spec"]["syncPolicy"].get("automated")
        assert automated is None or automated.get("enabled") is False, app["spec"]["syncPolicy"]
        assert (entry.get("initiatedBy") or {}).get("username") == "applicationset-controller", (entry, app_state(app))
        step = progress[f"face-edge-{device_id}"]
        assert step["status"] == "Healthy", step
        assert step["step"] == ("1" if device_id in canaries else "2"), step
        healthy[device_id] = when(step["lastTransitionTime"])
        assert started[device_id] <= finished[device_id] <= healthy[device_id], (device_id, entry, step)
    timeline = "\n".join(
        f"{d:15} {rings[d]:7} sync {started[d]:%H:%M:%S}..{finished[d]:%H:%M:%S} healthy {healthy[d]:%H:%M:%S}"
        for d in sorted(fleet.devices, key=started.__getitem__)
    )

    # Canaries first: no stable device started before every canary was Healthy.
    last_canary_healthy = max(healthy[d] for d in canaries)
    assert all(started[d] >= last_canary_healthy for d in stable), timeline
    # Then at most a quarter of the stable devices (at least one) between its sync starting and
    # Healthy at any time: each batch is Healthy before the next starts.
    batch = max(1, math.floor(STABLE_MAX_UPDATE * len(stable)))
    for device_id in stable:
        in_flight = [d for d in stable if started[d] <= started[device_id] < healthy[d]]
        assert len(in_flight) <= batch, f"{in_flight} in flight at once (at most {batch})\n{timeline}"
    print(timeline)
