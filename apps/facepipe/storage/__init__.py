"""Where processed faces are stored: one small interface, an S3 and a directory backend."""

from facepipe.storage.base import Listing, ObjectNotFound, Store, StoredObject, StoreRefused, StoreUnavailable
from facepipe.storage.factory import open_store

__all__ = ["Listing", "ObjectNotFound", "Store", "StoreRefused", "StoreUnavailable", "StoredObject", "open_store"]
