"""Directory backend: the object key is the path; metadata goes to a `<key>.json` sidecar.

Durability comes in batches: `put` writes and renames without waiting for the disk, and one
`sync()` makes the batch durable with Linux's syncfs(2) on the store's filesystem (one journal
commit instead of two fsyncs per face: about 5x the rate, a fifth of the CPU). Where syncfs is
not available, every file is fsync'd before its rename and `sync()` has nothing left to do.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from facepipe.storage.base import StoreUnavailable

BATCH_WITH_SYNCFS = 64


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _write_atomically(path: Path, data: bytes, temporary: str, fsync: bool) -> None:
    """Write to the temporary sibling `temporary` (unique to this write), (fsync,) rename: readers never
    see a partial file, and two workers storing the same key (a redelivery) never share a temporary file."""
    tmp = path.with_name(temporary)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryStore:
    """Faces as files under one root directory, laid out like the S3 keys."""

    prefix = ""

    def __init__(self, url: str, use_syncfs: bool = True) -> None:
        self.url = url
        self.root = Path(url[len("file://") :]).resolve()
        self._root_text = str(self.root) + os.sep
        self._syncfs = _find_syncfs() if use_syncfs else None
        self.max_batch = BATCH_WITH_SYNCFS if self._syncfs else 1
        # Temporary names: this store's random tag and a counter, unique across threads, processes and pods.
        self._tag = secrets.token_hex(6)
        self._writes = itertools.count()
        self._directories: set[Path] = set()

    def _path(self, key: str) -> Path:
        path = os.path.normpath(os.path.join(self._root_text, key))
        if not path.startswith(self._root_text):
            raise ValueError(f"key {key!r} escapes the store directory")
        return Path(path)

    def put(self, key: str, png: bytes, metadata: dict[str, str]) -> None:
        path = self._path(key)
        try:
            try:
                self._write_face(path, png, metadata)
            except FileNotFoundError:  # retention removed the (known) folder meanwhile: create it again
                self._directories.discard(path.parent)
                self._write_face(path, png, metadata)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc}") from exc

    def _write_face(self, path: Path, png: bytes, metadata: dict[str, str]) -> None:
        fsync = self._syncfs is None
        self._make_parent(path, fsync)
        number = next(self._writes)
        sidecar = json.dumps(metadata, sort_keys=True).encode()
        _write_atomically(path.with_name(path.name + ".json"), sidecar, f".{path.name}.json.{self._tag}-{number}.tmp", fsync)
        _write_atomically(path, png, f".{path.name}.{self._tag}-{number}.tmp", fsync)
        if fsync:  # the renames are durable once their folder is
            _fsync_directory(path.parent)

    def _make_parent(self, path: Path, fsync: bool) -> None:
        """Create the key's folder once (it holds the day's other faces of the device too)."""
        if path.parent in self._directories:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if fsync:  # each new folder is durable once the folder holding it is
            for folder in path.parent.parents:
                _fsync_directory(folder)
                if folder == self.root:
                    break
        if len(self._directories) > 10_000:
            self._directories.clear()
        self._directories.add(path.parent)

    def sync(self) -> None:
        if self._syncfs is None:
            return
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StoreUnavailable(f"cannot open {self.root} to sync it: {exc}") from exc
        try:
            if self._syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise StoreUnavailable(f"syncfs({self.root}) failed: {os.strerror(error)}")
        finally:
            os.close(fd)

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
