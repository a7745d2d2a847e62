"""Video sources: V4L2 devices, RTSP/HTTP streams, video files and directories of images.

Live sources are read by a capture thread into a one-frame slot, so the detector always gets
the newest frame and a slow detector drops frames (counted) instead of falling behind.
Files and image folders are read frame by frame, none dropped, unless played in real time.
Each frame says whether it starts a new scene: the first one, each image of a folder (they are
unrelated stills), and a video frame unlike the one before it (a cut).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import cv2
import numpy as np

from facepipe.camera.scene import SceneCuts
from facepipe.config import URL_USERINFO, redact_url
from facepipe.errors import FatalError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class SourceError(FatalError):
    """The source cannot be opened or read."""


@dataclass
class Frame:
    index: int
    image: np.ndarray
    captured_at: float  # wall clock (time.time()) when read
    timestamp: float  # seconds on the source's own timeline: video time for files, monotonic time for live sources
    new_scene: bool = False  # nothing seen before this frame belongs with what it shows
    still: bool = False  # an image of its own (a folder of photos), not a moment of a video


class FrameReader(Protocol):
    live: bool
    fps: float
    stills: bool  # every frame is an image of its own (a folder of photos), not a moment of one scene

    def read(self, into: np.ndarray | None = None) -> np.ndarray | None:
        """The next frame, or None when the source has ended (or failed); `into`, a frame nobody holds any more,
        may be filled instead of a new array."""

    def close(self) -> None: ...


def with_credentials(spec: str, username: str, password: str) -> str:
    """A stream URL with `username`/`password` (from a Secret, not the URL in plain env) put in, percent-encoded,
    in place of any the URL has; other sources, and an empty user name, as they are."""
    if not username or classify(spec) != "stream":
        return spec
    scheme, rest = URL_USERINFO.sub(r"\1", spec).split("://", 1)
    userinfo = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
    return f"{scheme}://{userinfo}@{rest}"


def classify(spec: str) -> str:
    """`device`, `stream`, `file` or `directory`."""
    if spec.isdigit() or spec.startswith("/dev/video"):
        return "device"
    if spec.split("://", 1)[0].lower() in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
        return "stream"
    if Path(spec).is_dir():
        return "directory"
    return "file"


class CaptureReader:
    """cv2.VideoCapture over a device, stream or file."""

    stills = False

    def __init__(self, spec: str, kind: str) -> None:
        self.live = kind in ("device", "stream")
        if kind == "device":
            if not spec.isdigit() and not Path(spec).exists():
                raise SourceError(f"video device {spec} does not exist (is the camera plugged in and mounted into the container?)")
            target: int | str = int(spec) if spec.isdigit() else spec
            self.capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        elif kind == "file":
            if not Path(spec).is_file():
                raise SourceError(f"video file {spec} does not exist")
            self.capture = cv2.VideoCapture(spec)
        else:
            self.capture = cv2.VideoCapture(spec, cv2.CAP_FFMPEG)
        if not self.capture.isOpened():
            raise SourceError(f"cannot open {kind} {redact_url(spec)!r} with OpenCV (unsupported format, permissions, or unreachable)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 30.0

    def read(self, into: np.ndarray | None = None) -> np.ndarray | None:
        ok, image = self.capture.read(into)
        return image if ok else None

    def close(self) -> None:
        self.capture.release()


class DirectoryReader:
    """Every image file of a directory, in name order, as one frame each."""

    live = False
    fps = 1.0
    stills = True

    def __init__(self, spec: str) -> None:
        self.paths = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise SourceError(f"directory {spec} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._next = iter(self.paths)

    def read(self, into: np.ndarray | None = None) -> np.ndarray | None:
        for path in self._next:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image
        return None

    def close(self) -> None:
        return None


def open_reader(spec: str) -> FrameReader:
    kind = classify(spec)
    return DirectoryReader(spec) if kind == "directory" else CaptureReader(spec, kind)


class LatestFrameSlot:
    """Holds only the newest frame; a frame replaced before it was taken counts as dropped, and its
    image (which nobody else holds) is handed back to be read into again."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._ended = False
        self.dropped = 0

    def put(self, frame: Frame) -> np.ndarray | None:
        """Offer `frame`; the image of the frame it replaced, if that one was never taken."""
        with self._cond:
            replaced, self._frame = self._frame, frame
            if replaced is not None:
                self.dropped += 1
                frame.new_scene = frame.new_scene or replaced.new_scene  # a cut in a dropped frame still counts
            self._cond.notify()
        return replaced.image if replaced is not None else None

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify()

    def take(self, timeout: float) -> Frame | None:
        """The newest frame, waiting up to `timeout`; None on timeout or when the source has ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._ended, timeout)
            frame, self._frame = self._frame, None
            return frame

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended and self._frame is None


class FrameSource:
    """Frames from a source spec; live (or real-time) sources go through a capture thread."""

    def __init__(self, spec: str, realtime: bool = False, loop: bool = False) -> None:
        self.spec = spec
        self.loop = loop
        self.reader = open_reader(spec)
        self.threaded = self.reader.live or realtime
        self.slot = LatestFrameSlot()
        self.frames_read = 0
        self.cuts = SceneCuts()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def _next_image(self, into: np.ndarray | None = None) -> np.ndarray | None:
        image = self.reader.read(into)
        if image is None and self.loop and not self.reader.live:
            self.reader.close()
            self.reader = open_reader(self.spec)
            self.cuts.reset()
            image = self.reader.read()
        return image

    def _frame(self, image: np.ndarray) -> Frame:
        timestamp = time.monotonic() if self.reader.live else self.frames_read / self.reader.fps
        new_scene = self.reader.stills or self.cuts.starts_scene(image)
        return Frame(self.frames_read, image, time.time(), timestamp, new_scene, self.reader.stills)

    def _capture(self) -> None:
        period = 0.0 if self.reader.live else 1.0 / self.reader.fps
        next_due = time.monotonic()
        spare: np.ndarray | None = None  # a dropped frame's array: decoding into it spares an allocation per frame
        while not self._stop.is_set():
            image = self._next_image(spare)
            if image is None:
                break
            spare = self.slot.put(self._frame(image))
            self.frames_read += 1
            if period:
                next_due += period
                self._stop.wait(max(0.0, next_due - time.monotonic()))
        self.slot.end()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield frames until the source ends or `stop` is set."""
        if self.threaded:
            self._thread = threading.Thread(target=self._capture, name="capture", daemon=True)
            self._thread.start()
            while not stop.is_set() and not self.slot.ended:
                frame = self.slot.take(timeout=0.5)
                if frame is not None:
                    yield frame
            return
        while not stop.is_set():
            image = self._next_image()
            if image is None:
                return
            frame = self._frame(image)
            self.frames_read += 1
            yield frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.reader.close()
