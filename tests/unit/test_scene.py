"""Scene changes: a cut in a video or the next image of a folder ends every track, so a face at the place
of an earlier one is published as the new face it is."""

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from facepipe.camera.camera import Camera
from facepipe.camera.detect import Box, Detection
from facepipe.camera.scene import SceneCuts
from facepipe.camera.sources import Frame, FrameSource, LatestFrameSlot
from facepipe.config import CameraSettings


def textured(seed: int, shape: tuple[int, int] = (360, 640)) -> np.ndarray:
    """A frame of coarse random blocks (a 'shot'): two seeds differ everywhere, as two shots of a cut do."""
    blocks = np.random.default_rng(seed).integers(0, 256, (shape[0] // 40, shape[1] // 40, 3), dtype=np.uint8)
    return cv2.resize(blocks, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def test_the_first_frame_and_a_cut_start_scenes_motion_within_a_shot_does_not() -> None:
    cuts = SceneCuts()
    shot = textured(1)
    assert cuts.starts_scene(shot)  # nothing before it
    moved = shot.copy()
    moved[100:260, 200:360] = 255  # someone walks into a quarter of the view
    assert not cuts.starts_scene(moved)
    assert not cuts.starts_scene(np.roll(moved, 8, axis=1))  # the camera pans a little
    assert cuts.starts_scene(textured(2))  # another shot
    cuts.reset()
    assert cuts.starts_scene(textured(2))  # the source was opened again


def test_a_cut_in_a_frame_the_slot_dropped_is_kept_for_the_next_frame() -> None:
    slot = LatestFrameSlot()
    image = np.zeros((4, 4, 3), np.uint8)
    slot.put(Frame(0, image, 0.0, 0.0, new_scene=True))
    slot.put(Frame(1, image, 0.0, 0.1))  # replaces frame 0 before the camera took it
    frame = slot.take(timeout=0.1)
    assert frame is not None and frame.index == 1 and frame.new_scene


def test_every_image_of_a_folder_starts_a_scene_a_video_only_at_its_cuts(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), textured(1))  # the same picture three times
    frames = list(FrameSource(str(tmp_path)).frames(threading.Event()))
    assert [f.new_scene for f in frames] == [True, True, True]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    for k in range(6):
        writer.write(np.roll(textured(1 if k < 3 else 2), k, axis=1))  # a cut after frame 2
    writer.release()
    assert [f.new_scene for f in FrameSource(str(video)).frames(threading.Event())] == [True, False, False, True, False, False]


class SamePlace:
    """Finds one face at the same place in every frame."""

    name = "same-place"

    def detect(self, frame: np.ndarray, full: bool = False, full_width: int = 0, known: Sequence[Box] = ()) -> list[Detection]:
        return [Detection((100, 100, 60, 60), 0.9)]


def published_after(frames: list[Frame]) -> int:
    camera = Camera(CameraSettings(), logging.getLogger("test"), detector=SamePlace())
    for frame in frames:
        camera.analyse(frame)
    return camera.seq  # one number per face published


def test_a_face_at_the_place_of_one_in_the_previous_scene_is_published_again() -> None:
    image = textured(3)
    same_scene = [Frame(k, image, 0.0, k / 10, new_scene=k == 0) for k in range(3)]
    assert published_after(same_scene) == 1  # one face, one track
    every_image_new = [Frame(k, image, 0.0, k / 10, new_scene=True) for k in range(3)]
    assert published_after(every_image_new) == 3  # three photos, three faces
