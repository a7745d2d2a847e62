"""Restart the cloud broker in the middle of a run: forwarder and processor reconnect and the faces
published afterwards are stored (at QoS 1 with persistence, all of them, exactly once)."""

import time
from dataclasses import replace
from pathlib import Path

from facepipe.brokers import MosquittoBroker
from facepipe.config import (
    BrokerSettings,
    CameraSettings,
    CommonSettings,
    DetectorSettings,
    ForwarderSettings,
    ProcessorSettings,
    StoreSettings,
)
from facepipe.run import ComponentProcess
from tests.support.mqtt import wait_until


def test_cloud_broker_restart_mid_run(
    tmp_path: Path, edge_broker: MosquittoBroker, cloud_broker: MosquittoBroker, test_video: Path, model_dir: Path
) -> None:
    common = CommonSettings(device_id="edge-1")
    edge = BrokerSettings(host=edge_broker.host, port=edge_broker.port)
    cloud = BrokerSettings(host=cloud_broker.host, port=cloud_broker.port, topic="cam_bin_remote")
    store = tmp_path / "faces"
    processor = ComponentProcess(
        "processor", ProcessorSettings(common=replace(common, device_id="cloud"), broker=cloud, storage=StoreSettings(store=f"file://{store}")), tmp_path
    )
    forwarder = ComponentProcess("forwarder", ForwarderSettings(common=common, local=edge, remote=cloud), tmp_path)
    camera = ComponentProcess(
        "camera",
        CameraSettings(common=common, broker=edge, detect=DetectorSettings(model_dir=str(model_dir)), source=str(test_video), realtime=True),
        tmp_path,
    )
    try:
        processor.start().wait_ready()
        forwarder.start().wait_ready()
        camera.start()
        wait_until(lambda: processor.metrics().get("facepipe_processor_stored_total", 0) > 20, what="faces flowing")
        cloud_broker.restart()
        restarted_at = time.time()
        wait_until(lambda: not camera.process.running(), timeout=60, what="the camera to finish the clip")
        published = camera.summary()["published"]
        wait_until(lambda: processor.metrics().get("facepipe_processor_stored_total", 0) >= published, timeout=60, what="all faces stored")
        assert forwarder.metrics()["facepipe_mqtt_connects_total"] >= 2
        assert processor.metrics()["facepipe_mqtt_connects_total"] >= 2
    finally:
        for component in (camera, forwarder, processor):
            component.stop()
    files = list(store.rglob("*.png"))
    after_restart = [p for p in files if p.stat().st_mtime > restarted_at]
    assert after_restart, "faces published after the restart were stored"
    assert len(files) == published  # every face once: keys are unique per (camera run, seq)
    assert processor.summary()["stored"] >= published
