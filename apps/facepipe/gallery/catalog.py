"""Newest-first views of the store (devices, their days, their faces) and erasure by range.

The store lists keys in ascending order, and the catalog never lists the whole bucket: a device's
days come from delimiter listings (`<prefix>/<device>/` -> years -> months -> days), and one day's
faces are read newest first by cutting the day into time buckets along the digits of the key's
`HHMMSS.mmm`: a bucket that fits in one listing request of BUCKET_KEYS keys is read whole and
reversed, a larger one is split into its next digit's buckets, newest first. A page costs a few
small requests however many faces the day holds, and a bucket found too large is remembered for a
minute, so the next pages go straight to its parts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from facepipe import contract
from facepipe.storage import Store

# Keys a bucket may hold to be read in one request. Smaller buckets cost more requests but far less
# listing (S3 servers and boto3 spend per key): 250 halved a page's time against 1,000 on Ceph RGW.
BUCKET_KEYS = 250
BIG_BUCKET_SECONDS = 60.0  # a bucket found larger than BUCKET_KEYS is split without asking again for this long
COUNT_CAP = 10_000  # a device's faces of today are counted up to this many (about ten listing requests)
HOURS = tuple(f"{hour:02d}" for hour in range(24))  # a day's keys by hour: counted in parallel
LISTING_TTL = 2.0  # seconds a delimiter listing (devices, years, months, days) is reused
# The characters that may follow each position of a key's time, `HHMMSS.mmm`.
_NEXT = ("012", "0123456789", "012345", "0123456789", "012345", "0123456789", ".", "0123456789", "0123456789", "0123456789")


def _children(digits: str) -> str:
    if digits == "2":
        return "0123"  # hours 20..23
    return _NEXT[len(digits)]


@dataclass(frozen=True)
class FaceQuery:
    """Faces of one device, newest first: `since` inclusive, `until` exclusive, `before` a key (the cursor)."""

    device: str
    camera: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None


@dataclass(frozen=True)
class FacePage:
    keys: list[str]
    next: str | None  # the last key looked at when more may follow: pass it back as `before`
    scanned: int


@dataclass(frozen=True)
class DeviceSummary:
    device: str
    faces_today: int
    today_complete: bool  # False when the count stopped at COUNT_CAP
    newest: str | None  # key of the newest face


def _key_time(moment: datetime) -> str:
    u = moment.astimezone(UTC)
    return f"{u.hour:02d}{u.minute:02d}{u.second:02d}.{u.microsecond // 1000:03d}"


class Catalog:
    """Reads one store for the gallery; thread-safe."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC), workers: int = 8) -> None:
        self.store = store
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="catalog")
        self._count_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="catalog-count")  # under _pool's summaries
        self._lock = threading.Lock()
        self._listings: dict[str, tuple[float, list[str]]] = {}
        self._big: dict[str, float] = {}  # bucket prefix -> when it was found larger than BUCKET_KEYS

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._count_pool.shutdown(wait=False, cancel_futures=True)

    # --- delimiter listings: devices and days --------------------------------------------------

    def _folders(self, prefix: str) -> list[str]:
        """The common prefixes right under `prefix`, every page, reused for LISTING_TTL seconds."""
        now = time.monotonic()
        with self._lock:
            cached = self._listings.get(prefix)
            if cached is not None and now - cached[0] < LISTING_TTL:
                return cached[1]
        folders: list[str] = []
        token = None
        while True:
            page = self.store.list(prefix, "/", token)
            folders += page.prefixes
            token = page.token
            if token is None:
                break
        with self._lock:
            if len(self._listings) > 4096:
                self._listings.clear()
            self._listings[prefix] = (now, folders)
        return folders

    def forget(self) -> None:
        """Drop the reused listings and what is known of bucket sizes (after an erasure)."""
        with self._lock:
            self._listings.clear()
            self._big.clear()

    def devices(self) -> list[str]:
        root = contract.device_prefix(self.store.prefix, "")
        root = "" if root == "/" else root
        names = (folder[len(root) : -1] for folder in self._folders(root))
        return [name for name in names if contract.ID_PATTERN.fullmatch(name)]

    def has_device(self, device: str) -> bool:
        page = self.store.list(contract.device_prefix(self.store.prefix, device), "/", limit=1)
        return bool(page.keys or page.prefixes)

    def days(self, device: str, newest: date | None = None, oldest: date | None = None) -> Iterator[date]:
        """The days with faces of `device`, newest first, within [oldest, newest]."""
        base = contract.device_prefix(self.store.prefix, device)
        for year in self._numbered(base, 4, newest and newest.year, oldest and oldest.year):
            year_prefix = f"{base}{year:04d}/"
            top = newest.month if newest and newest.year == year else None
            bottom = oldest.month if oldest and oldest.year == year else None
            for month in self._numbered(year_prefix, 2, top, bottom):
                month_prefix = f"{year_prefix}{month:02d}/"
                top_day = newest.day if newest and (newest.year, newest.month) == (year, month) else None
                bottom_day = oldest.day if oldest and (oldest.year, oldest.month) == (year, month) else None
                for day in self._numbered(month_prefix, 2, top_day, bottom_day):
                    try:
                        yield date(year, month, day)
                    except ValueError:  # a folder such as 2026/02/31 is no day: not ours
                        continue

    def _numbered(self, prefix: str, width: int, highest: int | None, lowest: int | None) -> list[int]:
        numbers = []
        for folder in self._folders(prefix):
            name = folder[len(prefix) : -1]
            if len(name) == width and name.isdigit():
                number = int(name)
                if (highest is None or number <= highest) and (lowest is None or number >= lowest):
                    numbers.append(number)
        return sorted(numbers, reverse=True)

    # --- faces, newest first --------------------------------------------------------------------

    def newest_keys(self, query: FaceQuery) -> Iterator[str]:
        """Every key of the query's device in its range, newest first, read lazily bucket by bucket."""
        base = contract.device_prefix(self.store.prefix, query.device)
        upper = query.before or ""
        if query.until is not None:
            bound = contract.day_prefix(self.store.prefix, query.device, query.until.astimezone(UTC).date()) + _key_time(query.until)
            upper = min(upper, bound) if upper else bound
        lower = ""
        if query.since is not None:
            lower = contract.day_prefix(self.store.prefix, query.device, query.since.astimezone(UTC).date()) + _key_time(query.since)
        newest = _key_day(base, upper) if upper else None
        oldest = query.since.astimezone(UTC).date() if query.since is not None else None
        for day in self.days(query.device, newest, oldest):
            yield from self._bucket(contract.day_prefix(self.store.prefix, query.device, day), "", lower, upper)

    def _bucket(self, day: str, digits: str, lower: str, upper: str) -> Iterator[str]:
        start = day + digits
        if upper and start >= upper:
            return
        if lower and start < lower and not lower.startswith(start):
            return
        splittable = len(digits) < len(_NEXT)
        if splittable and self._known_big(start):
            yield from self._split(day, digits, lower, upper)
            return
        page = self.store.list(start, limit=BUCKET_KEYS)
        if page.token is not None and splittable:
            with self._lock:
                if len(self._big) > 10_000:
                    self._big.clear()
                self._big[start] = time.monotonic()
            yield from self._split(day, digits, lower, upper)
            return
        keys = page.keys
        token = page.token
        while token is not None:  # more than BUCKET_KEYS faces in one millisecond: read them all
            more = self.store.list(start, token=token)
            keys += more.keys
            token = more.token
        for key in reversed(keys):
            if (not upper or key < upper) and key >= lower:
                yield key

    def _split(self, day: str, digits: str, lower: str, upper: str) -> Iterator[str]:
        for child in reversed(_children(digits)):
            yield from self._bucket(day, digits + child, lower, upper)

    def _known_big(self, start: str) -> bool:
        with self._lock:
            found = self._big.get(start)
        return found is not None and time.monotonic() - found < BIG_BUCKET_SECONDS

    def page(self, query: FaceQuery, limit: int, budget: int) -> FacePage:
        """Up to `limit` faces matching the query, looking at no more than `budget` keys."""
        found: list[str] = []
        scanned = 0
        last = None
        for key in self.newest_keys(query):
            if len(found) == limit or scanned == budget:
                return FacePage(found, last, scanned)
            scanned += 1
            last = key
            if self._matches(key, query.camera):
                found.append(key)
        return FacePage(found, None, scanned)

    def _matches(self, key: str, camera: str | None) -> bool:
        """A face key of the contract's form (other objects are not faces), of `camera` when one is given."""
        try:
            facts = contract.parse_object_key(self.store.prefix, key)
        except contract.ContractError:
            return False
        return camera is None or facts.camera == camera

    # --- devices page ----------------------------------------------------------------------------

    def summary(self, device: str) -> DeviceSummary:
        count, complete = self.count_day(device, self.clock().date())
        newest = self.page(FaceQuery(device), 1, BUCKET_KEYS).keys
        return DeviceSummary(device, count, complete, newest[0] if newest else None)

    def count_day(self, device: str, day: date) -> tuple[int, bool]:
        """(faces of `device` on `day`, complete): its 24 hours listed in parallel; no listing starts once COUNT_CAP
        are counted (at most `workers` requests in flight go past it)."""
        prefix = contract.day_prefix(self.store.prefix, device, day)
        counted = [0]
        capped = threading.Event()

        def hour(digits: str) -> int:
            found, token = 0, None
            while True:
                with self._lock:
                    if counted[0] >= COUNT_CAP:  # what is left of this hour (or all of it) goes uncounted
                        capped.set()
                        return found
                listing = self.store.list(prefix + digits, token=token)
                found += len(listing.keys)
                with self._lock:
                    counted[0] += len(listing.keys)
                token = listing.token
                if token is None:
                    return found

        total = sum(self._count_pool.map(hour, HOURS))
        return total, not capped.is_set()

    def summaries(self) -> list[DeviceSummary]:
        """Every device's summary, several devices at once."""
        return list(self._pool.map(self.summary, self.devices()))

    # --- erasure ---------------------------------------------------------------------------------

    def erase(self, query: FaceQuery, on_batch: Callable[[int], None] | None = None) -> int:
        """Delete every face of the query (camera filter included) in batches; the number deleted."""
        deleted = 0
        batch: list[str] = []
        try:
            for key in self.newest_keys(query):
                if not self._matches(key, query.camera):
                    continue
                batch.append(key)
                if len(batch) == BUCKET_KEYS:
                    self.store.delete(batch)
                    deleted += len(batch)
                    batch = []
                    if on_batch is not None:
                        on_batch(deleted)
            if batch:
                self.store.delete(batch)
                deleted += len(batch)
        finally:
            self.forget()
        return deleted


def _key_day(base: str, key: str) -> date | None:
    """The day of a key (or key bound) under `base`: `<base>YYYY/MM/DD/...`."""
    rest = key[len(base) :]
    try:
        return date(int(rest[0:4]), int(rest[5:7]), int(rest[8:10]))
    except ValueError:
        return None


def day_range(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)
