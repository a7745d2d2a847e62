"""The gallery's catalog on a real directory store: newest first, ranges, cursors, bounded listing, erasure."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facepipe import contract
from facepipe.contract import FaceMeta
from facepipe.gallery import catalog
from facepipe.gallery.catalog import Catalog, FaceQuery
from facepipe.storage.directory import DirectoryStore

DAY = datetime(2026, 3, 4, tzinfo=UTC)


class CountingStore:
    """A real DirectoryStore that counts what its listings return (to prove a page reads little)."""

    def __init__(self, store: DirectoryStore) -> None:
        self.store = store
        self.prefix = store.prefix
        self.requests = 0
        self.listed = 0

    def list(self, *args: Any, **kwargs: Any) -> Any:
        page = self.store.list(*args, **kwargs)
        self.requests += 1
        self.listed += len(page.keys) + len(page.prefixes)
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def put_faces(store: DirectoryStore, moments: list[datetime], device: str = "edge-1", cameras: tuple[str, ...] = ("cam0",)) -> list[str]:
    keys = []
    for seq, moment in enumerate(moments):
        meta = FaceMeta(device, cameras[seq % len(cameras)], "b1", seq, moment, seq, 0, (0, 0, 9, 9), 0.9, "yunet")
        key = contract.object_key(store.prefix, meta)
        store.put(key, b"png", meta.storage_metadata())
        keys.append(key)
    return keys


def collect(cat: Catalog, query: FaceQuery, limit: int, budget: int = 10_000) -> tuple[list[str], int]:
    """Page through a query with cursors; (keys, pages)."""
    keys: list[str] = []
    pages = 0
    while True:
        page = cat.page(query, limit, budget)
        keys += page.keys
        pages += 1
        if page.next is None:
            return keys, pages
        query = FaceQuery(query.device, query.camera, query.since, query.until, page.next)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offsets=st.lists(st.integers(0, 3 * 86400 * 1000 - 1), min_size=0, max_size=40, unique=True),
    since=st.none() | st.integers(0, 3 * 86400 * 1000),
    span=st.none() | st.integers(0, 2 * 86400 * 1000),
    camera=st.sampled_from([None, "cam0", "cam1"]),
    limit=st.integers(1, 7),
)
def test_pages_are_newest_first_and_exactly_the_range(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, offsets, since, span, camera, limit
) -> None:
    monkeypatch.setattr(catalog, "BUCKET_KEYS", 3)  # buckets split after three faces: every level of the descent runs
    store = DirectoryStore(f"file://{tmp_path_factory.mktemp('faces')}")
    moments = [DAY + timedelta(milliseconds=o) for o in offsets]
    keys = put_faces(store, moments, cameras=("cam0", "cam1"))
    since_at = None if since is None else DAY + timedelta(milliseconds=since)
    until_at = None if span is None or since_at is None else since_at + timedelta(milliseconds=span)
    expected = sorted(
        (
            key
            for key, moment in zip(keys, moments, strict=True)
            if (since_at is None or moment >= since_at)
            and (until_at is None or moment < until_at)
            and (camera is None or contract.parse_object_key("", key).camera == camera)
        ),
        reverse=True,
    )
    got, _pages = collect(Catalog(store), FaceQuery("edge-1", camera, since_at, until_at), limit)
    assert got == expected


def test_a_page_of_a_crowded_day_reads_a_few_buckets_not_the_day(tmp_path: Path) -> None:
    store = DirectoryStore(f"file://{tmp_path}")
    moments = [DAY + timedelta(seconds=s * 1.7) for s in range(20_000)]  # 20,000 faces over nine and a half hours
    put_faces(store, moments)
    counting = CountingStore(store)
    page = Catalog(counting).page(FaceQuery("edge-1"), limit=50, budget=1000)  # type: ignore[arg-type]
    assert len(page.keys) == 50 and page.keys[0].endswith(f"_{len(moments) - 1}.png")
    assert counting.listed <= 4 * catalog.BUCKET_KEYS, f"{counting.listed} keys listed for one page"


def test_days_devices_and_summaries(tmp_path: Path) -> None:
    store = DirectoryStore(f"file://{tmp_path}")
    now = datetime.now(UTC)
    put_faces(store, [now - timedelta(days=400), now - timedelta(days=1), now - timedelta(seconds=5), now - timedelta(seconds=1)])
    put_faces(store, [now - timedelta(days=2)], device="edge-2")
    cat = Catalog(store)
    assert cat.devices() == ["edge-1", "edge-2"]
    assert list(cat.days("edge-1")) == sorted({(now - timedelta(days=d)).date() for d in (400, 1, 0)}, reverse=True)
    summaries = {s.device: s for s in cat.summaries()}
    assert (summaries["edge-1"].faces_today, summaries["edge-1"].today_complete) == (2, True)
    assert summaries["edge-1"].newest is not None and summaries["edge-1"].newest.endswith("_3.png")
    assert summaries["edge-2"].faces_today == 0 and summaries["edge-2"].newest is not None
    assert cat.has_device("edge-2") and not cat.has_device("edge-3")


class SmallPages(CountingStore):
    """Listings of at most 3 keys: a day's count pages within each hour."""

    def list(self, prefix: str, delimiter: str = "", token: str | None = None, limit: int = 1000) -> Any:
        return super().list(prefix, delimiter, token, min(limit, 3))


def test_a_day_is_counted_hour_by_hour_exactly_and_up_to_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DirectoryStore(f"file://{tmp_path}")
    moments = [DAY + timedelta(hours=hour, seconds=second) for hour in (0, 7, 23) for second in range(5)]
    put_faces(store, [DAY - timedelta(seconds=1), DAY + timedelta(days=1), *moments])
    counting = SmallPages(store)
    assert Catalog(counting).count_day("edge-1", DAY.date()) == (15, True)  # type: ignore[arg-type]
    assert counting.requests == 24 + 3, "each hour listed once, the three busy ones twice (5 keys, 3 a page)"
    assert Catalog(store).count_day("edge-2", DAY.date()) == (0, True)
    monkeypatch.setattr(catalog, "COUNT_CAP", 4)
    count, complete = Catalog(SmallPages(store)).count_day("edge-1", DAY.date())  # type: ignore[arg-type]
    assert not complete and 4 <= count < 15
    one_by_one = CountingStore(store)  # each hour in one listing: the cap still stops the count
    assert Catalog(one_by_one, workers=1).count_day("edge-1", DAY.date()) == (5, False)  # type: ignore[arg-type]
    assert one_by_one.requests == 1


def test_erasing_a_day_removes_exactly_that_day(tmp_path: Path) -> None:
    store = DirectoryStore(f"file://{tmp_path}")
    moments = [DAY - timedelta(hours=1), DAY + timedelta(hours=1), DAY + timedelta(hours=23), DAY + timedelta(days=1)]
    keys = put_faces(store, moments, cameras=("cam0", "cam1"))
    cat = Catalog(store)
    start, end = catalog.day_range(date(2026, 3, 4))
    assert cat.erase(FaceQuery("edge-1", since=start, until=end)) == 2
    left, _ = collect(cat, FaceQuery("edge-1"), 10)
    assert left == [keys[3], keys[0]]
    assert not (tmp_path / "edge-1/2026/03/04").exists()
