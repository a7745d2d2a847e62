"""The factory that picks a storage backend from the store URL."""

from __future__ import annotations

from facepipe.config import StoreSettings
from facepipe.storage.base import Store


def open_store(settings: StoreSettings) -> Store:
    """The backend for `settings.store`: file:///dir or s3://bucket/prefix."""
    if settings.store.startswith("s3://"):
        from facepipe.storage.s3 import S3Store

        return S3Store(settings)
    from facepipe.storage.directory import DirectoryStore

    return DirectoryStore(settings.store, use_syncfs=settings.directory_sync == "filesystem")
