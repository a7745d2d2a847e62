"""Where processed faces are stored: one small interface, an S3 and a directory backend."""

from facepipe.storage.base import Store, StoreUnavailable, open_store

__all__ = ["Store", "StoreUnavailable", "open_store"]
