"""Directory backend: the object key is the path; metadata goes to a `<key>.json` sidecar.

Durability comes in batches: `put` writes and renames without waiting for the disk; `sync()`
then makes everything the calling thread put since its last sync durable, in one of two ways:
- files (default): fsync each file written and each folder holding them, once per batch; the
  fsyncs of a batch share journal commits (about 1.5x the rate of fsyncing inside each put).
- filesystem (FACEPIPE_STORE_SYNC=filesystem): one syncfs(2) of the store's filesystem, one
  journal commit for the whole batch (about 5x the rate, a fifth of the CPU, on this project's
  measurements) but it also flushes every other writer's data: for a volume of its own.

Reading lists folders in S3's key order (a folder sorts as `name/`), from a per-folder index of
sorted names kept while the folder's mtime stays the same.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from facepipe.storage.base import LIST_LIMIT, Listing, ObjectNotFound, StoredObject, StoreUnavailable

SIDECAR = ".json"
# A folder whose mtime is this recent is read again: a change within the same clock tick leaves mtime as it was.
FRESH_NS = 2_000_000_000


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


class _FolderIndex:
    """Each folder's objects and subfolders as sorted names (`name`, `name/`), cached by the folder's mtime."""

    def __init__(self, folders: int = 256) -> None:
        self._folders = folders
        self._cache: OrderedDict[Path, tuple[int, list[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def names(self, folder: Path) -> list[str]:
        try:
            mtime = os.stat(folder).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            return []
        with self._lock:
            cached = self._cache.get(folder)
            if cached is not None and cached[0] == mtime and time.time_ns() - mtime > FRESH_NS:
                self._cache.move_to_end(folder)
                return cached[1]
        names = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):  # temporary files of writes in progress
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        names.append(entry.name + "/")
                    elif not entry.name.endswith(SIDECAR):
                        names.append(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names.sort()  # code point order is UTF-8 byte order: S3's
        with self._lock:
            self._cache[folder] = (mtime, names)
            if len(self._cache) > self._folders:
                self._cache.popitem(last=False)
        return names


def _etag(stat: os.stat_result) -> str:
    """Changes whenever the file is replaced (every write renames a new inode into place)."""
    return f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'


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
    prunes_itself = True  # retention is the processor pruning its own tree

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
        self._index = _FolderIndex()

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

    # --- reading and erasing ----------------------------------------------------------------------

    def list(self, prefix: str, delimiter: str = "", token: str | None = None, limit: int = LIST_LIMIT) -> Listing:
        if delimiter not in ("", "/"):
            raise ValueError(f"the directory store lists with delimiter '/' or none, not {delimiter!r}")
        folder, _, start = prefix.rpartition("/")
        if folder and any(part in ("", ".", "..") for part in folder.split("/")):
            return Listing()  # no key has such a folder (S3 would find none either), and it never leads outside the store
        folder = f"{folder}/" if folder else ""
        keys: list[str] = []
        prefixes: list[str] = []
        last = None
        try:
            for key in self._walk(folder, start, token or "", bool(delimiter)):
                if len(keys) + len(prefixes) == min(limit, LIST_LIMIT):
                    return Listing(keys, prefixes, last)
                (prefixes if key.endswith("/") else keys).append(key)
                last = key
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.root / folder}: {exc}") from exc
        return Listing(keys, prefixes, None)

    def _walk(self, folder: str, start: str, after: str, grouped: bool) -> Iterator[str]:
        """Keys (and, when grouped, `folder/` prefixes) under `folder` whose name starts with `start`, after `after`."""
        names = self._index.names(self.root / folder)
        first = bisect.bisect_left(names, start)
        if after.startswith(folder):
            rest = after[len(folder) :]
            resume = bisect.bisect_right(names, rest)
            if resume and names[resume - 1].endswith("/") and rest.startswith(names[resume - 1]):
                resume -= 1  # `after` lies inside this subfolder: continue in it
            first = max(first, resume)
        elif after > folder:
            return
        for name in names[first:]:
            if not name.startswith(start):
                return
            key = folder + name
            if not name.endswith("/") or grouped:
                if key > after:
                    yield key
            elif key > after or after.startswith(key):
                yield from self._walk(key, "", after, grouped)

    def _object_path(self, key: str) -> Path:
        name = key.rsplit("/", 1)[-1]
        if not name or name.startswith(".") or name.endswith(SIDECAR):
            raise ObjectNotFound(key)
        return self._path(key)

    def head(self, key: str) -> StoredObject:
        return self._read(key, with_body=False)

    def get(self, key: str) -> StoredObject:
        return self._read(key, with_body=True)

    def _read(self, key: str, with_body: bool) -> StoredObject:
        path = self._object_path(key)
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                body = file.read() if with_body else None
            metadata = self._metadata(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {path}: {exc}") from exc
        modified = datetime.fromtimestamp(stat.st_mtime, UTC)
        return StoredObject(key=key, size=stat.st_size, etag=_etag(stat), modified=modified, metadata=metadata, body=body)

    @staticmethod
    def _metadata(path: Path) -> dict[str, str]:
        """The sidecar's fields ({} when it is missing or not a JSON object of strings)."""
        try:
            fields = json.loads(path.with_name(path.name + SIDECAR).read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}
        if not isinstance(fields, dict):
            return {}
        return {str(name): str(value) for name, value in fields.items()}

    def delete(self, keys: Sequence[str]) -> None:
        """Unlink each face and its sidecar, then every folder this left empty (up to the store's root)."""
        folders: dict[Path, None] = {}
        try:
            for key in keys:
                path = self._object_path(key)
                path.unlink(missing_ok=True)
                path.with_name(path.name + SIDECAR).unlink(missing_ok=True)
                folders[path.parent] = None
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete from {self.root}: {exc}") from exc
        for folder in folders:
            below_root = itertools.takewhile(lambda f: f != self.root, (folder, *folder.parents))
            for empty in below_root:
                try:
                    empty.rmdir()
                except OSError:  # not empty (or already gone): its parents are not empty either
                    break
