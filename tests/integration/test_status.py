"""Device status over MQTT with real brokers and components: each edge component's retained status
and last will, the forwarder's relay into the device's subtree, and the fleet metrics of processors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facepipe import contract
from facepipe.config import BrokerSettings, CommonSettings, DetectorSettings, StatusSettings
from facepipe.contract import Status
from facepipe.metric_names import PROCESSOR_RECEIVED
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.components import ComponentProcess
from facepipe_dev.mqtt import TestClient
from facepipe_dev.processes import wait_until
from facepipe_dev.rig import Rig

DEVICE = "edge-st"
BASE = "cam_bin_remote"
FAST = StatusSettings(status_interval=1.0)


def fleet(processor: ComponentProcess, name: str, **labels: str) -> float | None:
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return processor.metrics().get(f"facepipe_fleet_{name}{{{selector}}}")


def retained(broker: MosquittoBroker, topic_filter: str, count: int) -> dict[str, Status]:
    """The retained status messages under `topic_filter`, by topic (a fresh subscriber gets them at once)."""
    client = TestClient(broker.host, broker.port).subscribe(topic_filter)
    try:
        # The retained copies come first; a live heartbeat may follow them before the wait returns.
        messages = client.wait_for(count, timeout=10)[:count]
    finally:
        client.close()
    assert len(messages) == count and all(m.retain for m in messages)
    return {m.topic: Status.from_json(m.payload) for m in messages}


def start_processor(rig: Rig, share_group: str = "") -> ComponentProcess:
    return rig.processor(share_group=share_group, label=f"processor-{share_group or 'plain'}").start()


def start_camera(rig: Rig, model_dir: Path, source: Path, label: str = "camera") -> ComponentProcess:
    detect = DetectorSettings(model_dir=str(model_dir))
    return rig.camera(status=FAST, detect=detect, source=str(source), loop=True, max_fps=5, label=label).start()


@pytest.fixture
def rig(tmp_path: Path, edge_broker: MosquittoBroker, cloud_broker: MosquittoBroker) -> Iterator[Rig]:
    """One device's edge components on its edge broker, and processors on the cloud broker."""
    with Rig.on(tmp_path, edge_broker, cloud_broker, common=CommonSettings(device_id=DEVICE), remote=BrokerSettings(topic=BASE)) as made:
        yield made


def test_edge_components_announce_themselves_and_every_processor_sees_the_fleet(
    rig: Rig, edge_broker: MosquittoBroker, cloud_broker: MosquittoBroker, shared_data: Path, model_dir: Path
) -> None:
    plain, shared = start_processor(rig), start_processor(rig, share_group="procs")
    forwarder = rig.forwarder(status=FAST).start()
    logger = rig.logger(status=FAST).start()
    camera = start_camera(rig, model_dir, shared_data / "images" / "skimage")
    for component in (plain, shared, forwarder, logger, camera):
        component.wait_ready()

    # The processors (a plain one, and a replica of a shared group: retained status reaches it too).
    for processor in (plain, shared):
        for component in contract.STATUS_COMPONENTS:
            wait_until(lambda p=processor, c=component: fleet(p, "up", device=DEVICE, component=c) == 1, what=f"{component} online")
        wait_until(lambda p=processor: fleet(p, "camera_source", device=DEVICE, camera="cam0", state="opened") == 1, what="source opened")
    # The camera's heartbeat carries its counters, refreshed every interval.
    first = fleet(plain, "camera_frames_read_total", device=DEVICE, camera="cam0") or 0
    wait_until(lambda: (fleet(plain, "camera_frames_read_total", device=DEVICE, camera="cam0") or 0) > first, what="a newer heartbeat")
    assert fleet(plain, "status_interval_seconds", device=DEVICE, component="camera") == 1.0

    # Retained on the edge broker under the local topic, and in the cloud under the device's subtree.
    edge = retained(edge_broker, contract.status_topic("cam_bin", "+"), 2)
    assert {t: (s.component, s.state) for t, s in edge.items()} == {
        "cam_bin/status/camera": ("camera", "online"), "cam_bin/status/logger": ("logger", "online"),
    }  # fmt: skip
    cloud = retained(cloud_broker, contract.remote_status_topic(BASE, DEVICE, "+"), 3)
    assert {t: (s.device, s.state) for t, s in cloud.items()} == {
        contract.remote_status_topic(BASE, DEVICE, c): (DEVICE, "online") for c in contract.STATUS_COMPONENTS
    }
    camera_status = cloud[contract.remote_status_topic(BASE, DEVICE, "camera")]
    assert camera_status.capture is not None and camera_status.capture.source == "opened" and camera_status.capture.frames_read > 0

    # A camera that dies: its last will, relayed by the forwarder, says offline.
    camera.kill()
    for processor in (plain, shared):
        wait_until(lambda p=processor: fleet(p, "up", device=DEVICE, component="camera") == 0, what="the camera's last will")
    will = retained(cloud_broker, contract.remote_status_topic(BASE, DEVICE, "camera"), 1)
    assert [(s.state, s.capture) for s in will.values()] == [("offline", None)]
    # The heartbeat seen last stays: it was opened when the camera died.
    assert fleet(plain, "camera_source", device=DEVICE, camera="cam0", state="opened") == 1

    # A camera whose source does not exist says `failed` before it exits.
    failing = start_camera(rig, model_dir, rig.workdir / "missing.mp4", label="camera-failing")
    wait_until(lambda: not failing.process.running(), what="the failing camera to exit")
    assert failing.process.returncode() == 2
    wait_until(lambda: fleet(plain, "camera_source", device=DEVICE, camera="cam0", state="failed") == 1, what="source failed")
    assert fleet(plain, "up", device=DEVICE, component="camera") == 0

    # A logger that stops cleanly says offline itself; a forwarder cut off leaves its will in the cloud.
    assert logger.stop() == 0
    wait_until(lambda: fleet(plain, "up", device=DEVICE, component="logger") == 0, what="the logger's offline status")
    forwarder.kill()
    wait_until(lambda: fleet(plain, "up", device=DEVICE, component="forwarder") == 0, what="the forwarder's last will")
    assert all(plain.metrics().get(f'facepipe_fleet_status_rejected_total{{reason="{r}"}}', 0) == 0 for r in ("bad_status",))


def test_a_device_posing_as_another_in_its_status_is_counted_and_ignored(rig: Rig, cloud_broker: MosquittoBroker) -> None:
    processor = start_processor(rig)
    processor.wait_ready()
    client = TestClient(cloud_broker.host, cloud_broker.port)
    try:
        own = Status("edge-b", "camera", "online", "b00f", contract.parse_timestamp("2026-01-01T00:00:00.000Z"), 30.0)
        client.publish(contract.remote_status_topic(BASE, "edge-a", "camera"), own.to_json())
        client.publish(contract.remote_status_topic(BASE, "edge-a", "logger"), b"not json")
        client.publish(contract.remote_status_topic(BASE, "edge-b", "camera"), own.to_json())
    finally:
        client.close()
    wait_until(lambda: fleet(processor, "up", device="edge-b", component="camera") == 1, what="edge-b's own status")
    metrics = processor.metrics()
    assert metrics.get('facepipe_fleet_status_rejected_total{reason="device_mismatch"}') == 1
    assert metrics.get('facepipe_fleet_status_rejected_total{reason="bad_status"}') == 1
    assert fleet(processor, "up", device="edge-a", component="camera") is None
    assert metrics.get(PROCESSOR_RECEIVED, 0) == 0, "a status is not a face"
