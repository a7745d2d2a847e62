"""Face detectors: YuNet (cv2.FaceDetectorYN, the default) and the original system's Haar cascade.

Both run on a downscaled copy of the frame and return boxes in source-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from facepipe import models
from facepipe.config import DetectorSettings

# The original system's call: detectMultiScale(gray, 1.3, 5) on the full grey frame.
HAAR_SCALE_FACTOR = 1.3
HAAR_MIN_NEIGHBORS = 5
YUNET_NMS_THRESHOLD = 0.3
DEFAULT_MODELS = {"yunet": "yunet", "haar": "haar"}


@dataclass(frozen=True)
class Detection:
    bbox: tuple[int, int, int, int]  # x, y, w, h in source pixels
    score: float


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]: ...


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """3-channel BGR from grey or BGRA input (YuNet accepts nothing else)."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def downscale(frame: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """A copy at most `width` wide (0: unchanged) and the factor from it back to the source."""
    height_px, width_px = frame.shape[:2]
    if not width or width_px <= width:
        return frame, 1.0
    scale = width / width_px
    small = cv2.resize(frame, (width, max(1, round(height_px * scale))), interpolation=cv2.INTER_AREA)
    return small, 1.0 / scale


def to_source(box: np.ndarray, back: float, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Scale a box to source pixels and clip it to the frame."""
    height_px, width_px = frame_shape[:2]
    x0 = max(0, round(box[0] * back))
    y0 = max(0, round(box[1] * back))
    x1 = min(width_px, round((box[0] + box[2]) * back))
    y1 = min(height_px, round((box[1] + box[3]) * back))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


class YuNetDetector:
    def __init__(self, model_path: Path, score_threshold: float, detect_width: int, min_face: int) -> None:
        self.name = f"yunet/{model_path.stem}"
        self.detect_width = detect_width
        self.min_face = min_face
        self.model = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, YUNET_NMS_THRESHOLD, 5000)
        self.input_size = (320, 320)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        bgr = as_bgr(frame)
        small, back = downscale(bgr, self.detect_width)
        size = (small.shape[1], small.shape[0])
        if size != self.input_size:
            self.model.setInputSize(size)
            self.input_size = size
        _, faces = self.model.detect(small)
        found = []
        for row in faces if faces is not None else ():
            bbox = to_source(row[:4], back, frame.shape)
            if min(bbox[2], bbox[3]) >= max(1, self.min_face):
                found.append(Detection(bbox, float(min(1.0, max(0.0, row[-1])))))
        return found


class HaarDetector:
    """The original system's cascade; it gives no confidence, so every detection scores 1.0."""

    def __init__(self, model_path: Path, detect_width: int, min_face: int) -> None:
        self.name = f"haar/{model_path.stem.removeprefix('haarcascade_')}"
        self.detect_width = detect_width
        self.min_face = min_face
        self.cascade = cv2.CascadeClassifier(str(model_path))
        if self.cascade.empty():
            raise models.ModelError(f"OpenCV could not load the cascade {model_path}")

    def detect(self, frame: np.ndarray) -> list[Detection]:
        small, back = downscale(frame, self.detect_width)
        grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        boxes = self.cascade.detectMultiScale(grey, HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS)
        found = []
        for box in boxes:
            bbox = to_source(np.asarray(box, dtype=np.float64), back, frame.shape)
            if min(bbox[2], bbox[3]) >= max(1, self.min_face):
                found.append(Detection(bbox, 1.0))
        return found


def create_detector(settings: DetectorSettings) -> Detector:
    """The configured detector with its verified model file (ModelError if missing or corrupt)."""
    path = models.resolve(settings.model or DEFAULT_MODELS[settings.detector], models.model_dir(settings.model_dir))
    if settings.detector == "haar":
        return HaarDetector(path, settings.detect_width, settings.min_face)
    return YuNetDetector(path, settings.score_threshold, settings.detect_width, settings.min_face)
