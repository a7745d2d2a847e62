"""Where things are in a checkout: the repository, `../shared` (data, models) and the models manifest."""

from __future__ import annotations

from pathlib import Path

from facepipe import models

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"
MANIFEST = REPO / "models" / "manifest.json"
VIDEO = SHARED_DATA / "video" / "short_hamilton_clip.mp4"


def fetched_models(dest: Path, *candidates: str) -> Path:
    """The first of `candidates` that holds fetched models; else every model of the manifest fetched
    into `dest` through the real fetch step (mirror: ../shared/models)."""
    for candidate in candidates:
        if candidate and (Path(candidate) / models.MANIFEST_NAME).is_file():
            return Path(candidate)
    models.fetch(MANIFEST, dest, SHARED_MODELS if SHARED_MODELS.is_dir() else None, log=False)
    return dest
