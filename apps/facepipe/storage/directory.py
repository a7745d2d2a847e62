"""Directory backend: the object key is the path; metadata goes to a `<key>.json` sidecar."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from facepipe.storage.base import StoreUnavailable


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a uniquely named temporary sibling, fsync, rename: readers never see a partial file,
    and two workers storing the same key (a redelivery) never share a temporary file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DirectoryStore:
    """Faces as files under one root directory, laid out like the S3 keys."""

    prefix = ""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = Path(url[len("file://") :]).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store directory")
        return path

    def put(self, key: str, png: bytes, metadata: dict[str, str]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path.with_name(path.name + ".json"), json.dumps(metadata, sort_keys=True).encode())
            _write_atomically(path, png)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc}") from exc

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.root}: {exc}") from exc
        if not os.access(self.root, os.W_OK):
            raise StoreUnavailable(f"{self.root} is not writable")

    def apply_retention(self, days: int) -> None:
        """Delete faces (and sidecars) whose files are older than `days`; remove emptied folders."""
        if days <= 0 or not self.root.exists():
            return
        cutoff = time.time() - days * 86400
        for directory, _subdirs, files in os.walk(self.root, topdown=False):
            for name in files:
                path = Path(directory) / name
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            if Path(directory) != self.root and not os.listdir(directory):
                os.rmdir(directory)
