"""Reading and erasing through the storage interface, the same checks on a real S3 API (Ceph RGW) and a directory.

The expected answers come from a reference: S3's documented listing semantics applied to a sorted list of keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facepipe.config import StoreSettings
from facepipe.storage import Listing, ObjectNotFound, Store, StoreUnavailable, open_store
from facepipe_dev.processes import free_port
from facepipe_dev.rgw import RadosGateway

# Names chosen so that '-', '.', '/' and digits meet at the same position: S3 orders them by byte.
KEYS = [
    "d1/2026/01/02/000000.000_cam0_b1_1.png",
    "d1/2026/01/02/120000.000_cam1_b1_2.png",
    "d1/2026/01/02/235959.999_cam0_b1_3.png",
    "d1/2026/01/03/080000.000_cam0_b1_4.png",
    "d1/2025/12/31/235959.000_cam0_b0_9.png",
    "d1-x/2026/01/02/000000.000_cam0_b2_1.png",
    "d1.x/2026/01/02/000000.000_cam0_b3_1.png",
    "d10/2026/01/02/000000.000_cam0_b4_1.png",
]


def reference(keys: list[str], prefix: str, delimiter: str) -> tuple[list[str], list[str]]:
    """(keys, common prefixes) S3 returns for `prefix`/`delimiter`, all pages together."""
    found, prefixes = [], []
    for key in sorted(keys):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            found.append(key)
        elif key[: cut + 1] not in prefixes:
            prefixes.append(key[: cut + 1])
    return found, prefixes


def list_all(store: Store, prefix: str, delimiter: str = "", limit: int = 1000) -> tuple[list[str], list[str], int]:
    """Every page of a listing: (keys, prefixes, pages)."""
    keys: list[str] = []
    prefixes: list[str] = []
    token = None
    pages = 0
    while True:
        page: Listing = store.list(prefix, delimiter, token, limit)
        assert len(page.keys) + len(page.prefixes) <= limit
        keys += page.keys
        prefixes += page.prefixes
        pages += 1
        token = page.token
        if token is None:
            return keys, prefixes, pages


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "directory":
        yield open_store(StoreSettings(store=f"file://{tmp_path / 'faces'}"))
        return
    rgw: RadosGateway = request.getfixturevalue("rgw")
    bucket = request.getfixturevalue("s3_bucket")
    with pytest.MonkeyPatch.context() as env:
        for name, value in rgw.env().items():
            env.setenv(name, value)
        yield open_store(rgw.store_settings(f"s3://{bucket}/faces"))


@pytest.fixture
def filled(store: Store) -> tuple[Store, list[str]]:
    keys = [f"{store.prefix}/{key}" if store.prefix else key for key in KEYS]
    for number, key in enumerate(keys):
        store.put(key, b"\x89PNG face %d" % number, {"device": key.split("/")[-5], "seq": str(number)})
    store.sync()
    return store, keys


@pytest.mark.parametrize(
    ("prefix", "delimiter"),
    [("", "/"), ("d1", "/"), ("d1/", "/"), ("d1/2026/", "/"), ("d1/2026/01/02/", "/"), ("d1/2026/01/02/12", ""), ("d1", ""), ("", "")],
)
def test_listing_matches_s3_semantics(filled: tuple[Store, list[str]], prefix: str, delimiter: str) -> None:
    store, keys = filled
    full = f"{store.prefix}/{prefix}" if store.prefix else prefix
    assert list_all(store, full, delimiter)[:2] == reference(keys, full, delimiter)


@pytest.mark.parametrize("delimiter", ["", "/"])
def test_pages_continue_where_the_last_one_ended(filled: tuple[Store, list[str]], delimiter: str) -> None:
    store, keys = filled
    root = f"{store.prefix}/" if store.prefix else ""
    expected = reference(keys, root, delimiter)
    got_keys, got_prefixes, pages = list_all(store, root, delimiter, limit=2)
    assert (got_keys, got_prefixes) == expected
    assert pages >= (len(expected[0]) + len(expected[1])) // 2


def test_head_and_get_return_the_object_and_its_metadata(filled: tuple[Store, list[str]]) -> None:
    store, keys = filled
    head = store.head(keys[1])
    assert (head.size, head.body, head.metadata) == (len(b"\x89PNG face 1"), None, {"device": "d1", "seq": "1"})
    assert head.etag.startswith('"') and head.etag.endswith('"')
    got = store.get(keys[1])
    assert got.body == b"\x89PNG face 1" and got.etag == head.etag and got.metadata == head.metadata
    assert store.head(keys[2]).etag != head.etag, "another object, another ETag"


def test_a_missing_object_is_not_found(filled: tuple[Store, list[str]]) -> None:
    store, keys = filled
    for call in (store.head, store.get):
        with pytest.raises(ObjectNotFound):
            call(keys[0].replace("000000.000", "000000.001"))


def test_deleted_objects_and_their_metadata_are_gone(filled: tuple[Store, list[str]]) -> None:
    store, keys = filled
    day = [k for k in keys if "/d1/2026/01/02/" in f"/{k}"]
    store.delete([*day, keys[0].replace("000000.000", "010101.010")])  # an absent key is no error
    for key in day:
        with pytest.raises(ObjectNotFound):
            store.head(key)
    remaining, _, _ = list_all(store, f"{store.prefix}/" if store.prefix else "")
    assert remaining == sorted(set(keys) - set(day))


def test_directory_erasure_leaves_no_sidecar_and_no_empty_folder(tmp_path: Path) -> None:
    store = open_store(StoreSettings(store=f"file://{tmp_path}"))
    store.put(KEYS[3], b"png", {"seq": "4"})
    store.put(KEYS[0], b"png", {"seq": "1"})
    store.delete([KEYS[3]])
    assert not (tmp_path / "d1/2026/01/03").exists(), "the emptied day folder is removed"
    assert (tmp_path / "d1/2026/01").is_dir(), "a folder that still holds faces stays"
    assert sorted(p.name for p in (tmp_path / "d1/2026/01/02").iterdir()) == ["000000.000_cam0_b1_1.png", "000000.000_cam0_b1_1.png.json"]


def test_directory_lists_no_sidecars_or_temporary_files(tmp_path: Path) -> None:
    store = open_store(StoreSettings(store=f"file://{tmp_path}"))
    store.put(KEYS[0], b"png", {})
    (tmp_path / "d1/2026/01/02/.000001.000_cam0_b1_5.png.tmp").write_bytes(b"half")
    assert store.list("d1/2026/01/02/").keys == [KEYS[0]]
    with pytest.raises(ObjectNotFound):
        store.head(KEYS[0] + ".json")


@pytest.mark.parametrize("prefix", ["../", "d1/../../", "/etc/", "./"])
def test_directory_listing_stays_inside_the_store(tmp_path: Path, prefix: str) -> None:
    (tmp_path / "outside.png").write_bytes(b"png")
    store = open_store(StoreSettings(store=f"file://{tmp_path / 'faces' / 'd1'}"))
    store.put("2026/01/02/000000.000_cam0_b1_1.png", b"png", {})
    assert store.list(prefix, "/") == Listing() and store.list(prefix) == Listing(), "no key has such a prefix"


def test_a_store_that_is_down_is_unavailable_for_reading() -> None:
    store = open_store(StoreSettings(store="s3://faces/x", s3_endpoint_url=f"http://127.0.0.1:{free_port()}"))
    for call in (lambda: store.list("x/", "/"), lambda: store.head("x/k.png"), lambda: store.delete(["x/k.png"])):
        with pytest.raises(StoreUnavailable):
            call()
