"""Detector accuracy on the labelled WIDER subset (IoU 0.5): yunet's figures are pinned a little
under what was measured, and it must beat the original system's Haar cascade."""

from pathlib import Path

import pytest

from facepipe.camera.detect import create_detector
from facepipe.config import DetectorSettings
from facepipe_dev.detection import Accuracy, evaluate, wider_subset

# Measured here (2026-11-24, opencv-python-headless 4.14, face_detection_yunet_2023mar, the camera's
# defaults: detect width 320, score >= 0.6, faces >= 20 px): easy recall 0.582, precision 0.930.
# Haar (the original: full frame, 1.3, 5): easy recall 0.099, precision 0.831. Pinned a little lower.
YUNET_MIN_RECALL = 0.55
YUNET_MIN_PRECISION = 0.90


@pytest.fixture(scope="module")
def samples(shared_data: Path) -> list:
    return wider_subset(shared_data / "benchmark" / "wider_val_subset416")


def measure(model_dir: Path, samples: list, **settings: object) -> Accuracy:
    detector = create_detector(DetectorSettings(model_dir=str(model_dir), **settings))  # type: ignore[arg-type]
    accuracy = evaluate(detector, samples)
    print(f"\n{detector.name} {settings}: recall(easy)={accuracy.recall:.3f} precision={accuracy.precision:.3f} ({accuracy.detections} detections)")
    return accuracy


@pytest.fixture(scope="module")
def yunet(model_dir: Path, samples: list) -> Accuracy:
    return measure(model_dir, samples, detector="yunet")


def test_yunet_recall_and_precision_are_pinned(yunet: Accuracy) -> None:
    assert yunet.faces == 548
    assert yunet.recall >= YUNET_MIN_RECALL
    assert yunet.precision >= YUNET_MIN_PRECISION


def test_yunet_beats_the_original_haar_cascade(model_dir: Path, samples: list, yunet: Accuracy) -> None:
    haar = measure(model_dir, samples, detector="haar", detect_width=0)
    assert yunet.recall > 3 * haar.recall
    assert yunet.precision >= haar.precision
