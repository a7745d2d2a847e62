"""Bad input on the cloud topic: the processor keeps running, counts and logs each rejection by
reason, stores none of them, and stores the next valid face."""

import hashlib
import json
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facepipe import imaging
from facepipe.brokers import MosquittoBroker
from facepipe.config import BrokerSettings, CommonSettings, ProcessorSettings, StoreSettings
from facepipe.contract import FaceMeta
from facepipe.probe import synthetic_face
from facepipe.run import ComponentProcess
from tests.support.mqtt import TestClient, wait_until

MAX_BYTES = 200_000


def start_processor(broker: MosquittoBroker, store: Path, workdir: Path) -> ComponentProcess:
    settings = ProcessorSettings(
        common=CommonSettings(device_id="cloud"),
        broker=BrokerSettings(host=broker.host, port=broker.port, topic="cam_bin_remote"),
        storage=StoreSettings(store=f"file://{store}"),
        max_bytes=MAX_BYTES,
    )
    return ComponentProcess("processor", settings, workdir).start().wait_ready()


def props(device: str = "edge-1", content_type: str = "image/png", seq: int = 0) -> Properties:
    meta = FaceMeta(device, "cam0", "b00f", seq, datetime.now(UTC), 0, 0, (1, 2, 3, 4), 0.9, "test/1", content_type)
    return meta.to_properties()


def bomb() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 100_000)
    return imaging.PNG_SIGNATURE + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat + b"\x00" * 4 + imaging.PNG_IEND


def test_bad_payloads_are_rejected_counted_and_logged(tmp_path: Path, cloud_broker: MosquittoBroker) -> None:
    store = tmp_path / "faces"
    processor = start_processor(cloud_broker, store, tmp_path)
    try:
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
        ]
        client = TestClient(cloud_broker.host, cloud_broker.port)
        for _reason, payload, properties in bad_cases:
            client.publish("cam_bin_remote/edge-1", payload, properties)
        wait_until(lambda: processor.metrics().get("facepipe_processor_rejected_total", 0) == len(bad_cases), what="all rejections")
        metrics = processor.metrics()
        for reason in {r for r, _, _ in bad_cases}:
            expected = sum(1 for r, _, _ in bad_cases if r == reason)
            assert metrics.get(f'facepipe_processor_rejected_total{{reason="{reason}"}}') == expected, reason
        assert metrics.get("facepipe_processor_stored_total") == 0
        assert not list(store.rglob("*.png"))

        client.publish("cam_bin_remote/edge-1", good, props(seq=1))
        wait_until(lambda: processor.metrics().get("facepipe_processor_stored_total") == 1, what="the valid face")
        stored = list(store.rglob("*.png"))
        assert len(stored) == 1 and stored[0].read_bytes() == good
        client.close()
        assert processor.process.running()
    finally:
        processor.stop()
    rejections = [json.loads(line) for line in processor.process.log_path.read_text().splitlines() if '"face.rejected"' in line]
    assert sorted(r["reason"] for r in rejections) == sorted(r for r, _, _ in bad_cases)


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
        wait_until(lambda: processor.metrics().get("facepipe_processor_stored_total") == 1, what="the legacy face")
        (stored,) = store.rglob("*.png")
        assert stored.relative_to(store).parts[0] == "legacy-cam"
        assert stored.name.endswith(f"_sha256-{hashlib.sha256(face).hexdigest()}.png")
    finally:
        processor.stop()
