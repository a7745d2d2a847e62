"""The track publish policy and when faces count as stable."""

import numpy as np

from facepipe.camera.detect import Detection
from facepipe.camera.track import Candidate, Tracker, iou


def cand(x: int, score: float = 0.9, frame: int = 0, face: int = 0) -> Candidate:
    return Candidate(Detection((x, 50, 40, 40), score), np.zeros((48, 48, 3), np.uint8), frame, face, 0.0, score)


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 10, 10)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 1 / 3) < 1e-9


def test_a_face_staying_in_view_is_sent_first_then_rarely_then_its_best_at_the_end() -> None:
    tracker = Tracker(republish_seconds=10.0)
    sent = []
    for i in range(300):  # 10 s at 30 fps, the face drifting slowly, best crop at frame 150
        sent += tracker.update([cand(100 + i // 30, score=0.99 if i == 150 else 0.8, frame=i)], now=i / 30)
    assert [c.frame_index for _, c in sent] == [0]  # no republish before 10 s
    sent += tracker.update([], now=300 / 30 + 2)  # the face left: the track ends
    assert [c.frame_index for _, c in sent] == [0, 150]
    assert {t for t, _ in sent} == {0}


def test_republish_after_the_interval_only_when_better() -> None:
    tracker = Tracker(republish_seconds=1.0)
    out = tracker.update([cand(100, 0.5)], now=0.0)
    out += tracker.update([cand(101, 0.6)], now=0.5)  # better, but too soon
    out += tracker.update([cand(102, 0.55)], now=1.2)  # interval passed: best since last send (0.6) goes
    out += tracker.update([cand(103, 0.4)], now=2.5)  # interval passed but nothing better than 0.6
    assert [c.quality for _, c in out] == [0.5, 0.6]


def test_two_faces_are_two_tracks_and_every_distinct_face_arrives() -> None:
    tracker = Tracker(republish_seconds=10.0)
    out = tracker.update([cand(100, face=0), cand(400, face=1)], now=0.0)
    out += tracker.update([cand(102, face=0), cand(398, face=1)], now=0.1)
    out += tracker.flush()
    assert sorted(t for t, _ in out) == [0, 1]


def test_faces_are_stable_once_tracked_and_none_new_for_a_while() -> None:
    tracker = Tracker(republish_seconds=10.0)
    assert not tracker.stable(0.0, after_seconds=0.5)  # nobody in view
    tracker.update([cand(100)], now=0.0)
    assert not tracker.stable(0.25, after_seconds=0.5)
    assert tracker.stable(0.5, after_seconds=0.5)
    tracker.update([cand(101), cand(400)], now=1.0)  # a second face
    assert not tracker.stable(1.25, after_seconds=0.5)
    assert tracker.stable(1.5, after_seconds=0.5)
    tracker.update([], now=3.0)  # both left: their tracks end
    assert not tracker.stable(3.0, after_seconds=0.5)
