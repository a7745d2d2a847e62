"""Load for the pipeline benchmarks: real face crops, a windowed publisher and a counting subscriber.

The publisher sends crops cut from the test video the way the camera cuts them (YuNet box plus
the camera's margin, PNG at the camera's compression level), each with valid `FaceMeta`
properties whose `captured_at` is the moment it is handed to the client. At a fixed rate it
publishes on schedule; flat out it keeps `window` messages in flight (unacknowledged), so
`captured_at` stays the send time instead of the time a message entered paho's own queue.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt

from bench.support import DEVICE
from facepipe import imaging
from facepipe.camera.camera import crop_box
from facepipe.camera.detect import create_detector
from facepipe.config import CameraSettings, DetectorSettings
from facepipe.contract import PNG, FaceMeta


def face_crops(video: Path, model_dir: Path, count: int = 48, every: int = 4) -> list[tuple[bytes, tuple[int, int, int, int], float]]:
    """Up to `count` (png, bbox, score) face crops from every `every`-th frame of `video`, as the camera makes them."""
    defaults = CameraSettings()
    detector = create_detector(DetectorSettings(model_dir=str(model_dir)))
    capture = cv2.VideoCapture(str(video))
    crops: list[tuple[bytes, tuple[int, int, int, int], float]] = []
    index = 0
    try:
        while len(crops) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                for found in detector.detect(frame):
                    x0, y0, x1, y1 = crop_box(found.bbox, defaults.crop_margin, frame.shape)
                    png = imaging.encode(frame[y0:y1, x0:x1], PNG, defaults.png_compression)
                    crops.append((png, found.bbox, found.score))
            index += 1
    finally:
        capture.release()
    if not crops:
        raise RuntimeError(f"no face found in {video}")
    return crops


@dataclass
class Published:
    """What one publishing run did; times are time.time()."""

    boot: str
    count: int
    acked: int
    failed: int
    started: float
    last_sent: float
    last_acked: float

    @property
    def send_rate(self) -> float:
        return self.count / max(1e-9, self.last_sent - self.started)

    @property
    def acked_rate(self) -> float:
        return self.acked / max(1e-9, self.last_acked - self.started)


class Publisher:
    """An MQTT 5 face publisher (the camera's stand-in) with a bounded number of messages in flight."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        crops: list[tuple[bytes, tuple[int, int, int, int], float]],
        *,
        qos: int = 1,
        window: int = 100,
        device: str = DEVICE,
        camera: str = "load0",
    ) -> None:
        self.topic, self.crops, self.qos, self.window = topic, crops, qos, window
        self.device, self.camera = device, camera
        self.cond = threading.Condition()
        self.acked = 0
        self.failed = 0
        self.last_acked = 0.0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{secrets.token_hex(3)}", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(window)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: Any, _props: Any) -> None:
        with self.cond:
            self.acked += 1
            if reason is not None and getattr(reason, "is_failure", False):
                self.failed += 1
            self.last_acked = time.time()
            self.cond.notify_all()

    def run(self, count: int, rate: float | None = None, ack_timeout: float = 120.0) -> Published:
        """Publish `count` faces (at `rate` per second, or flat out) and wait for their acknowledgements."""
        boot = secrets.token_hex(4)
        with self.cond:
            base_acked, base_failed = self.acked, self.failed
        started = time.time()
        clock = time.monotonic()
        sent = 0
        for seq in range(count):
            if rate:
                delay = clock + seq / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            with self.cond:
                self.cond.wait_for(lambda s=sent: s - (self.acked - base_acked) < self.window, timeout=ack_timeout)
            png, bbox, score = self.crops[seq % len(self.crops)]
            meta = FaceMeta(
                device=self.device, camera=self.camera, boot=boot, seq=seq, captured_at=datetime.now(UTC),
                frame=seq, face=0, bbox=bbox, score=round(score, 3), detector="yunet/bench-crops",
            )  # fmt: skip
            self.client.publish(self.topic, png, qos=self.qos, properties=meta.to_properties())
            sent += 1
        last_sent = time.time()
        with self.cond:
            self.cond.wait_for(lambda: self.acked - base_acked >= count, timeout=ack_timeout)
            acked, failed, last_acked = self.acked - base_acked, self.failed - base_failed, self.last_acked
        return Published(boot, count, acked, failed, started, last_sent, max(last_acked, last_sent))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CountingSubscriber:
    """Counts distinct faces (boot, seq) arriving on a topic filter; notes first and last arrival."""

    def __init__(self, host: str, port: int, topic: str, qos: int = 1, keep: bool = False) -> None:
        self.keep = keep
        self.records: list[dict[str, str]] = []  # the user properties of every message (+ "_arrived": time.time()), when keep
        self.lock = threading.Condition()
        self.seen: dict[str, set[int]] = {}
        self.messages = 0
        self.without_properties = 0
        self.first = 0.0
        self.last = 0.0
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{secrets.token_hex(3)}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect(host, port, keepalive=60)
        self.client.subscribe(topic, qos)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {topic} from {host}:{port}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        props = dict(getattr(getattr(msg, "properties", None), "UserProperty", None) or [])
        with self.lock:
            self.messages += 1
            if "boot" not in props or "seq" not in props:
                self.without_properties += 1
                return
            self.seen.setdefault(props["boot"], set()).add(int(props["seq"]))
            if self.keep:
                self.records.append({**props, "_arrived": repr(now)})
            self.first = self.first or now
            self.last = now
            self.lock.notify_all()

    def count(self, boot: str) -> int:
        with self.lock:
            return len(self.seen.get(boot, ()))

    def wait(self, boot: str, count: int, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: len(self.seen.get(boot, ())) >= count, timeout)

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()
            self.records.clear()
            self.messages = self.without_properties = 0
            self.first = self.last = 0.0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
