"""Face detectors: YuNet (cv2.FaceDetectorYN, the default) and the original system's Haar cascade.

Both run on a downscaled copy of the frame (FACEPIPE_DETECT_WIDTH) or, when the camera asks for a
full pass (`full=True`: each still image, every FACEPIPE_FULL_DETECT_SECONDS of a video), on a copy at most
`full_width` wide (0: the frame as it is; FullPasses.width), and return boxes in source-frame pixels.
YuNet's unsure detections (scored below FACEPIPE_CONFIRM_BELOW) get a second look (`SecondLook`) before
they count, unless they are on a face the camera already tracks (`known`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
DEFAULT_MODELS = {"yunet": "yunet-n-320", "haar": "haar"}
# The second look: the detection's box grown by half its size on every side, scaled to this many pixels
# on its longer side, searched again; it must find a face there scoring at least SECOND_LOOK_SCORE.
SECOND_LOOK_SIDE = 96
SECOND_LOOK_GROW = 0.5
SECOND_LOOK_SCORE = 0.3
SECOND_LOOK_IOU = 0.3


@dataclass(frozen=True)
class Detection:
    bbox: tuple[int, int, int, int]  # x, y, w, h in source pixels
    score: float


Box = tuple[int, int, int, int]


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray, full: bool = False, full_width: int = 0, known: Sequence[Box] = ()) -> list[Detection]:
        """Faces in `frame`; with `full`, searched on a copy at most `full_width` wide (0: the frame's own resolution)
        instead of the downscaled copy. `known`: boxes of faces already confirmed (tracked), which need no second look."""
        ...


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


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return w * h / union if union > 0 else 0.0


class YuNetModel:
    """cv2.FaceDetectorYN, told each new input size: rows of x, y, w, h, 10 landmark coordinates, score.

    A new size reshapes the whole network (milliseconds), so each pass that switches sizes keeps its own."""

    def __init__(self, model_path: Path, score_threshold: float, top_k: int) -> None:
        self.input_size = (320, 320)
        self.model = cv2.FaceDetectorYN.create(str(model_path), "", self.input_size, score_threshold, YUNET_NMS_THRESHOLD, top_k)

    def detect(self, image: np.ndarray) -> np.ndarray | tuple[()]:
        size = (image.shape[1], image.shape[0])
        if size != self.input_size:
            self.model.setInputSize(size)
            self.input_size = size
        _, faces = self.model.detect(image)
        return faces if faces is not None else ()


class SecondLook:
    """Confirms an unsure detection: the model searches the face's neighbourhood again, cut from the
    full-resolution frame and scaled to SECOND_LOOK_SIDE pixels, and must find the face there.

    Hands, fists and clothing that YuNet scores 0.5..0.8 in a whole frame rarely pass; most faces do
    (bench 1b measures what it costs in recall). A few hundred microseconds per unsure detection."""

    def __init__(self, model_path: Path) -> None:
        self.model = YuNetModel(model_path, 0.05, 50)

    def confirms(self, bgr: np.ndarray, bbox: tuple[int, int, int, int]) -> bool:
        x, y, w, h = bbox
        dx, dy = round(w * SECOND_LOOK_GROW), round(h * SECOND_LOOK_GROW)
        x0, y0 = max(0, x - dx), max(0, y - dy)
        x1, y1 = min(bgr.shape[1], x + w + dx), min(bgr.shape[0], y + h + dy)
        scale = SECOND_LOOK_SIDE / max(1, x1 - x0, y1 - y0)
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        near = cv2.resize(bgr[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        target = ((x - x0) * scale, (y - y0) * scale, w * scale, h * scale)
        rows = self.model.detect(near)
        return any(row[-1] >= SECOND_LOOK_SCORE and iou(tuple(row[:4]), target) >= SECOND_LOOK_IOU for row in rows)


class YuNetDetector:
    def __init__(self, model_path: Path, score_threshold: float, detect_width: int, min_face: int, confirm_below: float = 0.0) -> None:
        self.name = f"yunet/{model_path.stem}"
        self.model_path = model_path
        self.detect_width = detect_width
        self.min_face = min_face
        self.confirm_below = confirm_below
        self.copy_pass = YuNetModel(model_path, score_threshold, 5000)
        self.full_pass = YuNetModel(model_path, score_threshold, 5000)  # other sizes: the copy's network is not reshaped twice
        self.second_look = SecondLook(model_path) if confirm_below > score_threshold else None

    def detect(self, frame: np.ndarray, full: bool = False, full_width: int = 0, known: Sequence[Box] = ()) -> list[Detection]:
        bgr = as_bgr(frame)
        small, back = downscale(bgr, full_width if full else self.detect_width)
        found = []
        for row in (self.full_pass if full else self.copy_pass).detect(small):
            bbox = to_source(row[:4], back, frame.shape)
            if min(bbox[2], bbox[3]) < max(1, self.min_face):
                continue
            score = float(min(1.0, max(0.0, row[-1])))
            if self.unconfirmed(bgr, bbox, score, known):
                continue
            found.append(Detection(bbox, score))
        return found

    def unconfirmed(self, bgr: np.ndarray, bbox: Box, score: float, known: Sequence[Box]) -> bool:
        """An unsure detection that is not on a tracked face and that the second look does not find again."""
        if self.second_look is None or score >= self.confirm_below:
            return False
        if any(iou(bbox, box) >= SECOND_LOOK_IOU for box in known):  # confirmed when its track started
            return False
        return not self.second_look.confirms(bgr, bbox)


class HaarDetector:
    """The original system's cascade; it gives no confidence, so every detection scores 1.0."""

    def __init__(self, model_path: Path, detect_width: int, min_face: int) -> None:
        self.name = f"haar/{model_path.stem.removeprefix('haarcascade_')}"
        self.detect_width = detect_width
        self.min_face = min_face
        self.cascade = cv2.CascadeClassifier(str(model_path))
        if self.cascade.empty():
            raise models.ModelError(f"OpenCV could not load the cascade {model_path}")

    def detect(self, frame: np.ndarray, full: bool = False, full_width: int = 0, known: Sequence[Box] = ()) -> list[Detection]:
        small, back = downscale(frame, full_width if full else self.detect_width)
        grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        boxes = self.cascade.detectMultiScale(grey, HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS)
        found = []
        for box in boxes:
            bbox = to_source(np.asarray(box, dtype=np.float64), back, frame.shape)
            if min(bbox[2], bbox[3]) >= max(1, self.min_face):
                found.append(Detection(bbox, 1.0))
        return found


class FullPasses:
    """Which analysed frames get the full pass: every still image (a folder of photos), and
    on a video its first frame, then one every `period` seconds of the source's timeline (0: none).

    A cut in a video does not add one: an edited clip cuts every few seconds, a live camera hardly
    ever, and the periodic pass finds a new shot's small faces within `period` either way.

    A still image is searched at its own resolution; a video's pass at most `video_width` wide (0: its
    own resolution): a 1280×720 camera's pass then costs what a 640×360 one does (a quarter), and finds
    faces down to about twice the size the frame's own resolution would."""

    def __init__(self, period: float, video_width: int = 0) -> None:
        self.period = period
        self.video_width = video_width
        self.last = -math.inf

    def width(self, still: bool) -> int:
        """The widest copy a full pass of this frame searches (0: the frame as it is; never upscaled)."""
        return 0 if still else self.video_width

    def due(self, timestamp: float, still: bool) -> bool:
        if not self.period:
            return False
        if still or timestamp < self.last or timestamp - self.last >= self.period:
            self.last = timestamp
            return True
        return False


def create_detector(settings: DetectorSettings) -> Detector:
    """The configured detector with its verified model file (ModelError if missing or corrupt)."""
    path = models.resolve(settings.model or DEFAULT_MODELS[settings.detector], models.model_dir(settings.model_dir))
    if settings.detector == "haar":
        return HaarDetector(path, settings.detect_width, settings.min_face)
    return YuNetDetector(path, settings.score_threshold, settings.detect_width, settings.min_face, settings.confirm_below)
