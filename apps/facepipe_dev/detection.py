"""Detector accuracy on labelled images: recall and precision at an IoU threshold (tests and bench)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2

from facepipe.camera.detect import Detector

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Accuracy:
    recall: float  # of the faces in the chosen subset (e.g. WIDER "easy")
    precision: float  # of all detections, against every labelled face
    faces: int
    detections: int


def iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(truth: list[Box], found: list[Box], threshold: float) -> tuple[set[int], int]:
    """Greedy best-IoU matching: (indices of matched truth boxes, number of matched detections)."""
    pairs = sorted(((iou(t, f), ti, fi) for ti, t in enumerate(truth) for fi, f in enumerate(found)), reverse=True)
    used_t: set[int] = set()
    used_f: set[int] = set()
    for score, ti, fi in pairs:
        if score < threshold:
            break
        if ti not in used_t and fi not in used_f:
            used_t.add(ti)
            used_f.add(fi)
    return used_t, len(used_f)


def wider_subset(root: Path) -> list[tuple[Path, list[Box], list[bool]]]:
    """(image, every labelled box, whether each box is in the WIDER 'easy' set)."""
    doc = json.loads((root / "annotations.json").read_text())
    return [
        (root / item["file"], [tuple(f["xywh"]) for f in item["faces"]], [bool(f["in_easy"]) for f in item["faces"]])
        for item in doc["images"]
    ]


def evaluate(detector: Detector, samples: list[tuple[Path, list[Box], list[bool]]], threshold: float = 0.5) -> Accuracy:
    counted = matched_counted = detections = matched_detections = 0
    for path, truth, counts in samples:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        found = [tuple(float(v) for v in d.bbox) for d in detector.detect(image)]
        hit, hit_found = match(truth, found, threshold)  # type: ignore[arg-type]
        counted += sum(counts)
        matched_counted += sum(1 for i in hit if counts[i])
        detections += len(found)
        matched_detections += hit_found
    return Accuracy(
        recall=matched_counted / counted if counted else 0.0,
        precision=matched_detections / detections if detections else 0.0,
        faces=counted,
        detections=detections,
    )
