"""Duplicate suppression: a light IoU tracker and the `track` publish policy.

With `track`, a face is published when its track starts, then at most every
`republish_seconds` when a better crop has been seen, and once more when the track ends if
the best crop since the last publish beats what was sent. Quality combines the detector's
score, the face's size and its sharpness, so the crop kept is the clearest, largest view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facepipe.camera.detect import Detection, iou

FULL_SIZE_PIXELS = 96 * 96  # faces this big or bigger get the full size factor
SHARP_LAPLACIAN_VARIANCE = 150.0  # ... and this sharp or sharper the full sharpness factor


def quality(detection: Detection, crop: np.ndarray) -> float:
    """0..1: detector score x size factor x sharpness factor."""
    _x, _y, w, h = detection.bbox
    size = min(1.0, (w * h) / FULL_SIZE_PIXELS)
    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    sharpness = min(1.0, float(cv2.Laplacian(grey, cv2.CV_64F).var()) / SHARP_LAPLACIAN_VARIANCE) if grey.size else 0.0
    return detection.score * size * (0.5 + 0.5 * sharpness)


@dataclass
class Candidate:
    """A crop worth publishing: where it came from and how good it is."""

    detection: Detection
    crop: np.ndarray
    frame_index: int
    face_index: int
    captured_at: float
    quality: float


@dataclass
class Track:
    id: int
    bbox: tuple[int, int, int, int]
    last_seen: float
    last_published_at: float = 0.0
    published_quality: float = -1.0
    best: Candidate | None = None  # the best crop not yet published
    seen_downscaled: bool = False  # found on a downscaled copy at least once, not only by full-resolution passes


class Tracker:
    """Greedy IoU matching of detections to tracks, frame after frame."""

    def __init__(
        self, republish_seconds: float, iou_threshold: float = 0.3, max_missed_seconds: float = 1.0, full_pass_seconds: float = 0.0
    ) -> None:
        self.republish_seconds = republish_seconds
        self.iou_threshold = iou_threshold
        self.max_missed_seconds = max_missed_seconds
        # A face only the full-resolution passes find is unseen between them: its track waits for the next one.
        self.full_pass_seconds = full_pass_seconds
        self.tracks: list[Track] = []
        self.next_id = 0
        self.last_started = -math.inf  # when the newest track started

    def stable(self, now: float, after_seconds: float) -> bool:
        """Faces are in view (tracked) and none has appeared for `after_seconds`."""
        return bool(self.tracks) and now - self.last_started >= after_seconds

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Where the tracked faces were last seen."""
        return [track.bbox for track in self.tracks]

    def update(self, candidates: list[Candidate], now: float, full: bool = False) -> list[tuple[int, Candidate]]:
        """Match this frame's candidates (`full`: found by a full-resolution pass); return (track id, crop) pairs to publish now."""
        out: list[tuple[int, Candidate]] = []
        pairs = sorted(
            ((iou(t.bbox, c.detection.bbox), ti, ci) for ti, t in enumerate(self.tracks) for ci, c in enumerate(candidates)),
            reverse=True,
        )
        matched_tracks: set[int] = set()
        matched: set[int] = set()
        for overlap, ti, ci in pairs:
            if overlap < self.iou_threshold:
                break
            if ti in matched_tracks or ci in matched:
                continue
            matched_tracks.add(ti)
            matched.add(ci)
            track, candidate = self.tracks[ti], candidates[ci]
            track.bbox, track.last_seen = candidate.detection.bbox, now
            track.seen_downscaled = track.seen_downscaled or not full
            if track.best is None or candidate.quality > track.best.quality:
                track.best = candidate
            if track.best.quality > track.published_quality and now - track.last_published_at >= self.republish_seconds:
                out.append(self._publish(track, now))
        for ci, candidate in enumerate(candidates):
            if ci not in matched:
                track = Track(self.next_id, candidate.detection.bbox, now, best=candidate, seen_downscaled=not full)
                self.next_id += 1
                self.last_started = now
                self.tracks.append(track)
                out.append(self._publish(track, now))
        ended = [
            t for t in self.tracks if now - t.last_seen > self.max_missed_seconds + (0 if t.seen_downscaled else self.full_pass_seconds)
        ]
        out += self._finish(ended)
        return out

    def flush(self) -> list[tuple[int, Candidate]]:
        """End every track (the source ended or a new scene began): publish each one's better unsent crop."""
        return self._finish(list(self.tracks))

    def _finish(self, ended: list[Track]) -> list[tuple[int, Candidate]]:
        out = []
        for track in ended:
            self.tracks.remove(track)
            if track.best is not None and track.best.quality > track.published_quality:
                out.append((track.id, track.best))
        return out

    @staticmethod
    def _publish(track: Track, now: float) -> tuple[int, Candidate]:
        assert track.best is not None
        candidate = track.best
        track.published_quality, track.last_published_at, track.best = candidate.quality, now, None
        return track.id, candidate
