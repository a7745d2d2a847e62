"""Detector model files: a manifest (name, URL, SHA-256, licence), a fetch step, and checked loading.

`facepipe models fetch` copies each file from a local mirror when one is given (and has it),
else downloads it from its URL, and keeps it only when its SHA-256 matches the manifest. The
destination gets a copy of the manifest, so the camera can verify what it loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from facepipe.errors import FatalError

MANIFEST_NAME = "manifest.json"
DEFAULT_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facepipe" / "models"
FETCH_HINT = "run `make models` or `facepipe models fetch --dest {dir}`"


class ModelError(FatalError):
    """A model file is missing, corrupt or unknown."""


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: str
    url: str
    sha256: str
    licence: str
    size: int


def load_manifest(path: Path) -> dict[str, ModelFile]:
    entries = json.loads(path.read_text())["models"]
    return {e["name"]: ModelFile(**e) for e in entries}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_dir(configured: str = "") -> Path:
    """FACEPIPE_MODEL_DIR as configured, else the per-user cache."""
    return Path(configured) if configured else DEFAULT_MODEL_DIR


def resolve(name: str, directory: Path) -> Path:
    """The verified path of model `name` in `directory`; ModelError naming the file and the fix otherwise."""
    manifest_path = directory / MANIFEST_NAME
    hint = FETCH_HINT.format(dir=directory)
    if not manifest_path.is_file():
        raise ModelError(f"no model manifest in {directory} (model {name!r} not fetched): {hint}")
    manifest = load_manifest(manifest_path)
    if name not in manifest:
        raise ModelError(f"model {name!r} is not in {manifest_path}; known: {', '.join(sorted(manifest))}")
    entry = manifest[name]
    path = directory / entry.path
    if not path.is_file():
        raise ModelError(f"model file {path} is missing: {hint}")
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise ModelError(f"model file {path} is corrupt (sha256 {actual}, expected {entry.sha256}): delete it and {hint}")
    return path


def fetch(manifest_path: Path, dest: Path, mirror: Path | None = None, log: bool = True) -> list[Path]:
    """Put every model of the manifest into `dest`, verified; reuse files that already verify."""
    manifest = load_manifest(manifest_path)
    dest.mkdir(parents=True, exist_ok=True)
    fetched = []
    for entry in manifest.values():
        target = dest / entry.path
        if target.is_file() and sha256_of(target) == entry.sha256:
            fetched.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            mirrored = mirror / entry.path if mirror else None
            if mirrored is not None and mirrored.is_file():
                shutil.copyfile(mirrored, tmp_path)
                origin = str(mirrored)
            else:
                with urllib.request.urlopen(entry.url, timeout=60) as response, open(tmp_path, "wb") as out:
                    shutil.copyfileobj(response, out)
                origin = entry.url
            actual = sha256_of(tmp_path)
            if actual != entry.sha256:
                raise ModelError(f"{entry.name} from {origin}: sha256 {actual} does not match the manifest's {entry.sha256}")
            os.replace(tmp_path, target)
        except OSError as exc:
            raise ModelError(f"cannot fetch {entry.name} from {entry.url}: {exc}") from exc
        finally:
            tmp_path.unlink(missing_ok=True)
        if log:
            print(f"fetched {entry.name} -> {target} (from {origin}, sha256 ok)")
        fetched.append(target)
    shutil.copyfile(manifest_path, dest / MANIFEST_NAME)
    return fetched
