"""Directory backend: the object key is the path; metadata goes to a `<key>.json` sidecar.

Durability comes in batches: `put` writes and renames without waiting for the disk; `sync()`
then makes everything the calling thread put since its last sync durable, in one of two ways:
- files (default): fsync each file written and each folder holding them, once per batch; the
  fsyncs of a batch share journal commits (about 1.5x the rate of fsyncing inside each put).
- filesystem (FACEPIPE_STORE_SYNC=filesystem): one syncfs(2) of the store's filesystem, one
  journal commit for the whole batch (about 5x the rate, a fifth of the CPU, on this project's
  measurements) but it also flushes every other writer's data: for a volume of its own.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.storage.base import StoreUnavailable


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _write_atomically(path: Path, data: bytes, temporary: str) -> None:
    """Write to the temporary sibling `temporary` (unique to this write), then rename: readers never see a
    partial file, and two workers storing the same key (a redelivery) never share a temporary file."""
    tmp = path.with_name(temporary)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sync_open(path: Path, call: Callable[[int], object], name: str, flags: int = 0) -> None:
    """`call` (fsync or syncfs) on a descriptor of `path`; OSError when it fails."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        if call(fd) not in (None, 0):  # os.fsync raises; syncfs through ctypes returns -1 and sets errno
            error = ctypes.get_errno()
            raise OSError(error, f"{name}({path}): {os.strerror(error)}")
    finally:
        os.close(fd)


@dataclass
class _Unsynced:
    """What one worker wrote since its last sync: files to fsync, and folders whose entries changed
    (renames into them, folders created in them). Dicts as ordered sets: each is synced once."""

    files: dict[Path, None] = field(default_factory=dict)
    folders: dict[Path, None] = field(default_factory=dict)


class DirectoryStore:
    """Faces as files under one root directory, laid out like the S3 keys."""

    prefix = ""
    max_batch = 64

    def __init__(self, url: str, use_syncfs: bool = False) -> None:
        self.url = url
        self.root = Path(url[len("file://") :]).resolve()
        self._root_text = str(self.root) + os.sep
        self._syncfs = _find_syncfs() if use_syncfs else None
        if use_syncfs and self._syncfs is None:
            raise StoreUnavailable("FACEPIPE_STORE_SYNC=filesystem needs syncfs(2) (Linux); use files")
        # Temporary names: this store's random tag and a counter, unique across threads, processes and pods.
        self._tag = secrets.token_hex(6)
        self._writes = itertools.count()
        self._directories: set[Path] = set()
        self._local = threading.local()  # per worker: its _Unsynced

    def _path(self, key: str) -> Path:
        path = os.path.normpath(os.path.join(self._root_text, key))
        if not path.startswith(self._root_text):
            raise ValueError(f"key {key!r} escapes the store directory")
        return Path(path)

    def _unsynced(self) -> _Unsynced:
        if not hasattr(self._local, "unsynced"):
            self._local.unsynced = _Unsynced()
        return self._local.unsynced  # type: ignore[no-any-return]

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
        self._make_parent(path)
        number = next(self._writes)
        sidecar = path.with_name(path.name + ".json")
        _write_atomically(sidecar, json.dumps(metadata, sort_keys=True).encode(), f".{path.name}.json.{self._tag}-{number}.tmp")
        _write_atomically(path, png, f".{path.name}.{self._tag}-{number}.tmp")
        unsynced = self._unsynced()
        unsynced.files.update(dict.fromkeys((sidecar, path)))
        unsynced.folders[path.parent] = None

    def _make_parent(self, path: Path) -> None:
        """Create the key's folder once (it holds the day's other faces of the device too)."""
        if path.parent in self._directories:
            return
        below_root = itertools.takewhile(lambda folder: folder != self.root, (path.parent, *path.parent.parents))
        created = [folder for folder in below_root if not folder.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self._unsynced().folders.update(dict.fromkeys(folder.parent for folder in created))  # new folders' entries
        if len(self._directories) > 10_000:
            self._directories.clear()
        self._directories.add(path.parent)

    def sync(self) -> None:
        unsynced = self._unsynced()
        if not unsynced.files and not unsynced.folders:
            return
        try:
            if self._syncfs is not None:
                _sync_open(self.root, self._syncfs, "syncfs", os.O_DIRECTORY)
            else:
                for path in unsynced.files:
                    _sync_open(path, os.fsync, "fsync")
                for folder in unsynced.folders:
                    _sync_open(folder, os.fsync, "fsync", os.O_DIRECTORY)
        except OSError as exc:
            raise StoreUnavailable(f"cannot make {self.root} durable: {exc}") from exc
        finally:  # after a failure the caller puts the batch again (Store.sync)
            unsynced.files.clear()
            unsynced.folders.clear()

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
