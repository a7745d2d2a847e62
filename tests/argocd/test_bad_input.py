"""Scenario 5: bad input in git, with the rest of the fleet unaffected. A device file without
`deviceId` stops the ApplicationSet's generation with an error naming the key; a device file with a
value that charts/face-edge/values.schema.json refuses puts an error naming the field on that
device's Application. Either way no Application is created, deleted or synced, no device's
Deployments change, and the commit that removes the bad input brings the fleet back."""

from __future__ import annotations

import time

import pytest

from facepipe_dev import gitops as f
from facepipe_dev.argocd import app_state, synced_and_healthy
from facepipe_dev.processes import wait_until

pytestmark = [pytest.mark.argocd]

NO_ID_FILE = "argocd/devices/stable/unnamed.yaml"
NO_ID_VALUES = """\
# A device file someone forgot to give its deviceId.
podSecurity:
  level: restricted
camera:
  device: /dev/video0
  accessMode: devicePlugin
"""
REFUSED_DEVICE = "lobby-01"
# Two reconciliations of the Applications and the ApplicationSet (POLL_SECONDS each): time for a
# wrong outcome (a sync, a deletion) to show before the test looks.
SETTLE_SECONDS = 2 * f.POLL_SECONDS + 5


def fleet_unaffected(fleet: f.Fleet, before: dict, apps_before: set[str], skip: str) -> None:
    """The same Applications, each Synced and Healthy but `skip`; no device's Deployments changed."""
    assert set(fleet.applications()) == apps_before
    assert fleet.workloads() == before, "a device's Deployments changed"
    for name, app in fleet.applications().items():
        if name != skip:
            assert synced_and_healthy(app), app_state(app)


def root_health(fleet: f.Fleet) -> str:
    return ((fleet.argocd.get("applications", "facepipe") or {}).get("status") or {}).get("health", {}).get("status", "")


def test_a_device_file_without_device_id_is_an_error_on_the_applicationset(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    fleet.wait_settled("before the bad input: every Application Synced and Healthy", fleet.head())
    before, apps_before = fleet.workloads(), set(fleet.applications())
    fleet.commit("a device file without deviceId", lambda root: (root / NO_ID_FILE).write_text(NO_ID_VALUES))

    def error() -> dict | None:
        condition = fleet.appset_conditions().get("ErrorOccurred") or {}
        return condition if condition.get("status") == "True" and "deviceId" in condition.get("message", "") else None

    condition = wait_until(error, 300, f.PROBE_INTERVAL, "the ApplicationSet's error naming deviceId", fleet.fleet_state)
    assert 'map has no entry for key "deviceId"' in condition["message"], condition
    assert fleet.appset_conditions()["ParametersGenerated"]["status"] == "False"
    # The root shows it too: Argo CD's health of an ApplicationSet with an error is Degraded.
    wait_until(
        lambda: root_health(fleet) == "Degraded", 120, f.PROBE_INTERVAL, "the root Degraded by its ApplicationSet", fleet.fleet_state
    )
    time.sleep(SETTLE_SECONDS)
    fleet_unaffected(fleet, before, apps_before, skip="facepipe")

    sha = fleet.commit("remove the device file without deviceId", lambda root: (root / NO_ID_FILE).unlink())
    wait_until(
        lambda: (fleet.appset_conditions().get("ErrorOccurred") or {}).get("status") == "False",
        300,
        f.PROBE_INTERVAL,
        "the ApplicationSet's error cleared",
        fleet.fleet_state,
    )
    fleet.wait_settled("after removing the bad file: every Application Synced and Healthy", sha)
    assert fleet.workloads() == before


def test_a_value_the_schema_refuses_is_an_error_on_that_devices_application(bootstrapped: f.Fleet) -> None:
    fleet = bootstrapped
    fleet.wait_settled("before the bad value: every Application Synced and Healthy", fleet.head())
    before, apps_before = fleet.workloads(), set(fleet.applications())
    path = f.device_files(fleet.checkout.path)[REFUSED_DEVICE].relative_to(fleet.checkout.path)
    good = (fleet.checkout.path / path).read_text()
    assert "accessMode: devicePlugin" in good
    bad = good.replace("accessMode: devicePlugin", "accessMode: usb")
    fleet.commit(f"{REFUSED_DEVICE}: a camera access mode the schema does not know", lambda root: (root / path).write_text(bad))
    app_name = f"face-edge-{REFUSED_DEVICE}"

    def refused() -> str | None:
        app = fleet.argocd.get("applications", app_name) or {}
        messages = [c.get("message", "") for c in (app.get("status") or {}).get("conditions") or [] if c.get("type") == "ComparisonError"]
        return next((m for m in messages if "accessMode" in m), None)

    message = wait_until(refused, 300, f.PROBE_INTERVAL, f"{app_name}'s error naming the refused field", fleet.fleet_state)
    assert "values don't meet the specifications of the schema" in message, message
    assert "/camera/accessMode" in message and "'devicePlugin'" in message, message
    time.sleep(SETTLE_SECONDS)
    fleet_unaffected(fleet, before, apps_before, skip=app_name)
    app = fleet.argocd.get("applications", app_name)
    assert app["status"]["sync"]["status"] != "Synced", app_state(app)

    sha = fleet.commit(f"{REFUSED_DEVICE}: back to the device plugin", lambda root: (root / path).write_text(good))
    fleet.wait_settled(f"after fixing {REFUSED_DEVICE}: every Application Synced and Healthy", sha)
    assert refused() is None
    assert fleet.workloads() == before
