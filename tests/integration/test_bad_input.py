"""Bad input on the cloud topic: the processor keeps running, counts and logs each rejection by
reason, stores none of them, and stores the next valid face."""

import hashlib
import json
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facepipe import contract, imaging
from facepipe.config import BrokerSettings, CommonSettings, ProcessorSettings, StoreSettings
from facepipe.contract import PNG, FaceMeta
from facepipe.metric_names import PROCESSOR_REJECTED, PROCESSOR_STORED
from facepipe.probe import synthetic_face
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.components import ComponentProcess
from facepipe_dev.mqtt import TestClient
from facepipe_dev.processes import wait_until

MAX_BYTES = 200_000


def start_processor(broker: MosquittoBroker, store: Path, workdir: Path, username: str = "") -> ComponentProcess:
    settings = ProcessorSettings(
        common=CommonSettings(device_id="cloud"),
        broker=BrokerSettings(host=broker.host, port=broker.port, topic="cam_bin_remote", username=username),
        storage=StoreSettings(store=f"file://{store}"),
        max_bytes=MAX_BYTES,
    )
    return ComponentProcess("processor", settings, workdir).start().wait_ready()


def props(device: str = "edge-1", content_type: str = "image/png", seq: int = 0, face_size: int = 96) -> Properties:
    meta = FaceMeta(device, "cam0", "b00f", seq, datetime.now(UTC), 0, 0, (1, 2, face_size, face_size), 0.9, "test/1", content_type)
    return meta.to_properties()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def sixteen_bit_face() -> bytes:
    """A valid 16-bit PNG: decoders take it, a camera never sends it."""
    image = cv2.imdecode(np.frombuffer(synthetic_face(), np.uint8), cv2.IMREAD_COLOR)
    return imaging.encode(image.astype(np.uint16) * 257, PNG)


def padded_face() -> bytes:
    """A valid PNG whose image data is padded with 150 KB of empty deflate blocks."""
    image = cv2.imdecode(np.frombuffer(synthetic_face(), np.uint8), cv2.IMREAD_COLOR)
    comp = zlib.compressobj()
    raw = b"".join(b"\x00" + row.tobytes() for row in image)
    data = comp.compress(raw) + comp.flush(zlib.Z_SYNC_FLUSH) + b"\x00\x00\x00\xff\xff" * 30_000 + comp.flush()
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 96, 96, 8, 2, 0, 0, 0))
    return imaging.PNG_SIGNATURE + ihdr + chunk(b"IDAT", data) + imaging.PNG_IEND


def bomb() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 100_000)
    return imaging.PNG_SIGNATURE + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat + b"\x00" * 4 + imaging.PNG_IEND


def test_bad_payloads_are_rejected_counted_and_logged(tmp_path: Path, cloud_broker: MosquittoBroker) -> None:
    store = tmp_path / "faces"
    processor = start_processor(cloud_broker, store, tmp_path)
    try:
        at_start = processor.metrics()
        for reason in contract.REJECTION_REASONS:  # every reason on /metrics from the start, so a first burst shows in rate()
            assert at_start.get(f'facepipe_processor_rejected_total{{reason="{reason}"}}') == 0, reason
        good = synthetic_face()
        bad_meta = Properties(PacketTypes.PUBLISH)
        bad_meta.ContentType = "image/png"
        bad_meta.UserProperty = [("schema", "facepipe/1"), ("device", "edge-1"), ("seq", "not-a-number")]
        bad_cases = [
            ("empty", b"", props()),
            ("not_image", b"\x00garbage\xff" * 10, props()),
            ("not_image", b"%PDF-1.7\n" + b"x" * 500, props(content_type="image/png")),
            ("undecodable", good[: len(good) // 2], props()),
            ("too_large", b"\x89PNG\r\n\x1a\n" + b"\x00" * (MAX_BYTES + 1), props()),
            ("too_many_pixels", bomb(), props()),
            ("bad_content_type", good, props(content_type="image/jpeg")),
            ("bad_metadata", good, bad_meta),
            ("device_mismatch", good, props(device="edge-2")),
            ("unsupported_format", sixteen_bit_face(), props()),
            ("bloated", padded_face(), props()),
            ("bbox_mismatch", good, props(face_size=30)),  # 96x96 for a 30x30 face: more than 30 + 2 x 30 margin
        ]
        client = TestClient(cloud_broker.host, cloud_broker.port)
        for _reason, payload, properties in bad_cases:
            client.publish("cam_bin_remote/edge-1", payload, properties)
        wait_until(lambda: processor.metrics().get(PROCESSOR_REJECTED, 0) == len(bad_cases), what="all rejections")
        metrics = processor.metrics()
        for reason in {r for r, _, _ in bad_cases}:
            expected = sum(1 for r, _, _ in bad_cases if r == reason)
            assert metrics.get(f'facepipe_processor_rejected_total{{reason="{reason}"}}') == expected, reason
        assert metrics.get(PROCESSOR_STORED) == 0
        assert not list(store.rglob("*.png"))

        client.publish("cam_bin_remote/edge-1", good, props(seq=1))
        wait_until(lambda: processor.metrics().get(PROCESSOR_STORED) == 1, what="the valid face")
        stored = list(store.rglob("*.png"))
        assert len(stored) == 1 and stored[0].read_bytes() == good
        client.close()
        assert processor.process.running()
    finally:
        processor.stop()
    rejections = [json.loads(line) for line in processor.process.log_path.read_text().splitlines() if '"face.rejected"' in line]
    assert sorted(r["reason"] for r in rejections) == sorted(r for r, _, _ in bad_cases)


def test_faces_whose_topic_does_not_prove_their_device_are_refused(tmp_path: Path, cloud_broker: MosquittoBroker) -> None:
    """The review's identity gaps, on a broker that lets anyone publish anywhere (so only the processor stands in the
    way): metadata on the base topic claiming a device, faces under the processor's own user name and under the
    reserved `unknown`. None is stored; a bare face on the base topic (an MQTT 3.1.1 client) still is, under `unknown`."""
    store = tmp_path / "faces"
    processor = start_processor(cloud_broker, store, tmp_path, username="processor")
    try:
        good = synthetic_face()
        client = TestClient(cloud_broker.host, cloud_broker.port)
        cases = [
            ("device_mismatch", "cam_bin_remote", props(device="edge-a")),
            ("reserved_device", "cam_bin_remote/processor", props(device="processor")),
            ("reserved_device", "cam_bin_remote/unknown", props(device="unknown")),
            ("reserved_device", "cam_bin_remote/unknown", None),
        ]
        for _reason, topic, properties in cases:
            client.publish(topic, good, properties)
        client.publish("cam_bin_remote", good, None)
        client.close()
        wait_until(lambda: processor.metrics().get(PROCESSOR_REJECTED, 0) == len(cases), what="the refusals")
        wait_until(lambda: processor.metrics().get(PROCESSOR_STORED) == 1, what="the bare face")
        metrics = processor.metrics()
        assert metrics.get('facepipe_processor_rejected_total{reason="device_mismatch"}') == 1
        assert metrics.get('facepipe_processor_rejected_total{reason="reserved_device"}') == 3
        (stored,) = store.rglob("*.png")
        assert stored.relative_to(store).parts[0] == "unknown"
        assert json.loads(stored.with_name(stored.name + ".json").read_text()) == {"device": "unknown", "schema": "none"}
    finally:
        processor.stop()


def test_a_face_carrying_extra_chunks_is_stored_as_its_image_alone(tmp_path: Path, cloud_broker: MosquittoBroker) -> None:
    """The review's case: a 64x64 PNG with a 1 MiB tEXt chunk (within the default 2 MiB limit) was stored byte for byte.
    Now the stored object is the image alone, its pixels unchanged."""
    settings = ProcessorSettings(
        common=CommonSettings(device_id="cloud"),
        broker=BrokerSettings(host=cloud_broker.host, port=cloud_broker.port, topic="cam_bin_remote"),
        storage=StoreSettings(store=f"file://{tmp_path / 'faces'}"),
    )
    processor = ComponentProcess("processor", settings, tmp_path).start().wait_ready()
    try:
        face = synthetic_face(64)
        stuffed = face[:33] + chunk(b"tEXt", b"payload\x00" + b"A" * (1024 * 1024)) + face[33:]
        client = TestClient(cloud_broker.host, cloud_broker.port)
        client.publish("cam_bin_remote/edge-1", stuffed, props(face_size=64))
        client.close()
        wait_until(lambda: processor.metrics().get(PROCESSOR_STORED) == 1, what="the stuffed face")
        (stored,) = (tmp_path / "faces").rglob("*.png")
        assert stored.read_bytes() == face, f"stored {stored.stat().st_size} bytes for a {len(face)}-byte image"
    finally:
        processor.stop()


def test_a_plain_mqtt311_publisher_is_stored_by_arrival_time_and_hash(tmp_path: Path, cloud_broker: MosquittoBroker) -> None:
    """The original system's clients send bare image bytes with no properties: keep them, keyed by hash."""
    store = tmp_path / "faces"
    processor = start_processor(cloud_broker, store, tmp_path)
    try:
        legacy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        legacy.connect(cloud_broker.host, cloud_broker.port)
        legacy.loop_start()
        face = synthetic_face()
        legacy.publish("cam_bin_remote/legacy-cam", face, qos=1).wait_for_publish(10)
        legacy.disconnect()
        legacy.loop_stop()
        wait_until(lambda: processor.metrics().get(PROCESSOR_STORED) == 1, what="the legacy face")
        (stored,) = store.rglob("*.png")
        assert stored.relative_to(store).parts[0] == "legacy-cam"
        assert stored.name.endswith(f"_sha256-{hashlib.sha256(face).hexdigest()}.png")
    finally:
        processor.stop()


def test_an_edge_component_refuses_a_reserved_device_id(cloud_broker: MosquittoBroker) -> None:
    """Reserved names are refused wherever a device id is set, not only in the cloud chart's device list: a forwarder
    configured as `unknown` (where the cloud keeps faces no topic proves) stops before it connects, naming the setting."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, FACEPIPE_DEVICE_ID="unknown", REMOTE_MQTT_HOST=cloud_broker.host, REMOTE_MQTT_PORT=str(cloud_broker.port))
    result = subprocess.run(
        [sys.executable, "-m", "facepipe", "forwarder"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "FACEPIPE_DEVICE_ID" in result.stderr and "reserved" in result.stderr, result.stderr
