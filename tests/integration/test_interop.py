"""Interop: a plain `mosquitto_sub` on cam_bin receives PNG bytes that decode to the face crop."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from facepipe.camera.camera import crop_box
from facepipe.camera.detect import create_detector
from facepipe.config import DetectorSettings
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.processes import wait_until


def test_mosquitto_sub_receives_the_face_crop_as_png(
    tmp_path: Path, edge_broker: MosquittoBroker, mosquitto_sub: str, shared_data: Path, model_dir: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    portrait = shared_data / "images" / "matplotlib" / "grace_hopper.jpg"
    (source / portrait.name).write_bytes(portrait.read_bytes())
    received = tmp_path / "received.png"
    with open(received, "wb") as out:
        sub = subprocess.Popen(
            [mosquitto_sub, "-h", edge_broker.host, "-p", str(edge_broker.port), "-t", "cam_bin", "-C", "1", "-N", "-q", "1"],
            stdout=out,
        )
        try:
            wait_until(lambda: "New client connected" in edge_broker.log_path.read_text(), timeout=10, what="mosquitto_sub to connect")
            camera = subprocess.run(
                [sys.executable, "-m", "facepipe", "camera", "--source", str(source), "--model-dir", str(model_dir),
                 "--local-host", edge_broker.host, "--local-port", str(edge_broker.port), "--http-port", "0"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert camera.returncode == 0, camera.stderr[-2000:]
            sub.wait(timeout=30)
        finally:
            sub.kill()
            sub.wait()
    payload = received.read_bytes()
    assert payload.startswith(b"\x89PNG")
    got = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    frame = cv2.imread(str(portrait), cv2.IMREAD_COLOR)
    (detection,) = create_detector(DetectorSettings(model_dir=str(model_dir))).detect(frame, full=True)  # an image of a folder: a full pass
    x0, y0, x1, y1 = crop_box(detection.bbox, 0.2, frame.shape)
    assert np.array_equal(got, frame[y0:y1, x0:x1])
