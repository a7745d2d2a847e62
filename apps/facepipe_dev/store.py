"""Where a rig's processor stores (a directory, or a bucket on a Ceph RGW) and exact accounting of what reached it.

Object keys derive from the metadata (`.../<device>/YYYY/MM/DD/<HHMMSS.mmm>_<camera>_<boot>_<seq>.png`),
so a redelivered face overwrites its own object: more than one object for one (device, camera,
boot, seq) is a real duplicate. `account()` compares the seqs a publisher had acknowledged with the
objects of a store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facepipe.config import StoreSettings
from facepipe.storage.s3 import is_check_key

if TYPE_CHECKING:
    from facepipe_dev.rgw import RadosGateway

StreamKey = tuple[str, str, str]  # (device, camera, boot)
S3_PREFIX = "faces"


class Store:
    """A processor's store and its keys: `Store.directory(root)` or `Store.s3(rgw, bucket)`."""

    def __init__(self, settings: StoreSettings, root: Path | None = None, rgw: RadosGateway | None = None, bucket: str = "") -> None:
        self.settings = settings
        self.root = root
        self.rgw = rgw
        self.bucket = bucket
        self.client = rgw.client() if rgw is not None else None

    @classmethod
    def directory(cls, root: Path, sync: str = "files") -> Store:
        """A directory store at `root` (FACEPIPE_STORE_SYNC=`sync`)."""
        return cls(StoreSettings(store=f"file://{root}", directory_sync=sync), root=root)

    @classmethod
    def s3(cls, rgw: RadosGateway, bucket: str, create: bool = True) -> Store:
        """Bucket `bucket` (made here unless `create` is false) on `rgw`, keys under `faces/`."""
        store = cls(
            rgw.store_settings(f"s3://{bucket}/{S3_PREFIX}"),
            rgw=rgw,
            bucket=bucket,
        )
        if create:
            store.client.create_bucket(Bucket=bucket)
        return store

    def env(self) -> dict[str, str]:
        """What the processor needs besides its settings (the S3 credentials)."""
        return self.rgw.env() if self.rgw is not None else {}

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key (S3: under `prefix`; a directory: its PNG files, relative to the root)."""
        if self.client is not None:
            return s3_keys(self.client, self.bucket, prefix)
        assert self.root is not None
        return directory_keys(self.root)

    def stored_seqs(self, boot: str) -> set[int]:
        """Distinct seqs of one publishing run (its boot id) that reached the store."""
        return {parsed[1] for key in self.keys() if (parsed := parse_key(key)) and parsed[0][2] == boot}


# --- reading a store -----------------------------------------------------------------------------


def parse_key(key: str) -> tuple[StreamKey, int] | None:
    """((device, camera, boot), seq) of a key `.../<device>/YYYY/MM/DD/<HHMMSS.mmm>_<camera>_<boot>_<seq>.png`.

    None for a key that is not of this form (e.g. an anonymous `..._sha256-<hex>.png`). The boot id
    must not contain '_' (the camera's and the load generator's are hex).
    """
    parts = key.split("/")
    if len(parts) < 5 or not parts[-1].endswith(".png"):
        return None
    name = parts[-1][: -len(".png")]
    _time, _, rest = name.partition("_")
    pieces = rest.rsplit("_", 2)
    if len(pieces) != 3 or not pieces[2].isdigit():
        return None
    camera, boot, seq = pieces
    return (parts[-5], camera, boot), int(seq)


def directory_keys(root: Path) -> list[str]:
    """The object keys of a directory store (its PNG files, relative to the root)."""
    if not root.exists():
        return []
    return [str(p.relative_to(root)) for p in root.rglob("*.png")]


def s3_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every face key in `bucket` under `prefix` (paginated; the processor's write check object left out)."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", []) if not is_check_key(item["Key"])]
    return keys


# --- accounting ----------------------------------------------------------------------------------


@dataclass
class Accounting:
    """Sent versus stored for one stream, from seq numbers.

    sent: faces the first broker acknowledged; stored: distinct sent seqs with an object;
    lost: sent seqs without an object; duplicates: objects beyond the first for one seq;
    unexpected: objects of this stream whose seq was never acknowledged to the sender (a face
    published without a PUBACK in time can still arrive: information, not loss);
    foreign: objects of other streams; redeliveries: the processor's stored counter minus the
    objects (faces stored more than once, each overwriting its own object), when given.
    """

    sent: int
    stored: int
    lost: int
    duplicates: int
    objects: int
    unexpected: int = 0
    foreign: int = 0
    redeliveries: int | None = None
    lost_seqs: list[int] = field(default_factory=list)
    duplicate_seqs: list[int] = field(default_factory=list)

    def line(self, label: str = "") -> str:
        text = (
            f"sent={self.sent} stored={self.stored} lost={self.lost} duplicates={self.duplicates} "
            f"objects={self.objects} unexpected={self.unexpected} foreign={self.foreign} redeliveries={self.redeliveries}"
        )
        if self.lost_seqs:
            text += f" lost_seqs={_ranges(self.lost_seqs)}"
        if self.duplicate_seqs:
            text += f" duplicate_seqs={_ranges(self.duplicate_seqs)}"
        return f"{label}: {text}" if label else text


def account(sent: Iterable[int], keys: Iterable[str], stream: StreamKey, processor_stored_total: float | None = None) -> Accounting:
    """Compare the acknowledged seqs of `stream` with the stored object keys."""
    sent_set = set(sent)
    per_seq: Counter[int] = Counter()
    foreign = 0
    for key in keys:
        parsed = parse_key(key)
        if parsed is None or parsed[0] != stream:
            foreign += 1
            continue
        per_seq[parsed[1]] += 1
    objects = sum(per_seq.values())
    lost_seqs = sorted(sent_set - per_seq.keys())
    duplicate_seqs = sorted(s for s, n in per_seq.items() if n > 1)
    return Accounting(
        sent=len(sent_set),
        stored=len(sent_set & per_seq.keys()),
        lost=len(lost_seqs),
        duplicates=sum(n - 1 for n in per_seq.values()),
        objects=objects,
        unexpected=len(per_seq.keys() - sent_set),
        foreign=foreign,
        redeliveries=None if processor_stored_total is None else int(processor_stored_total) - objects - foreign,
        lost_seqs=lost_seqs,
        duplicate_seqs=duplicate_seqs,
    )


def _ranges(seqs: list[int], limit: int = 20) -> str:
    """[1, 2, 3, 7] -> '1-3,7' (at most `limit` ranges)."""
    out: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(f"{start}-{prev}" if start != prev else str(start))
        if s is not None:
            start = prev = s
    return ",".join(out[:limit]) + (",..." if len(out) > limit else "")
