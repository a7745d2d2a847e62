"""The storage interface and the factory that picks a backend from the store URL."""

from __future__ import annotations

from typing import Protocol

from facepipe.config import StoreSettings


class StoreUnavailable(RuntimeError):
    """The store cannot take objects right now (network, permissions, missing bucket); retry later."""


class Store(Protocol):
    """A place for face PNGs keyed by `facepipe.contract.object_key`."""

    url: str
    prefix: str
    max_batch: int  # how many puts may share one sync()

    def put(self, key: str, png: bytes, metadata: dict[str, str]) -> None:
        """Store (or overwrite) one object with its metadata; raise StoreUnavailable on failure.

        The object is durable once `sync()` has returned after this put."""

    def sync(self) -> None:
        """Make every put this thread made since its last sync durable; raise StoreUnavailable when that fails,
        after which those puts must be made again before they can count as stored."""

    def check(self) -> None:
        """Raise StoreUnavailable when the store cannot be written (readiness)."""

    def apply_retention(self, days: int) -> None:
        """Make objects older than `days` go away (lifecycle rule or pruning); 0 keeps everything."""


def open_store(settings: StoreSettings) -> Store:
    """The backend for `settings.store`: file:///dir or s3://bucket/prefix."""
    if settings.store.startswith("s3://"):
        from facepipe.storage.s3 import S3Store

        return S3Store(settings)
    from facepipe.storage.directory import DirectoryStore

    return DirectoryStore(settings.store, use_syncfs=settings.directory_sync == "filesystem")
