"""The processor's fleet view: the newest status wins, last seen only moves forward within a run."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from facepipe.contract import Capture, ContractError, Status
from facepipe.fleet import Fleet

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def status(state: str = "online", at: datetime = T0, boot: str = "b1", capture: Capture | None = None) -> bytes:
    return Status("edge-1", "camera", state, boot, at, 30.0, capture).to_json()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_heartbeats_then_a_last_will_armed_earlier() -> None:
    registry = CollectorRegistry()
    fleet = Fleet(registry)
    labels = {"device": "edge-1", "component": "camera"}
    _, changed = fleet.observe("edge-1", "camera", status(capture=Capture("cam0", "opened", 10, 9, 1, 5.0)), now=T0.timestamp())
    assert changed
    later = T0 + timedelta(seconds=60)
    _, changed = fleet.observe(
        "edge-1", "camera", status(at=later, capture=Capture("cam0", "retrying", 20, 9, 1, 0.0)), now=later.timestamp()
    )
    assert not changed
    assert sample(registry, "facepipe_fleet_last_seen_timestamp_seconds", **labels) == later.timestamp()
    # The will was armed at connect (T0), so it is older than the heartbeats; it still wins, last seen stays.
    _, changed = fleet.observe("edge-1", "camera", status("offline"), now=later.timestamp() + 5)
    assert changed
    assert sample(registry, "facepipe_fleet_up", **labels) == 0
    assert sample(registry, "facepipe_fleet_last_seen_timestamp_seconds", **labels) == later.timestamp()
    camera = {"device": "edge-1", "camera": "cam0"}
    assert sample(registry, "facepipe_fleet_camera_source", **camera, state="retrying") == 1
    assert sample(registry, "facepipe_fleet_camera_source", **camera, state="opened") == 0
    assert sample(registry, "facepipe_fleet_camera_frames_read_total", **camera) == 20


def test_a_device_clock_ahead_is_seen_no_later_than_arrival_and_a_new_run_starts_over() -> None:
    registry = CollectorRegistry()
    fleet = Fleet(registry)
    labels = {"device": "edge-1", "component": "camera"}
    fleet.observe("edge-1", "camera", status(at=T0 + timedelta(hours=1)), now=T0.timestamp())
    assert sample(registry, "facepipe_fleet_last_seen_timestamp_seconds", **labels) == T0.timestamp()
    _, changed = fleet.observe("edge-1", "camera", status(at=T0 - timedelta(minutes=5), boot="b2"), now=T0.timestamp())
    assert changed
    assert sample(registry, "facepipe_fleet_last_seen_timestamp_seconds", **labels) == (T0 - timedelta(minutes=5)).timestamp()


def test_a_status_for_another_device_or_component_is_counted_and_ignored() -> None:
    registry = CollectorRegistry()
    fleet = Fleet(registry)
    for device, component in (("edge-2", "camera"), ("edge-1", "logger")):
        with pytest.raises(ContractError, match="device_mismatch"):
            fleet.observe(device, component, status())
    assert sample(registry, "facepipe_fleet_status_rejected_total", reason="device_mismatch") == 2
    assert sample(registry, "facepipe_fleet_up", device="edge-2", component="camera") is None
