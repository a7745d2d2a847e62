"""Detector accuracy on labelled images: recall and precision at an IoU threshold (tests and bench).

A sample's labelled faces either count (recall is measured on them) or are ignore regions: faces
outside the chosen WIDER setting, smaller than the camera keeps (FACEPIPE_MIN_FACE), or marked
ignore. A detection on an ignore region is neither right nor wrong; every other detection that
matches no counted face lowers precision.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepipe.camera.detect import Detector, iou

Box = tuple[float, float, float, float]
WIDER_SETTINGS = ("easy", "medium", "hard")
# The camera's detection defaults before issue 14 (YuNet 2023mar on a 320-px copy only, score 0.6), for comparison.
PREVIOUS_DEFAULTS: dict[str, object] = {"model": "yunet", "score_threshold": 0.6, "full_detect_seconds": 0.0, "confirm_below": 0.0}


@dataclass(frozen=True)
class Sample:
    path: Path
    faces: tuple[Box, ...]
    counted: tuple[bool, ...]  # per face: False for an ignore region


@dataclass(frozen=True)
class Accuracy:
    recall: float  # of the counted faces
    precision: float  # of the detections not on an ignore region
    faces: int  # counted faces
    found: int  # counted faces matched by a detection
    detections: int  # detections judged (not on an ignore region)
    correct: int  # judged detections that match a counted face


def match(truth: list[Box], found: list[Box], threshold: float) -> tuple[set[int], set[int]]:
    """Greedy best-IoU one-to-one matching: (indices of matched truth boxes, indices of matched detections)."""
    pairs = sorted(((iou(t, f), ti, fi) for ti, t in enumerate(truth) for fi, f in enumerate(found)), reverse=True)
    used_t: set[int] = set()
    used_f: set[int] = set()
    for overlap, ti, fi in pairs:
        if overlap < threshold:
            break
        if ti not in used_t and fi not in used_f:
            used_t.add(ti)
            used_f.add(fi)
    return used_t, used_f


def judge(sample: Sample, found: list[Box], threshold: float = 0.5) -> tuple[int, int, int]:
    """(counted faces found, detections judged, judged detections that are right) for one image.

    Detections are matched to counted faces first; the rest are matched to ignore regions and left out."""
    counted = [box for box, counts in zip(sample.faces, sample.counted, strict=True) if counts]
    ignored = [box for box, counts in zip(sample.faces, sample.counted, strict=True) if not counts]
    hit, right = match(counted, found, threshold)
    rest = [box for i, box in enumerate(found) if i not in right]
    _, on_ignored = match(ignored, rest, threshold)
    return len(hit), len(found) - len(on_ignored), len(right)


def score(results: Iterable[tuple[Sample, list[Box]]], threshold: float = 0.5) -> Accuracy:
    faces = found = judged = correct = 0
    for sample, boxes in results:
        hit, seen, right = judge(sample, boxes, threshold)
        faces += sum(sample.counted)
        found += hit
        judged += seen
        correct += right
    return Accuracy(found / faces if faces else 0.0, correct / judged if judged else 1.0, faces, found, judged, correct)


def big_enough(box: Box, min_face: int) -> bool:
    """The camera's rule (FACEPIPE_MIN_FACE): both sides at least `min_face` pixels."""
    return min(box[2], box[3]) >= min_face


def wider_subset(root: Path, setting: str = "easy", min_face: int = 0) -> list[Sample]:
    """The WIDER subset; counted: the faces of `setting` (easy/medium/hard, or all) at least `min_face` pixels."""
    doc = json.loads((root / "annotations.json").read_text())
    samples = []
    for item in doc["images"]:
        boxes = tuple(tuple(float(v) for v in face["xywh"]) for face in item["faces"])
        counted = tuple(
            (setting == "all" or bool(face[f"in_{setting}"])) and big_enough(box, min_face)  # type: ignore[arg-type]
            for face, box in zip(item["faces"], boxes, strict=True)
        )
        samples.append(Sample(root / item["file"], boxes, counted))  # type: ignore[arg-type]
    return samples


def dlib_faces(root: Path, min_face: int = 0, negatives: tuple[str, ...] = ("dogs.jpg",)) -> list[Sample]:
    """dlib's labelled example photos (its ignore marks kept) and `negatives`, photos with no human face."""
    doc = json.loads((root / "annotations.json").read_text())
    samples = []
    for item in doc["images"]:
        boxes = tuple(tuple(float(v) for v in face["xywh"]) for face in item["faces"])
        counted = tuple(not face["ignore"] and big_enough(box, min_face) for face, box in zip(item["faces"], boxes, strict=True))  # type: ignore[arg-type]
        samples.append(Sample(root / item["file"], boxes, counted))  # type: ignore[arg-type]
    return samples + [Sample(root / name, (), ()) for name in negatives]


@dataclass(frozen=True)
class Counted:
    """An image whose faces were counted by eye (no boxes): MANIFEST.csv of ../shared/data/images."""

    path: Path
    faces: int


def counted_images(root: Path, folder: str) -> list[Counted]:
    with open(root / "MANIFEST.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [Counted(root / row["path"], int(row["human_faces_eyeballed"])) for row in rows if row["path"].startswith(folder + "/")]


def count_score(results: Iterable[tuple[Counted, int]]) -> tuple[int, int, int]:
    """(faces, faces found: detections up to each image's count, extra detections beyond it)."""
    faces = found = extra = 0
    for image, detections in results:
        faces += image.faces
        found += min(detections, image.faces)
        extra += max(0, detections - image.faces)
    return faces, found, extra


# Every face-like box YuNet (2023mar and n-320, on the full frame and a 320-px copy, score >= 0.3, >= 20 px)
# finds in the test video, labelled by eye once (face / not_face / unsure), one row per region and frame.
CLIP_LABELS = Path(__file__).resolve().parents[2] / "tests" / "data" / "clip_detections.csv"
LabelledBoxes = dict[int, list[tuple[tuple[int, int, int, int], str]]]


def clip_labels(path: Path = CLIP_LABELS) -> LabelledBoxes:
    """frame -> [(box, label)] of the test video's hand-labelled boxes."""
    out: LabelledBoxes = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            box = (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))
            out.setdefault(int(row["frame"]), []).append((box, row["label"]))
    return out


def label_of(labelled: LabelledBoxes, frame: int, box: Box) -> str:
    """What a crop shows: the label of the labelled box of its frame it overlaps (IoU >= 0.5), else unlabelled."""
    overlap, label = max(((iou(box, tuple(map(float, b))), name) for b, name in labelled.get(frame, [])), default=(0.0, "unlabelled"))  # type: ignore[arg-type]
    return label if overlap >= 0.5 else "unlabelled"


def stored_kinds(records: list[dict[str, str]], labelled: LabelledBoxes | None = None) -> dict[str, int]:
    """How many of the camera's published crops of the test video show each label."""
    labelled = clip_labels() if labelled is None else labelled
    kinds = {"face": 0, "not_face": 0, "unsure": 0, "unlabelled": 0}
    for record in records:
        box = tuple(float(v) for v in record["bbox"].split(","))
        kinds[label_of(labelled, int(record["frame"]), box)] += 1  # type: ignore[arg-type]
    return kinds


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read the image {path}")
    return image


def detections(detector: Detector) -> Callable[[Path], list[Box]]:
    """The boxes `detector` finds in an image file (read as the camera reads a folder: 3-channel colour)."""
    return lambda path: [tuple(float(v) for v in d.bbox) for d in detector.detect(read(path))]  # type: ignore[misc]


def evaluate(detector: Detector, samples: list[Sample], threshold: float = 0.5) -> Accuracy:
    find = detections(detector)
    return score(((sample, find(sample.path)) for sample in samples), threshold)
