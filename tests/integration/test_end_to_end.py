"""End to end: a video with known faces goes in through two real Mosquitto brokers and the four
components; exactly the expected PNG objects come out, with the design's keys and metadata."""

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepipe import contract
from facepipe.camera.detect import FullPasses, create_detector
from facepipe.camera.sources import FrameSource
from facepipe.config import DetectorSettings
from facepipe.contract import FaceMeta
from facepipe_dev.gallery import GalleryClient
from facepipe_dev.processes import ChildProcess, port_open, wait_until
from facepipe_dev.rgw import RadosGateway
from facepipe_dev.store import s3_keys


@pytest.fixture(scope="module")
def expected_faces(test_video: Path, model_dir: Path) -> set[tuple[int, int]]:
    """(frame, face index) of every face the camera's detector finds in the video, frame by frame, with the
    camera's full-resolution passes where it makes them."""
    settings = DetectorSettings(model_dir=str(model_dir))
    detector, plan = create_detector(settings), FullPasses(settings.full_detect_seconds)
    source = FrameSource(str(test_video))
    found: set[tuple[int, int]] = set()
    try:
        for frame in source.frames(threading.Event()):
            full = plan.due(frame.timestamp, frame.still)
            found |= {(frame.index, i) for i in range(len(detector.detect(frame.image, full)))}
    finally:
        source.close()
    assert source.frames_read == 275 and len(found) > 100
    return found


def run_pipeline(source: Path, store: str, model_dir: Path, workdir: Path, env: dict[str, str] | None = None) -> dict:
    argv = [sys.executable, "-m", "facepipe", "run", "--source", str(source), "--store", store]
    argv += ["--model-dir", str(model_dir), "--run-dir", str(workdir), "--device-id", "edge-test", "--camera-id", "front"]
    argv += ["--publish-policy", "every"]  # every face of every frame: the expected set is per frame
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print("\nrun summary:", summary)
    # The last progress line keeps the camera's final counters (it once fell back to 0 when the camera ended).
    progress = [json.loads(line) for line in done.stderr.splitlines() if '"run.progress"' in line]
    assert progress, done.stderr[-3000:]
    assert {k: progress[-1][k] for k in ("frames", "published", "stored")} == {k: summary[k] for k in ("frames", "published", "stored")}
    return summary


def check_objects(objects: dict[str, tuple[bytes, dict[str, str]]], prefix: str, expected: set[tuple[int, int]]) -> None:
    """Every object's key derives from its metadata; the (frame, face) set is exactly the expected one."""
    seen: set[tuple[int, int]] = set()
    seqs: set[int] = set()
    for key, (png, metadata) in objects.items():
        meta = FaceMeta.from_storage_metadata(metadata)
        assert key == contract.object_key(prefix, meta)
        assert (meta.device, meta.camera) == ("edge-test", "front")
        assert meta.detector.startswith("yunet/")
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and png.startswith(b"\x89PNG")
        # The crop is the face box plus a 20% margin, clipped to the 640x360 frame.
        assert meta.bbox[2] <= image.shape[1] <= 1.4 * meta.bbox[2] + 2
        seen.add((meta.frame, meta.face))
        seqs.add(meta.seq)
    assert seen == expected
    assert seqs == set(range(len(expected)))


def test_video_to_directory(tmp_path: Path, test_video: Path, model_dir: Path, expected_faces: set) -> None:
    summary = run_pipeline(test_video, f"file://{tmp_path / 'faces'}", model_dir, tmp_path / "run")
    assert summary["published"] == summary["stored"] == summary["forwarded"] == len(expected_faces)
    assert summary["lost"] == 0 and summary["rejected"] == 0 and summary["logger_lost"] == 0
    assert summary["frames"] == 275
    root = tmp_path / "faces"
    objects = {
        str(p.relative_to(root)): (p.read_bytes(), json.loads(p.with_name(p.name + ".json").read_text())) for p in root.rglob("*.png")
    }
    check_objects(objects, "", expected_faces)


def test_video_to_s3(tmp_path: Path, test_video: Path, model_dir: Path, expected_faces: set, rgw: RadosGateway, s3_bucket: str) -> None:
    env = {**os.environ, **rgw.env(), "FACEPIPE_S3_SSE": "none"}  # RGW here is plain http: it takes no SSE
    summary = run_pipeline(test_video, f"s3://{s3_bucket}/faces", model_dir, tmp_path / "run", env)
    assert summary["published"] == summary["stored"] == len(expected_faces) and summary["lost"] == 0
    s3 = rgw.client()
    keys = s3_keys(s3, s3_bucket)
    assert all(k.startswith("faces/edge-test/") for k in keys)
    objects = {}
    for key in keys:
        got = s3.get_object(Bucket=s3_bucket, Key=key)
        assert got["ContentType"] == "image/png"
        objects[key] = (got["Body"].read(), got["Metadata"])
    check_objects(objects, "faces", expected_faces)


def test_secure_uplink_run(tmp_path: Path, shared_data: Path, model_dir: Path) -> None:
    """`facepipe run --secure-uplink`: the device→cloud hop as in production (TLS, per-device password, ACL)."""
    argv = [
        sys.executable,
        "-m",
        "facepipe",
        "run",
        "--source",
        str(shared_data / "images" / "skimage"),
        "--store",
        f"file://{tmp_path / 'faces'}",
    ]
    argv += ["--model-dir", str(model_dir), "--run-dir", str(tmp_path / "run"), "--device-id", "edge-secure", "--secure-uplink", "true"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["published"] == summary["stored"] >= 1 and summary["lost"] == 0
    conf = (tmp_path / "run" / "cloud-broker" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "password_file" in conf and "acl_file" in conf and "certfile" in conf
    assert "user edge-secure\ntopic write cam_bin_remote/edge-secure" in (tmp_path / "run" / "auth" / "acl").read_text()
    for component in ("forwarder", "processor"):
        connected = [
            json.loads(line) for line in (tmp_path / "run" / f"{component}.log").read_text().splitlines() if '"mqtt.connected"' in line
        ]
        assert any(event["address"].startswith("mqtts://") for event in connected if event["broker"] == "cloud")


def test_run_serves_the_gallery_on_a_printed_loopback_url(tmp_path: Path, shared_data: Path, model_dir: Path) -> None:
    """`facepipe run` (secure uplink: the gallery reads with a broker user of its own) serves the gallery while it runs:
    the printed address and password get in, and the faces being stored are listed; it stops with the run."""
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "facepipe", "run", "--source", str(shared_data / "images" / "skimage"), "--loop", "true"]
    argv += ["--store", f"file://{tmp_path / 'faces'}", "--model-dir", str(model_dir), "--run-dir", str(run_dir)]
    argv += ["--device-id", "edge-gallery", "--secure-uplink", "true", "--log-format", "text"]
    with ChildProcess("run", argv, tmp_path / "run.log") as run:
        wait_until(lambda: "gallery: http://127.0.0.1:" in run.log_tail(200) or not run.running(), timeout=120, what="the gallery line")
        line = next(x for x in run.log_tail(200).splitlines() if x.startswith("gallery: "))
        url, user, password = line.split()[1], line.split()[3], line.split()[5]
        assert json.loads((run_dir / "gallery-login.json").read_text())["password"] == password
        client = GalleryClient(url.rstrip("/"))
        client.opener.addheaders = [("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())]
        assert client.get("/api/session")["role"] == "admin"
        wait_until(lambda: client.get("/api/status")["live"] is True, what="the gallery's read-only broker user connected")
        wait_until(lambda: any(d["device"] == "edge-gallery" and d["newest"] for d in client.get("/api/devices")["devices"]), what="faces listed")
        faces = client.get("/api/faces?device=edge-gallery&limit=5")["faces"]
        assert faces and client.request("GET", faces[0]["image"])[0] == 200
    port = int(url.rsplit(":", 1)[1].strip("/"))
    assert not port_open("127.0.0.1", port), "the gallery stopped with the run"
