"""The motion gate and the stable-faces rate."""

import numpy as np

from facepipe.camera.gates import MotionGate, StableRate
from facepipe.camera.track import Tracker
from tests.unit.test_track import cand


def test_motion_gate_skips_still_frames_but_detects_periodically() -> None:
    gate = MotionGate(threshold=0.005, max_skip_seconds=2.0)
    still = np.full((360, 640, 3), 120, np.uint8)
    moved = still.copy()
    moved[100:200, 200:300] = 250
    assert gate.should_detect(still, 0.0)  # the first frame
    assert not gate.should_detect(still, 0.1)
    assert gate.should_detect(moved, 0.2)
    assert not gate.should_detect(moved, 0.3)
    assert gate.should_detect(moved, 2.5)  # nothing moved, but the periodic check is due


def test_stable_rate_backs_off_while_the_faces_are_stable_and_returns_for_a_new_face() -> None:
    tracker = Tracker(republish_seconds=10.0)
    rate = StableRate(tracker, max_fps=2.0, after_seconds=0.5)
    analysed = []
    for k in range(56):  # 7 s at 8 frames/s: one face from the start, a second from 2 s, nobody after 4 s
        now = k / 8
        faces = [cand(100)] * (now < 4) + [cand(400)] * (2 <= now < 4)
        if rate.should_detect(now):
            analysed.append(k)
            tracker.update(faces, now)
    assert analysed == [
        0, 1, 2, 3,  # a new face: every frame for half a second
        7, 11, 15, 19,  # stable: every 4th frame (2/s); the second face is found at frame 19 (2.375 s)
        20, 21, 22,  # a new face again: every frame
        26, 30, 34, 38, 42,  # stable; the faces left at 4 s and their tracks end a second after they were last seen
        *range(43, 56),  # nobody in view: every frame
    ]  # fmt: skip
