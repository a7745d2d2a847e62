"""The detection plan: which frames get the full pass and at what width, which detections get the second look, and how tracks of faces only that pass finds live on."""

from pathlib import Path

import numpy as np

from facepipe.camera.detect import Detection, FullPasses, YuNetDetector, create_detector, downscale
from facepipe.camera.track import Candidate, Tracker
from facepipe.config import DetectorSettings


def test_a_video_gets_a_full_pass_first_then_one_per_period_on_its_own_timeline() -> None:
    plan = FullPasses(3.0)
    fps = 10
    due = [k for k in range(95) if plan.due(k / fps, still=False)]
    assert due == [0, 30, 60, 90]


def test_every_still_image_gets_a_full_pass() -> None:
    plan = FullPasses(3.0)
    assert all(plan.due(float(k), still=True) for k in range(5))


def test_a_source_opened_again_starts_over_with_a_full_pass() -> None:
    plan = FullPasses(3.0)
    assert plan.due(0.0, still=False)
    assert plan.due(3.0, still=False)
    assert not plan.due(4.0, still=False)
    assert plan.due(0.5, still=False)  # a looped file: its timeline starts again


def test_period_zero_is_the_old_behaviour_never_a_full_pass() -> None:
    plan = FullPasses(0.0)
    assert not any(plan.due(float(k), still=k % 2 == 0) for k in range(10))


def test_a_small_source_is_never_downscaled() -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    same, back = downscale(frame, 320)
    assert same is frame and back == 1.0
    smaller, back = downscale(np.zeros((360, 640, 3), np.uint8), 320)
    assert smaller.shape[:2] == (180, 320) and back == 2.0


def candidate(x: int, frame: int) -> Candidate:
    return Candidate(Detection((x, 50, 24, 24), 0.9), np.zeros((30, 30, 3), np.uint8), frame, 0, 0.0, 0.5)


def test_a_face_only_the_full_pass_finds_keeps_its_track_until_the_next_full_pass() -> None:
    tracker = Tracker(republish_seconds=10.0, full_pass_seconds=3.0)
    assert [track for track, _ in tracker.update([candidate(100, 0)], 0.0, full=True)] == [0]  # new: published
    for k in range(1, 30):  # the downscaled passes between do not see it: the track waits
        assert tracker.update([], k / 10, full=False) == []
    assert tracker.update([candidate(101, 30)], 3.0, full=True) == []  # the same face again: no new message
    assert len(tracker.tracks) == 1


def test_a_face_the_downscaled_pass_sees_ends_after_a_second_unseen_as_before() -> None:
    tracker = Tracker(republish_seconds=10.0, full_pass_seconds=3.0)
    tracker.update([candidate(100, 0)], 0.0, full=False)
    tracker.update([], 1.2, full=False)
    assert tracker.tracks == []


def test_a_still_image_gets_its_full_pass_at_its_own_resolution_a_video_at_most_the_video_width() -> None:
    plan = FullPasses(4.0, video_width=480)
    assert plan.width(still=True) == 0
    assert plan.width(still=False) == 480
    assert FullPasses(4.0).width(still=False) == 0  # FACEPIPE_FULL_DETECT_WIDTH=0: the frame as it is


def test_a_video_full_pass_searches_a_bounded_copy_and_never_upscales(model_dir: Path) -> None:
    detector = yunet(model_dir)
    detector.detect(np.zeros((360, 640, 3), np.uint8), full=True, full_width=480)
    assert detector.full_pass.input_size == (480, 270)
    detector.detect(np.zeros((360, 640, 3), np.uint8), full=True, full_width=0)
    assert detector.full_pass.input_size == (640, 360)
    detector.detect(np.zeros((240, 320, 3), np.uint8), full=True, full_width=480)
    assert detector.full_pass.input_size == (320, 240)


def test_an_unsure_detection_gets_the_second_look_unless_it_is_on_a_tracked_face(model_dir: Path) -> None:
    detector = yunet(model_dir)
    blank = np.full((360, 640, 3), 128, np.uint8)  # nothing there: the second look cannot find a face
    box = (300, 150, 40, 48)
    assert detector.unconfirmed(blank, box, 0.55, known=())
    assert detector.unconfirmed(blank, box, 0.55, known=[(600, 300, 30, 30)])  # a track elsewhere does not vouch for it
    assert not detector.unconfirmed(blank, box, 0.55, known=[(304, 152, 40, 46)])  # confirmed when its track started
    assert not detector.unconfirmed(blank, box, 0.75, known=())  # sure enough: no second look


def yunet(model_dir: Path) -> YuNetDetector:
    detector = create_detector(DetectorSettings(model_dir=str(model_dir)))
    assert isinstance(detector, YuNetDetector)
    return detector
