"""The storage interface every backend implements (the factory that picks one is facepipe.storage.factory)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

LIST_LIMIT = 1000  # S3's most keys per ListObjectsV2 page


class StoreUnavailable(RuntimeError):
    """The store cannot take objects right now (network, server errors); retry later."""


class StoreRefused(StoreUnavailable):
    """The store answered and refused what this configuration asks (encryption it does not offer, credentials or
    permissions, a missing bucket): retrying cannot help until the configuration changes. `reason` is a short label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ObjectNotFound(KeyError):
    """No object has this key (never stored, or deleted)."""


@dataclass(frozen=True)
class Listing:
    """One page of a listing, in S3's order (ascending UTF-8 bytes).

    keys: objects under the prefix (only those before the next delimiter when one is given);
    prefixes: with a delimiter, the common prefixes ending in it ("folders"); token: pass it back
    to get the next page, None when this page is the last."""

    keys: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    token: str | None = None


@dataclass(frozen=True)
class StoredObject:
    """An object's facts and metadata (head), with its bytes when read whole (get)."""

    key: str
    size: int
    etag: str  # quoted, as in an HTTP ETag header
    modified: datetime
    metadata: dict[str, str]
    body: bytes | None = None


class Store(Protocol):
    """A place for face PNGs keyed by `facepipe.contract.object_key`."""

    url: str
    prefix: str
    max_batch: int  # how many puts may share one sync()
    # True: the processor applies retention (`apply_retention`) itself, hourly. False: a separate step does, once, with
    # rights the processor does not need (an S3 lifecycle rule: `facepipe retention`).
    prunes_itself: bool

    def put(self, key: str, png: bytes, metadata: dict[str, str]) -> None:
        """Store (or overwrite) one object with its metadata; raise StoreUnavailable on failure.

        The object is durable once `sync()` has returned after this put."""

    def sync(self) -> None:
        """Make every put this thread made since its last sync durable; raise StoreUnavailable when that fails,
        after which those puts must be made again before they can count as stored."""

    def check(self) -> None:
        """Raise StoreUnavailable (StoreRefused when retrying cannot help) when the store cannot be written."""

    def apply_retention(self, days: int) -> None:
        """Make objects older than `days` go away (lifecycle rule or pruning); 0 keeps everything."""

    def list(self, prefix: str, delimiter: str = "", token: str | None = None, limit: int = LIST_LIMIT) -> Listing:
        """Up to `limit` keys (and common prefixes) that start with `prefix`, continuing after `token`.

        Never more than one request to the backend: callers page with the returned token."""

    def head(self, key: str) -> StoredObject:
        """The object's size, ETag, time and metadata; raise ObjectNotFound or StoreUnavailable."""

    def get(self, key: str) -> StoredObject:
        """`head` plus the object's bytes."""

    def delete(self, keys: Sequence[str]) -> None:
        """Remove the objects and their metadata (absent keys are no error); raise StoreUnavailable on failure."""
