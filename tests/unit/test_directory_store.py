"""The directory store on a real filesystem: layout, sidecars, both ways of making faces durable."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facepipe.config import StoreSettings
from facepipe.storage import StoreUnavailable, open_store
from facepipe.storage.directory import DirectoryStore

KEY = "edge-1/2026/01/02/030405.006_cam0_b00f_7.png"


@pytest.mark.parametrize("use_syncfs", [True, False], ids=["filesystem", "files"])
def test_put_then_sync_leaves_the_face_and_its_sidecar(tmp_path: Path, use_syncfs: bool) -> None:
    store = DirectoryStore(f"file://{tmp_path}", use_syncfs=use_syncfs)
    store.put(KEY, b"\x89PNG first", {"device": "edge-1"})
    store.put(KEY, b"\x89PNG again", {"device": "edge-1", "seq": "7"})  # a redelivery overwrites
    store.sync()
    assert (tmp_path / KEY).read_bytes() == b"\x89PNG again"
    assert json.loads((tmp_path / f"{KEY}.json").read_text()) == {"device": "edge-1", "seq": "7"}
    assert sorted(p.name for p in (tmp_path / KEY).parent.iterdir()) == [Path(KEY).name, f"{Path(KEY).name}.json"], (
        "no temporary files left"
    )


@pytest.mark.parametrize("key", ["../outside.png", "edge-1/../../outside.png", "/etc/outside.png"])
def test_keys_cannot_leave_the_store(tmp_path: Path, key: str) -> None:
    store = DirectoryStore(f"file://{tmp_path / 'faces'}")
    with pytest.raises(ValueError, match="escapes the store directory"):
        store.put(key, b"x", {})


@pytest.mark.parametrize("use_syncfs", [True, False], ids=["filesystem", "files"])
def test_a_store_that_vanished_before_its_sync_is_unavailable(tmp_path: Path, use_syncfs: bool) -> None:
    store = DirectoryStore(f"file://{tmp_path / 'faces'}", use_syncfs=use_syncfs)
    store.put(KEY, b"x", {})
    shutil.rmtree(tmp_path / "faces")
    with pytest.raises(StoreUnavailable, match=r"cannot make .*faces durable"):
        store.sync()
    store.sync()  # the failed batch is forgotten: the processor puts it again before its next sync


def test_the_setting_chooses_how_batches_become_durable(tmp_path: Path) -> None:
    for sync, uses_syncfs in (("files", False), ("filesystem", True)):
        store = open_store(StoreSettings(store=f"file://{tmp_path}", directory_sync=sync))
        assert isinstance(store, DirectoryStore) and (store._syncfs is not None) is uses_syncfs


def test_unwritable_store_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "faces").write_text("a file where the directory should be")
    store = DirectoryStore(f"file://{tmp_path / 'faces'}")
    with pytest.raises(StoreUnavailable, match="cannot write"):
        store.put(KEY, b"x", {})


@pytest.mark.parametrize("use_syncfs", [True, False], ids=["filesystem", "files"])
def test_a_folder_removed_by_retention_is_created_again(tmp_path: Path, use_syncfs: bool) -> None:
    store = DirectoryStore(f"file://{tmp_path}", use_syncfs=use_syncfs)
    store.put(KEY, b"\x89PNG old", {})
    for path in (tmp_path / KEY, tmp_path / f"{KEY}.json"):
        os.utime(path, (0, 0))
    store.apply_retention(1)
    assert not (tmp_path / KEY).parent.exists()
    store.put(KEY, b"\x89PNG new", {})
    store.sync()
    assert (tmp_path / KEY).read_bytes() == b"\x89PNG new"


_component = st.text(alphabet="ab-.0_", min_size=1, max_size=3).filter(lambda name: not name.startswith("."))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    paths=st.lists(st.lists(_component, min_size=1, max_size=3), min_size=1, max_size=12),
    prefix=st.text(alphabet="ab-.0_/", max_size=4).filter(lambda p: not p.startswith("/") and "//" not in p and ".." not in p),
    grouped=st.booleans(),
    limit=st.integers(1, 4),
)
def test_listing_pages_match_s3_order(tmp_path_factory: pytest.TempPathFactory, paths, prefix, grouped, limit) -> None:
    """Any tree of names: the pages, joined, are what S3 would list (keys in byte order, folders as prefixes)."""
    root = tmp_path_factory.mktemp("listing")
    keys = sorted({"/".join(parts) for parts in paths})
    store = DirectoryStore(f"file://{root}")
    written = []
    for key in keys:
        if any(other.startswith(key + "/") for other in keys):
            continue  # a name cannot be a file and a folder at once
        store.put(key, b"x", {})
        written.append(key)
    expected_keys, expected_prefixes = [], []
    for key in written:
        if not key.startswith(prefix):
            continue
        cut = key.find("/", len(prefix)) if grouped else -1
        if cut < 0:
            expected_keys.append(key)
        elif key[: cut + 1] not in expected_prefixes:
            expected_prefixes.append(key[: cut + 1])
    got_keys, got_prefixes, token = [], [], None
    while True:
        page = store.list(prefix, "/" if grouped else "", token, limit)
        got_keys += page.keys
        got_prefixes += page.prefixes
        token = page.token
        if token is None:
            break
    assert (got_keys, got_prefixes) == (expected_keys, expected_prefixes)
