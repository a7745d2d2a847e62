"""What may skip detection: two gates that spare the detector.

`MotionGate` on frames where nothing moved, `StableRate` on frames that come too soon after the
last one while the tracked faces are stable (facepipe.camera.track.Tracker.stable).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facepipe.camera.track import Tracker


class MotionGate:
    """Skips detection on frames where (almost) nothing changed, judged on a small blurred grey copy."""

    def __init__(self, threshold: float, max_skip_seconds: float, width: int = 160) -> None:
        self.threshold = threshold
        self.max_skip_seconds = max_skip_seconds
        self.width = width
        self.previous: np.ndarray | None = None
        self.last_open = 0.0

    def should_detect(self, frame: np.ndarray, now: float) -> bool:
        height = max(1, round(frame.shape[0] * self.width / frame.shape[1]))
        small = cv2.resize(frame, (self.width, height), interpolation=cv2.INTER_AREA)
        grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        grey = cv2.GaussianBlur(grey, (5, 5), 0)
        previous, self.previous = self.previous, grey
        if previous is None or previous.shape != grey.shape or now - self.last_open >= self.max_skip_seconds:
            self.last_open = now
            return True
        changed = np.count_nonzero(cv2.absdiff(grey, previous) > 25) / grey.size
        if changed >= self.threshold:
            self.last_open = now
            return True
        return False


class StableRate:
    """While the tracked faces are stable (Tracker.stable), lets at most `max_fps` frames a second through to detection.

    Frames in view of known faces need not all be searched again: a new face is still found within
    1 / max_fps seconds, and once one is, its track restarts the full rate for `after_seconds`.
    """

    def __init__(self, tracker: Tracker, max_fps: float, after_seconds: float) -> None:
        self.tracker = tracker
        self.period = 1.0 / max_fps
        self.after_seconds = after_seconds
        self.last_open = -math.inf

    def should_detect(self, now: float) -> bool:
        if self.tracker.stable(now, self.after_seconds) and now - self.last_open < self.period:
            return False
        self.last_open = now
        return True
