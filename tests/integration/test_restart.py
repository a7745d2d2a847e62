"""Restart the cloud broker in the middle of a run: forwarder and processor reconnect and the faces
published afterwards are stored (at QoS 1 with persistence, all of them, exactly once)."""

import time
from pathlib import Path

from facepipe.config import DetectorSettings
from facepipe.metric_names import MQTT_CONNECTS, PROCESSOR_STORED
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.processes import wait_until
from facepipe_dev.rig import Rig


def test_cloud_broker_restart_mid_run(
    tmp_path: Path, edge_broker: MosquittoBroker, cloud_broker: MosquittoBroker, test_video: Path, model_dir: Path
) -> None:
    with Rig.on(tmp_path, edge_broker, cloud_broker) as rig:
        processor, forwarder = rig.pipeline()
        camera = rig.camera(detect=DetectorSettings(model_dir=str(model_dir)), source=str(test_video), realtime=True).start()
        wait_until(lambda: processor.metric(PROCESSOR_STORED) > 20, what="faces flowing")
        cloud_broker.restart()
        restarted_at = time.time()
        wait_until(lambda: not camera.process.running(), timeout=60, what="the camera to finish the clip")
        published = camera.summary()["published"]
        wait_until(lambda: processor.metric(PROCESSOR_STORED) >= published, timeout=60, what="all faces stored")
        assert forwarder.metrics()[MQTT_CONNECTS] >= 2
        assert processor.metrics()[MQTT_CONNECTS] >= 2
    files = list((tmp_path / "faces").rglob("*.png"))
    after_restart = [p for p in files if p.stat().st_mtime > restarted_at]
    assert after_restart, "faces published after the restart were stored"
    assert len(files) == published  # every face once: keys are unique per (camera run, seq)
    assert processor.summary()["stored"] >= published
