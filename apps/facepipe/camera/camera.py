"""The camera component: frames in, one MQTT message per detected face out."""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter, Gauge, Histogram

from facepipe import contract, imaging
from facepipe.camera.detect import Detection, Detector, FullPasses, create_detector
from facepipe.camera.gates import MotionGate, StableRate
from facepipe.camera.sources import Frame, FrameSource, SourceError, classify, with_credentials
from facepipe.camera.track import Candidate, Tracker, quality
from facepipe.config import CameraSettings, redact_url
from facepipe.contract import CONTENT_TYPES, Capture, FaceMeta
from facepipe.metric_names import CAMERA_FACES_DETECTED, CAMERA_FACES_PUBLISHED, CAMERA_FRAMES, CAMERA_FRAMES_DROPPED
from facepipe.mqtt import AckTracker, BrokerLink, client_id
from facepipe.observe import counted
from facepipe.service import Component
from facepipe.status import StatusAnnouncer

# Faces waiting for the edge broker's acknowledgement; beyond this, while the broker is away,
# new faces are dropped and counted (their seq numbers still advance, so receivers see the gap).
MAX_PENDING = 10_000
DROP_REASONS = ("backlog_full", "broker_unavailable", "refused", "unacknowledged")
DRAIN_TIMEOUT_SECONDS = 20.0  # inside Kubernetes' default 30 s termination grace period
FAILED_REPORT_SECONDS = 5.0  # how long a camera whose source failed waits for the broker to take that status
DETECT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def crop_box(bbox: tuple[int, int, int, int], margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The face box grown by `margin` (a fraction of its size) on every side, clipped to the frame."""
    x, y, w, h = bbox
    dx, dy = round(w * margin), round(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(shape[1], x + w + dx), min(shape[0], y + h + dy)
    return x0, y0, x1, y1


def within_pixel_limit(crop: np.ndarray, max_pixels: int = contract.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The crop, scaled down (aspect kept) where it has more pixels than the processor accepts by default."""
    height, width = crop.shape[:2]
    if width * height <= max_pixels:
        return crop
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)


class Camera(Component):
    name = "camera"

    def __init__(self, settings: CameraSettings, log: logging.Logger, detector: Detector | None = None) -> None:
        super().__init__(settings.common, log)
        self.settings = settings
        self.detector = detector or create_detector(settings.detect)
        self.content_type = CONTENT_TYPES[settings.image_format]
        self.seq = 0
        self.lock = threading.Lock()
        self.acks: AckTracker[int] = AckTracker(lambda _seq: self._published(), lambda seq, reason: self._drop("refused", seq, str(reason)))
        self.source_open = threading.Event()
        self.full_passes = FullPasses(settings.detect.full_detect_seconds, settings.detect.full_detect_width)
        self.tracker = (
            Tracker(settings.track_republish_seconds, full_pass_seconds=settings.detect.full_detect_seconds)
            if settings.publish_policy == "track"
            else None
        )
        self.motion = MotionGate(settings.motion_threshold, settings.motion_max_skip_seconds) if settings.motion_gate else None
        self.stable_rate = (
            StableRate(self.tracker, settings.stable_max_fps, settings.stable_after_seconds)
            if self.tracker is not None and settings.stable_max_fps
            else None
        )
        reg = self.registry
        self.frames = Counter(CAMERA_FRAMES, "frames analysed", registry=reg)
        self.skipped = Counter(
            "facepipe_camera_frames_skipped_total",
            "frames not analysed, by reason: no_motion (motion gate), stable (tracked faces stable, FACEPIPE_STABLE_MAX_FPS)",
            ["reason"],
            registry=reg,
        )
        self.frames_dropped = Gauge(CAMERA_FRAMES_DROPPED, "frames skipped because the detector was busy (this run)", registry=reg)
        self.scene_changes = Counter(
            "facepipe_camera_scene_changes_total",
            "frames that started a new scene (a cut, each image of a folder): tracks end",
            registry=reg,
        )
        self.full_passes_total = Counter(
            "facepipe_camera_full_passes_total",
            "frames searched at full resolution (each still image, every FACEPIPE_FULL_DETECT_SECONDS of a video)",
            registry=reg,
        )
        self.detected = Counter(CAMERA_FACES_DETECTED, "faces detected", registry=reg)
        self.published = Counter(CAMERA_FACES_PUBLISHED, "faces accepted by the edge broker", registry=reg)
        self.dropped = Counter("facepipe_camera_faces_dropped_total", "faces not delivered, by reason", ["reason"], registry=reg)
        for reason in DROP_REASONS:  # at 0 from the start, so the first drops show in increase()
            self.dropped.labels(reason)
        self.detect_seconds = Histogram("facepipe_camera_detect_seconds", "detector time per frame", registry=reg, buckets=DETECT_BUCKETS)
        self.frames_read = Counter(
            "facepipe_camera_frames_read_total", "frames read from the source (analysed, skipped or dropped)", registry=reg
        )
        self.source_state = Gauge(
            "facepipe_camera_source_state", "1 for the video source's current state (contract.SOURCE_STATES)", ["state"], registry=reg
        )
        self.state = "opening"
        self.source_read = 0  # frames of the current source already counted in frames_read
        self.capture_clock = (time.monotonic(), 0)  # (when, frames read) at the previous status, for its fps
        broker = settings.broker
        self.link = BrokerLink("edge", broker, client_id(broker, "camera", settings.common.device_id), self.link_metrics, log)
        self.link.client.on_publish = self._on_ack
        self.status = StatusAnnouncer(
            self.link, contract.status_topic(broker.topic, self.name), self.identity(), settings.status.status_interval,
            acks=self.acks if broker.qos else None, capture=self.capture,
        )  # fmt: skip
        self._set_state("opening")

    # --- publishing ------------------------------------------------------------------------

    def _on_ack(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _props: Any) -> None:
        if self.settings.broker.qos:
            self.acks.acked(mid, reason)

    def _published(self) -> None:
        self.published.inc()

    def _drop(self, reason: str, seq: int, detail: str = "") -> None:
        self.dropped.labels(reason).inc()
        self.log.warning("face.dropped", extra={"reason": reason, "seq": seq, "detail": detail})

    def candidate(self, frame: Frame, index: int, detection: Detection, scored: bool) -> Candidate:
        """The crop (face box plus margin, from the full-resolution frame) and its quality."""
        x0, y0, x1, y1 = crop_box(detection.bbox, self.settings.crop_margin, frame.image.shape)
        crop: np.ndarray = frame.image[y0:y1, x0:x1]
        if scored:  # kept across frames by the tracker: copy, so the frame itself can go
            crop = crop.copy()
        return Candidate(detection, crop, frame.index, index, frame.captured_at, quality(detection, crop) if scored else 0.0)

    def publish(self, candidate: Candidate, track: int | None = None) -> None:
        payload = imaging.encode(
            within_pixel_limit(candidate.crop), self.content_type, self.settings.png_compression, self.settings.jpeg_quality
        )
        with self.lock:
            seq = self.seq
            self.seq += 1
        meta = FaceMeta(
            device=self.settings.common.device_id, camera=self.settings.camera_id, boot=self.boot, seq=seq,
            captured_at=datetime.fromtimestamp(candidate.captured_at, UTC), frame=candidate.frame_index,
            face=candidate.face_index, bbox=candidate.detection.bbox, score=candidate.detection.score,
            detector=self.detector.name, content_type=self.content_type, track=track,
        )  # fmt: skip
        qos = self.settings.broker.qos
        if len(self.acks) >= MAX_PENDING:
            self._drop("backlog_full", seq)
            return
        info = self.link.client.publish(self.settings.broker.topic, payload, qos=qos, properties=meta.to_properties())
        if qos:
            self.acks.sent(info.mid, seq)
        elif info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._published()
        else:
            self._drop("broker_unavailable", seq)

    # --- status ----------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        """The source's state, on /metrics and (at once, when it changed) in the retained status."""
        changed, self.state = state != self.state, state
        for name in contract.SOURCE_STATES:
            self.source_state.labels(name).set(1 if name == state else 0)
        if changed:
            self.status.changed()

    def _count_read(self, source: FrameSource) -> None:
        with self.lock:
            new, self.source_read = source.frames_read - self.source_read, source.frames_read
        self.frames_read.inc(new)

    def capture(self) -> Capture:
        """The camera's part of its status: the source's state, counters, and frames read per second since the last status."""
        now = time.monotonic()
        read, analysed, faces = counted(self.frames_read), counted(self.frames), counted(self.detected)
        with self.lock:
            then, read_then = self.capture_clock
            self.capture_clock = (now, read)
        fps = round((read - read_then) / (now - then), 2) if now > then else 0.0
        return Capture(self.settings.camera_id, self.state, read, analysed, faces, fps)

    # --- the loop --------------------------------------------------------------------------

    def _skip(self, reason: str) -> None:
        self.skipped.labels(reason).inc()

    def analyse(self, frame: Frame) -> None:
        if frame.new_scene:
            self._new_scene()
        if self.stable_rate is not None and not self.stable_rate.should_detect(frame.timestamp):
            self._skip("stable")
            return
        if self.motion is not None and not self.motion.should_detect(frame.image, frame.timestamp):
            self._skip("no_motion")
            return
        full = self.full_passes.due(frame.timestamp, frame.still)
        started = time.perf_counter()
        known = self.tracker.boxes() if self.tracker is not None else ()
        detections = self.detector.detect(frame.image, full, self.full_passes.width(frame.still), known)
        self.detect_seconds.observe(time.perf_counter() - started)
        self.frames.inc()
        self.detected.inc(len(detections))
        if full:
            self.full_passes_total.inc()
        if self.tracker is None:
            for index, detection in enumerate(detections):
                self.publish(self.candidate(frame, index, detection, scored=False))
            return
        candidates = [self.candidate(frame, index, detection, scored=True) for index, detection in enumerate(detections)]
        for track, candidate in self.tracker.update(candidates, frame.timestamp, full):
            self.publish(candidate, track)

    def _flush_tracks(self) -> None:
        """The source ended or the scene changed: publish each open track's better unsent crop."""
        if self.tracker is not None:
            for track, candidate in self.tracker.flush():
                self.publish(candidate, track)

    def _new_scene(self) -> None:
        """Nothing tracked so far is in this frame: a face at the place of an earlier one is a new face."""
        self.scene_changes.inc()
        self._flush_tracks()

    def _open(self, stop: threading.Event) -> FrameSource | None:
        """Open the source (with the credentials of FACEPIPE_SOURCE_USERNAME/_PASSWORD put into a stream URL);
        live sources are retried until they work, files fail at once. Logs name the source without credentials."""
        settings = self.settings
        spec, shown = with_credentials(settings.source, settings.source_username, settings.source_password), redact_url(settings.source)
        while not stop.is_set():
            try:
                source = FrameSource(spec, realtime=settings.realtime, loop=settings.loop)
                self.source_open.set()
                self._set_state("opened")
                self.log.info("source.opened", extra={"source": shown, "kind": classify(spec), "fps": source.reader.fps})
                return source
            except SourceError as exc:
                if classify(spec) in ("file", "directory"):
                    raise
                self._set_state("retrying")
                self.log.error("source.unavailable", extra={"source": shown, "error": str(exc), "retry_in": settings.reconnect_seconds})
                stop.wait(self.settings.reconnect_seconds)
        return None

    def _consume(self, source: FrameSource, stop: threading.Event) -> None:
        min_period = 1.0 / self.settings.max_fps if self.settings.max_fps else 0.0
        for frame in source.frames(stop):
            started = time.monotonic()
            self._count_read(source)
            self.analyse(frame)
            self.frames_dropped.set(source.dropped)
            if min_period:
                stop.wait(max(0.0, min_period - (time.monotonic() - started)))

    def run(self, stop: threading.Event) -> None:
        self.link.start()
        self.status.start()
        live = classify(self.settings.source) in ("device", "stream")
        try:
            while not stop.is_set():
                source = self._open(stop)
                if source is None:
                    break
                try:
                    # The source first (a missing file fails at once), then the broker before any frame.
                    while not stop.is_set() and not self.link.connected.wait(0.5):
                        pass
                    self._consume(source, stop)
                    self._count_read(source)
                    self._flush_tracks()
                finally:
                    source.close()
                    self.source_open.clear()
                    with self.lock:
                        self.source_read = 0
                if not live:
                    self._set_state("ended")
                    break
                self._set_state("retrying")
                self.log.warning(
                    "source.ended", extra={"source": redact_url(self.settings.source), "retry_in": self.settings.reconnect_seconds}
                )
                stop.wait(self.settings.reconnect_seconds)
            self._drain()
        except SourceError:
            self._set_state("failed")
            self.link.connected.wait(FAILED_REPORT_SECONDS)  # a missing file fails before the broker answered: report it
            raise
        finally:
            self.status.stop()
            self.link.stop()

    def _drain(self) -> None:
        """Wait (bounded, even when stopping) for the broker to acknowledge what was published; count what never was."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self.acks.wait_empty(0.2):
            pass
        unacknowledged = len(self.acks)
        if unacknowledged:
            self.log.error("faces.unacknowledged", extra={"count": unacknowledged})
            self.dropped.labels("unacknowledged").inc(unacknowledged)

    def ready(self) -> bool:
        return self.link.connected.is_set() and self.source_open.is_set()

    def summary(self) -> dict[str, Any]:
        return {
            "frames_read": counted(self.frames_read), "frames": counted(self.frames), "frames_dropped": counted(self.frames_dropped),
            "frames_skipped_no_motion": counted(self.skipped, reason="no_motion"),
            "frames_skipped_stable": counted(self.skipped, reason="stable"), "scene_changes": counted(self.scene_changes),
            "full_passes": counted(self.full_passes_total), "faces_detected": counted(self.detected),
            "published": counted(self.published), "dropped": counted(self.dropped),
            "boot": self.boot,
        }  # fmt: skip


__all__ = ["Camera", "SourceError"]
