"""Load for tests and the bench: a face publisher (the camera's stand-in) and a counting subscriber.

`LoadGenerator` publishes valid faces with full `FaceMeta` properties, each run with its own boot
id and seq 0, 1, 2, ...: synthetic faces by default, or `face_crops()`, real crops cut from a video
the way the camera cuts them. It keeps at most `window` messages unacknowledged (1: each face waits
for the broker's PUBACK of the one before), at a fixed `rate` or flat out, so `captured_at` is the
moment a face is handed to the client, not the time it waited in paho's queue. `sent` is exactly
the set of seqs the broker acknowledged (accepted responsibility for).

Two ways to drive it: `start()` publishes from a thread until `stop()` (the outage tests), `run(n)`
publishes n faces and returns when they are acknowledged (the bench).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from facepipe import contract
from facepipe.contract import FaceMeta
from facepipe.probe import synthetic_face

Bbox = tuple[int, int, int, int]


@dataclass(frozen=True)
class Face:
    """One face to publish: the encoded crop and what the detector said of it."""

    png: bytes
    bbox: Bbox
    score: float


def synthetic_faces() -> list[Face]:
    return [Face(synthetic_face(), (0, 0, 96, 96), 0.99)]


def face_crops(video: Path, model_dir: Path, count: int = 48, every: int = 4) -> list[Face]:
    """Up to `count` face crops from every `every`-th frame of `video`, as the camera makes them (YuNet box plus
    the camera's margin, PNG at the camera's compression level)."""
    import cv2

    from facepipe import imaging
    from facepipe.camera.camera import crop_box
    from facepipe.camera.detect import create_detector
    from facepipe.config import CameraSettings, DetectorSettings

    defaults = CameraSettings()
    detector = create_detector(DetectorSettings(model_dir=str(model_dir)))
    capture = cv2.VideoCapture(str(video))
    crops: list[Face] = []
    index = 0
    try:
        while len(crops) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                for found in detector.detect(frame):
                    x0, y0, x1, y1 = crop_box(found.bbox, defaults.crop_margin, frame.shape)
                    png = imaging.encode(frame[y0:y1, x0:x1], contract.PNG, defaults.png_compression)
                    crops.append(Face(png, found.bbox, round(found.score, 3)))
            index += 1
    finally:
        capture.release()
    if not crops:
        raise RuntimeError(f"no face found in {video}")
    return crops


@dataclass
class Published:
    """What one `run()` did; times are time.time()."""

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


class LoadGenerator:
    """Publish faces to `topic` with at most `window` unacknowledged; `rate` per second (None: flat out)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        topic: str = contract.DEFAULT_LOCAL_TOPIC,
        device: str = "edge-1",
        camera: str = "load0",
        faces: list[Face] | None = None,
        detector: str = "loadgen/synthetic",
        rate: float | None = 20.0,
        count: int | None = None,
        window: int = 1,
        qos: int = 1,
        ack_timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.device, self.camera, self.detector = device, camera, detector
        self.faces = faces or synthetic_faces()
        self.rate, self.count, self.window, self.qos, self.ack_timeout = rate, count, window, qos, ack_timeout
        self.boot = ""
        self.sent: list[int] = []  # seqs of this run the broker acknowledged (QoS 1) or took (QoS 0), in order
        self.sent_at: dict[int, float] = {}  # seq -> time.time() of its acknowledgement
        self.published = 0  # faces of this run handed to the client
        self.failed = 0  # acknowledgements of this run with a failure reason code
        self.last_acked = 0.0
        self.error: BaseException | None = None
        self._pending: dict[int, tuple[str, int]] = {}  # mid -> (boot, seq), awaiting its acknowledgement
        self._early: dict[int, tuple[Any, float]] = {}  # acknowledgements that came before publish() returned
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"loadgen-{device}-{camera}-{secrets.token_hex(4)}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(window)
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_disconnect = lambda *_a: self._connected.clear()
        self.client.on_publish = self._on_publish

    @property
    def stream(self) -> tuple[str, str, str]:
        """(device, camera, boot) of the current run: what its object keys carry."""
        return (self.device, self.camera, self.boot)

    def connect(self, timeout: float = 10.0) -> LoadGenerator:
        self.client.connect(self.host, self.port, keepalive=60)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.client.loop_stop()
            raise TimeoutError(f"load generator could not connect to {self.host}:{self.port}")
        return self

    # --- acknowledgements -------------------------------------------------------------------------

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        now = time.time()
        with self._cond:
            pending = self._pending.pop(mid, None)
            if pending is None:
                self._early[mid] = (reason, now)
            elif pending[0] == self.boot:
                self._acknowledged(pending[1], reason, now)

    def _acknowledged(self, seq: int, reason: Any, at: float) -> None:
        """Record one acknowledgement (the condition held)."""
        if reason is not None and getattr(reason, "is_failure", False):
            self.failed += 1
        self.sent.append(seq)
        self.sent_at[seq] = at
        self.last_acked = at
        self._cond.notify_all()

    def _unacknowledged(self) -> int:
        return self.published - len(self.sent)

    # --- publishing -------------------------------------------------------------------------------

    def _publish_run(self, count: int | None, rate: float | None) -> tuple[float, float]:
        """Publish `count` faces (None: until stopped) as a new run, then wait for their acknowledgements;
        returns the times of the start and of the last publish."""
        with self._cond:
            self.boot = secrets.token_hex(4)  # hex: no '_' in the object key's name part
            self.sent, self.sent_at, self.published, self.failed = [], {}, 0, 0
        started, clock = time.time(), time.monotonic()
        seq = 0
        while not self._stop.is_set() and (count is None or seq < count):
            if rate:
                delay = clock + seq / rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
            with self._cond:
                self._cond.wait_for(lambda: self._unacknowledged() < self.window, timeout=self.ack_timeout)
            face = self.faces[seq % len(self.faces)]
            info = self.client.publish(self.topic, face.png, qos=self.qos, properties=self._meta(seq, face).to_properties())
            with self._cond:
                self.published += 1
                early = self._early.pop(info.mid, None)
                if early is not None:
                    self._acknowledged(seq, *early)
                else:
                    self._pending[info.mid] = (self.boot, seq)
            seq += 1
        last_sent = time.time()
        with self._cond:
            self._cond.wait_for(lambda: self._unacknowledged() <= 0, timeout=self.ack_timeout)
        return started, last_sent

    def _meta(self, seq: int, face: Face) -> FaceMeta:
        return FaceMeta(
            device=self.device, camera=self.camera, boot=self.boot, seq=seq, captured_at=datetime.now(UTC),
            frame=seq, face=0, bbox=face.bbox, score=face.score, detector=self.detector,
        )  # fmt: skip

    def run(self, count: int, rate: float | None = None) -> Published:
        """Publish `count` faces (at `rate` per second, or flat out) and wait for their acknowledgements."""
        if not self._connected.is_set():
            self.connect()
        started, last_sent = self._publish_run(count, rate)
        with self._cond:
            acked, failed, last_acked = len(self.sent), self.failed, self.last_acked
        return Published(self.boot, count, acked, failed, started, last_sent, max(last_acked, last_sent))

    # --- in the background ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> LoadGenerator:
        """Connect, then publish `count` faces (None: until stopped) at `rate` from a thread."""
        self.connect(timeout)
        self._thread = threading.Thread(target=self._background, name=f"loadgen-{self.camera}", daemon=True)
        self._thread.start()
        return self

    def _background(self) -> None:
        try:
            self._publish_run(self.count, self.rate)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def sent_count(self) -> int:
        with self._cond:
            return len(self.sent)

    def wait_sent(self, count: int, timeout: float = 30.0) -> None:
        """Block until `count` faces have been acknowledged."""
        deadline = time.monotonic() + timeout
        while self.sent_count() < count:
            alive = self._thread is not None and self._thread.is_alive()
            if time.monotonic() > deadline or self.error is not None or not alive:
                raise AssertionError(f"load generator: {self.sent_count()}/{count} faces acknowledged (error: {self.error!r})")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop publishing (what was published is acknowledged first, within ack_timeout) and disconnect; safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(2 * self.ack_timeout + 5)
        self.client.disconnect()
        self.client.loop_stop()

    def stop(self) -> LoadGenerator:
        """close(), then fail if the publishing thread raised."""
        self.close()
        if self.error is not None:
            raise AssertionError(f"load generator failed: {self.error!r}") from self.error
        return self

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"counter-{secrets.token_hex(3)}", protocol=mqtt.MQTTv5)
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
