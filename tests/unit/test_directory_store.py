"""The directory store on a real filesystem: layout, sidecars, both ways of making faces durable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facepipe.storage.base import StoreUnavailable
from facepipe.storage.directory import BATCH_WITH_SYNCFS, DirectoryStore

KEY = "edge-1/2026/01/02/030405.006_cam0_b00f_7.png"


@pytest.mark.parametrize("use_syncfs", [True, False], ids=["syncfs-per-batch", "fsync-per-file"])
def test_put_then_sync_leaves_the_face_and_its_sidecar(tmp_path: Path, use_syncfs: bool) -> None:
    store = DirectoryStore(f"file://{tmp_path}", use_syncfs=use_syncfs)
    assert store.max_batch == (BATCH_WITH_SYNCFS if use_syncfs else 1)
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


def test_sync_of_a_vanished_store_says_where(tmp_path: Path) -> None:
    store = DirectoryStore(f"file://{tmp_path / 'faces'}")
    with pytest.raises(StoreUnavailable, match=r"cannot open .*faces to sync it"):
        store.sync()


def test_unwritable_store_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "faces").write_text("a file where the directory should be")
    store = DirectoryStore(f"file://{tmp_path / 'faces'}")
    with pytest.raises(StoreUnavailable, match="cannot write"):
        store.put(KEY, b"x", {})


@pytest.mark.parametrize("use_syncfs", [True, False], ids=["syncfs-per-batch", "fsync-per-file"])
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
