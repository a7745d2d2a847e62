"""Camera building blocks: crop margins, the newest-frame slot, the detector's scaling, seq gaps, skipped frames."""

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from facepipe import contract
from facepipe.camera.camera import Camera, crop_box, within_pixel_limit
from facepipe.camera.detect import Box, Detection, downscale, to_source
from facepipe.camera.sources import Frame, LatestFrameSlot, SourceError, classify, open_reader
from facepipe.config import CameraSettings
from facepipe.contract import FaceMeta
from facepipe.logger import SeqTracker
from facepipe_dev.paths import VIDEO


def test_crop_box_adds_margin_and_clips() -> None:
    assert crop_box((100, 100, 50, 40), 0.2, (480, 640, 3)) == (90, 92, 160, 148)
    assert crop_box((0, 0, 50, 40), 0.5, (480, 640, 3)) == (0, 0, 75, 60)
    assert crop_box((600, 450, 40, 30), 0.5, (480, 640, 3)) == (580, 435, 640, 480)


def test_every_crop_fits_what_the_processor_accepts() -> None:
    """A face filling a 4K frame (with the largest margin) is scaled down to the pixel limit; the box it reports
    still allows the crop (contract.max_crop_size), so the processor takes it."""
    frame = np.zeros((2160, 3840, 3), np.uint8)
    bbox = (1200, 100, 1800, 1900)
    x0, y0, x1, y1 = crop_box(bbox, contract.MAX_CROP_MARGIN, frame.shape)
    crop = within_pixel_limit(frame[y0:y1, x0:x1])
    height, width = crop.shape[:2]
    assert width * height <= contract.DEFAULT_MAX_PIXELS and abs(width / height - (x1 - x0) / (y1 - y0)) < 0.01
    largest = contract.max_crop_size(bbox)
    assert width <= largest[0] and height <= largest[1]
    small = frame[:100, :80]
    assert within_pixel_limit(small) is small


def test_downscale_and_back() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    small, back = downscale(frame, 320)
    assert small.shape == (180, 320, 3) and back == 4.0
    assert to_source(np.array([10.0, 20.0, 30.0, 40.0]), back, frame.shape) == (40, 80, 120, 160)
    assert downscale(frame, 0)[1] == 1.0
    assert to_source(np.array([310.0, 170.0, 30.0, 30.0]), back, frame.shape) == (1240, 680, 40, 40)


def test_latest_frame_slot_keeps_newest_and_counts_drops() -> None:
    slot = LatestFrameSlot()
    for i in range(5):
        slot.put(Frame(i, np.zeros((1, 1, 3), np.uint8), 0.0, 0.0))
    frame = slot.take(timeout=0.1)
    assert frame is not None and frame.index == 4
    assert slot.dropped == 4
    assert slot.take(timeout=0.01) is None
    slot.end()
    assert slot.ended


def test_latest_frame_slot_hands_back_only_a_frame_nobody_took() -> None:
    slot = LatestFrameSlot()
    first, second = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    assert slot.put(Frame(0, first, 0.0, 0.0)) is None
    assert slot.put(Frame(1, second, 0.0, 0.1)) is first  # frame 0 was dropped: its array may be read into
    taken = slot.take(timeout=0.1)
    assert taken is not None and taken.image is second
    assert slot.put(Frame(2, first, 0.0, 0.2)) is None  # the camera holds frame 1: never handed back


def test_a_video_decodes_into_a_handed_back_array() -> None:
    reader = open_reader(str(VIDEO))
    try:
        first = reader.read()
        assert first is not None
        expected = first.copy()
        reader.close()
        reader = open_reader(str(VIDEO))
        again = reader.read(into=np.zeros_like(first))
        assert again is not None and np.array_equal(again, expected)
        spare = again
        following = reader.read(into=spare)
        assert following is spare  # same shape: no new array
    finally:
        reader.close()


def test_latest_frame_slot_wakes_a_waiting_consumer() -> None:
    slot = LatestFrameSlot()
    got: list[int] = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(timeout=5).index))  # type: ignore[union-attr]
    consumer.start()
    slot.put(Frame(9, np.zeros((1, 1, 3), np.uint8), 0.0, 0.0))
    consumer.join(5)
    assert got == [9]


def test_source_classification_and_missing_sources() -> None:
    assert classify("0") == "device" and classify("/dev/video2") == "device"
    assert classify("rtsp://cam.local/stream") == "stream" and classify("http://x/mjpg") == "stream"
    assert classify("clip.mp4") == "file"
    with pytest.raises(SourceError, match="does not exist"):
        open_reader("/dev/video99")
    with pytest.raises(SourceError, match="does not exist"):
        open_reader("/nonexistent/clip.mp4")


def _meta(seq: int, boot: str = "b1") -> FaceMeta:
    return FaceMeta("d", "c", boot, seq, datetime.now(UTC), 0, 0, (0, 0, 1, 1), 1.0, "t")


def test_seq_tracker_counts_gaps_after_the_grace_period_and_repeats() -> None:
    now = [0.0]
    tracker = SeqTracker(grace=5.0, clock=lambda: now[0])
    assert tracker.observe(_meta(0)) is False
    assert tracker.observe(_meta(1)) is False
    assert tracker.observe(_meta(5)) is False  # 2, 3, 4 missing: suspected, not yet lost
    assert tracker.expire() == []
    assert tracker.observe(_meta(3)) is False  # a late face fills its gap: not a repeat
    assert tracker.observe(_meta(5)) is True  # a real repeat
    now[0] = 6.0
    assert tracker.expire() == [(("d", "c", "b1"), 2, 2), (("d", "c", "b1"), 4, 4)]
    assert tracker.expire() == []
    assert tracker.observe(_meta(0, boot="b2")) is False  # a new camera run starts its own sequence


def test_seq_tracker_backlog_overtaken_by_new_faces_is_not_lost() -> None:
    """After a reconnect, new faces may arrive before the camera's resent backlog."""
    now = [0.0]
    tracker = SeqTracker(grace=5.0, clock=lambda: now[0])
    for seq in [0, 1, 2, 10, 11, 3, 4, 5, 6, 7, 8, 9, 12]:
        assert tracker.observe(_meta(seq)) is False
    now[0] = 60.0
    assert tracker.expire() == []


class OneFace:
    """A detector that finds one face in every frame."""

    name = "one-face"

    def detect(self, frame: np.ndarray, full: bool = False, full_width: int = 0, known: Sequence[Box] = ()) -> list[Detection]:
        return [Detection((100, 100, 60, 60), 0.9)]


def test_camera_skips_frames_while_the_faces_are_stable_then_without_motion_and_counts_each_reason() -> None:
    settings = CameraSettings(motion_gate=True, stable_max_fps=2.0, stable_after_seconds=0.5)
    camera = Camera(settings, logging.getLogger("test"), detector=OneFace())
    scene = np.zeros((240, 320, 3), np.uint8)

    def moved(k: int) -> np.ndarray:
        image = scene.copy()
        image[:, 10 * k : 10 * k + 40] = 255  # a bar moving across the frame
        return image

    for k in range(16):  # 2 s at 8 frames/s, the scene moving
        camera.analyse(Frame(k, moved(k), 0.0, k / 8))
    totals = camera.summary()
    # The face is new for half a second (frames 0-3 analysed), then stable: every 4th frame (2/s).
    assert (totals["frames"], totals["frames_skipped_stable"], totals["frames_skipped_no_motion"]) == (7, 9, 0)
    for k in range(16, 24):  # a still scene: the frames the stable rate lets through meet the motion gate
        camera.analyse(Frame(k, moved(15), 0.0, k / 8))
    totals = camera.summary()
    assert (totals["frames"], totals["frames_skipped_stable"], totals["frames_skipped_no_motion"]) == (7, 15, 2)
