"""Model files: fetched and verified by checksum; a missing or corrupt file is a clear error."""

import json
from pathlib import Path

import pytest

from facepipe import models
from facepipe.camera.detect import create_detector
from facepipe.config import DetectorSettings

MANIFEST = Path(__file__).resolve().parents[2] / "models" / "manifest.json"


def test_manifest_entries_are_complete() -> None:
    entries = json.loads(MANIFEST.read_text())["models"]
    assert {e["name"] for e in entries} >= {"yunet", "haar"}
    for entry in entries:
        assert entry["url"].startswith("https://") and len(entry["sha256"]) == 64 and entry["licence"]


def test_fetched_models_verify(model_dir: Path) -> None:
    for name in ("yunet", "haar"):
        assert models.resolve(name, model_dir).is_file()


def test_missing_model_names_the_file_and_the_fix(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / models.MANIFEST_NAME).write_bytes((model_dir / models.MANIFEST_NAME).read_bytes())
    with pytest.raises(models.ModelError) as info:
        create_detector(DetectorSettings(model_dir=str(tmp_path)))
    assert "yunet_n_320_320.onnx" in str(info.value) and "facepipe models fetch" in str(info.value)


def test_corrupt_model_is_refused(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / models.MANIFEST_NAME).write_bytes((model_dir / models.MANIFEST_NAME).read_bytes())
    (tmp_path / "face_detection_yunet_2023mar.onnx").write_bytes(b"not a model")
    with pytest.raises(models.ModelError, match="corrupt"):
        models.resolve("yunet", tmp_path)


def test_fetch_refuses_a_mirror_file_with_the_wrong_checksum(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "cascades").mkdir(parents=True)
    manifest = json.loads(MANIFEST.read_text())
    manifest["models"] = [e for e in manifest["models"] if e["name"] == "haar"]
    manifest["models"][0]["url"] = "http://127.0.0.1:9/unreachable"
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    (mirror / "cascades" / "haarcascade_frontalface_default.xml").write_text("<tampered/>")
    with pytest.raises(models.ModelError, match="does not match"):
        models.fetch(tmp_path / "m.json", tmp_path / "dest", mirror, log=False)
    assert not (tmp_path / "dest" / "cascades" / "haarcascade_frontalface_default.xml").exists()
