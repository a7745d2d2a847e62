"""The forwarder's bounded on-disk spool: faces wait here, in order, until the cloud acknowledges them.

Records are appended to segment files; a reader sends them in order and a cursor file records
how far the cloud has acknowledged, so a restarted forwarder resumes where it left off (the few
faces in flight at a crash are sent again and overwrite their own objects). Limits in bytes and
in age drop the oldest records, counted by reason, never silently.

Record: MAGIC, header length, payload length, spooled-at time, CRC32 of header + payload,
then the header (the relayed MQTT 5 properties, as the property block the wire carries) and the
payload. Records of spools written by 0.1 (MAGIC_JSON: properties as JSON) are still read.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facepipe.errors import FatalError
from facepipe.mqtt_properties import PackedProperties, wire_block

MAGIC = b"F5"
MAGIC_JSON = b"FP"  # the header is JSON: records written by facepipe 0.1
MAGICS = (MAGIC, MAGIC_JSON)
# Per-connection properties: the cloud broker assigns its own. Every other PUBLISH property is relayed.
HOP_PROPERTIES = ("SubscriptionIdentifier", "TopicAlias")
RELAYED_PROPERTIES = ("PayloadFormatIndicator", "MessageExpiryInterval", "ContentType", "ResponseTopic", "CorrelationData", "UserProperty")
RECORD_HEADER = struct.Struct(">2sIIdI")
SEGMENT_BYTES = 8 * 1024 * 1024
# Records appended while the reader keeps up are also kept in memory, up to this many bytes, so the
# sender does not read back what was just written; a reader that falls behind reads the files.
RECENT_BYTES = 8 * 1024 * 1024
CURSOR_SAVE_SECONDS = 0.2

Position = tuple[int, int]  # (segment number, byte offset)


DROP_REASONS = ("full", "age", "corrupt")  # why records leave the spool unsent


class SpoolError(FatalError):
    """The spool directory cannot be used (missing volume, permissions)."""


def encode_properties(props: Properties | None) -> bytes:
    """The properties to relay as an MQTT 5 property block: the received bytes, unless some must be dropped."""
    if props is None:
        return b"\x00"
    block = wire_block(props)
    if block is not None and not any(name in props.__dict__ for name in HOP_PROPERTIES):
        return block
    relayed = Properties(PacketTypes.PUBLISH)
    for name in RELAYED_PROPERTIES:
        if hasattr(props, name):
            setattr(relayed, name, getattr(props, name))
    return bytes(relayed.pack())


def decode_properties(header: bytes, magic: bytes = MAGIC) -> Properties:
    """Properties to publish from a record's header (kept encoded: the forwarder only relays them)."""
    if magic == MAGIC:
        return PackedProperties(header)
    doc = json.loads(header)
    props = Properties(PacketTypes.PUBLISH)
    for name in ("ContentType", "ResponseTopic", "PayloadFormatIndicator", "MessageExpiryInterval"):
        if name in doc:
            setattr(props, name, doc[name])
    if "CorrelationData" in doc:
        props.CorrelationData = bytes.fromhex(doc["CorrelationData"])
    if "UserProperty" in doc:
        props.UserProperty = [tuple(pair) for pair in doc["UserProperty"]]
    return props


@dataclass
class Entry:
    """One spooled record handed to the sender."""

    start: Position
    end: Position
    header: bytes
    payload: bytes
    spooled_at: float
    magic: bytes = MAGIC
    done: bool = False

    def properties(self) -> Properties:
        return decode_properties(self.header, self.magic)

    @property
    def size(self) -> int:
        return len(self.header) + len(self.payload)


@dataclass
class _Segment:
    number: int
    path: Path
    size: int = 0
    records: int = 0


@dataclass
class SpoolCounts:
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


class Spool:
    """An append-only, size- and age-bounded queue of faces on disk. Thread-safe."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        max_age: float,
        segment_bytes: int = SEGMENT_BYTES,
        recent_bytes: int = RECENT_BYTES,
        on_drop: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.segment_bytes = segment_bytes
        self.recent_limit = recent_bytes
        self.on_drop = on_drop or (lambda _reason, _count: None)
        self.clock = clock
        self.counts = SpoolCounts()
        self.lock = threading.Condition()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SpoolError(f"spool directory {directory} is not writable ({exc}): point FACEPIPE_SPOOL_DIR at a writable volume") from exc
        self.cursor_path = directory / "cursor"
        self.committed = self._load_cursor()
        self.segments: dict[int, _Segment] = {}
        for path in sorted(directory.glob("seg-*.spool")):
            number = int(path.stem[4:])
            if number < self.committed[0]:
                path.unlink()
            else:
                self.segments[number] = self._scan(_Segment(number, path))
        if self.segments and self.committed[0] not in self.segments:
            self.committed = (min(self.segments), 0)
        # Always write into a fresh segment: a crash may have left a torn record at an old tail.
        self.tail = self._new_segment(max(self.segments, default=self.committed[0] - 1) + 1)
        if not self.segments.keys() - {self.tail.number}:
            self.committed = (self.tail.number, 0)
        self.read_pos: Position = self.committed
        self.inflight: deque[Entry] = deque()
        self.recent: deque[Entry] = deque()  # the newest records, contiguous, still unread
        self.recent_bytes = 0
        self._reader: tuple[int, BinaryIO] | None = None
        self._cursor_saved_at = 0.0

    # --- files -----------------------------------------------------------------------------

    def _load_cursor(self) -> Position:
        try:
            segment, offset = self.cursor_path.read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            return (0, 0)

    def _save_cursor(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._cursor_saved_at < CURSOR_SAVE_SECONDS:
            return
        tmp = self.cursor_path.with_suffix(".tmp")
        tmp.write_text(f"{self.committed[0]} {self.committed[1]}\n")
        os.replace(tmp, self.cursor_path)
        self._cursor_saved_at = now

    def _scan(self, segment: _Segment) -> _Segment:
        """Count the intact records of an existing segment; stop at a torn or corrupt one."""
        with open(segment.path, "rb") as handle:
            while True:
                raw = handle.read(RECORD_HEADER.size)
                if len(raw) < RECORD_HEADER.size:
                    break
                magic, header_len, payload_len, _at, crc = RECORD_HEADER.unpack(raw)
                body = handle.read(header_len + payload_len)
                if magic not in MAGICS or len(body) != header_len + payload_len or zlib.crc32(body) != crc:
                    self._count_drop("corrupt", 1)
                    break
                segment.records += 1
                segment.size = handle.tell()
        return segment

    def _new_segment(self, number: int) -> _Segment:
        segment = _Segment(number, self.directory / f"seg-{number:012d}.spool")
        self.segments[number] = segment
        self._writer: BinaryIO = open(segment.path, "ab")
        return segment

    def _count_drop(self, reason: str, count: int) -> None:
        if count:
            self.counts.dropped[reason] += count
            self.on_drop(reason, count)

    # --- writing ---------------------------------------------------------------------------

    def append(self, header: bytes, payload: bytes) -> None:
        """Add a record at the tail (visible to the reader at once; durable after `sync`)."""
        body, now = header + payload, self.clock()
        record = RECORD_HEADER.pack(MAGIC, len(header), len(payload), now, zlib.crc32(body)) + body
        with self.lock:
            if self.tail.size and self.tail.size + len(record) > self.segment_bytes:
                # Records of the full segment may already be acknowledged to the edge by the next sync,
                # which only fsyncs the new tail: make them durable before leaving them.
                self._writer.flush()
                os.fsync(self._writer.fileno())
                self._writer.close()
                self.tail = self._new_segment(self.tail.number + 1)
            self._writer.write(record)
            self._writer.flush()
            start = (self.tail.number, self.tail.size)
            self.tail.size += len(record)
            self.tail.records += 1
            self._remember(Entry(start, (self.tail.number, self.tail.size), header, payload, now))
            self._enforce_size()
            self.lock.notify_all()

    def _remember(self, entry: Entry) -> None:
        """Keep `entry` for the reader if it continues what is kept (or is where the reader stands) and fits."""
        follows = self.recent[-1].end == entry.start if self.recent else self.read_pos == entry.start
        if follows and self.recent_bytes + entry.size <= self.recent_limit:
            self.recent.append(entry)
            self.recent_bytes += entry.size

    def _forget_oldest_kept(self) -> Entry:
        entry = self.recent.popleft()
        self.recent_bytes -= entry.size
        return entry

    def _recall(self, position: Position) -> Entry | None:
        """The kept record starting at `position`, if there is one (older kept records are forgotten)."""
        while self.recent and self.recent[0].start <= position:
            entry = self._forget_oldest_kept()
            if entry.start == position:
                return entry
        return None

    def sync(self) -> None:
        """Make every record appended so far durable (fsync), without holding up `append` and `next` meanwhile.

        The duplicate descriptor keeps the segment open even if `append` rotates away from it; a rotated
        segment was fsync'd by `append` before it was closed."""
        with self.lock:
            fd = os.dup(self._writer.fileno())
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _enforce_size(self) -> None:
        """Drop whole oldest segments while the spool is over its byte limit (never the tail)."""
        while self.size_bytes() > self.max_bytes and len(self.segments) > 1:
            oldest = self.segments[min(self.segments)]
            unsent = oldest.records - self._records_before(oldest, self.committed)
            self._count_drop("full", unsent)
            self._remove_segment(oldest.number)

    def _records_before(self, segment: _Segment, position: Position) -> int:
        """How many records of `segment` lie before `position` (0 if it is in a later segment)."""
        if position[0] != segment.number:
            return segment.records if position[0] > segment.number else 0
        count = 0
        with open(segment.path, "rb") as handle:
            while handle.tell() < position[1]:
                raw = handle.read(RECORD_HEADER.size)
                _m, header_len, payload_len, _at, _crc = RECORD_HEADER.unpack(raw)
                handle.seek(header_len + payload_len, os.SEEK_CUR)
                count += 1
        return count

    def _remove_segment(self, number: int) -> None:
        segment = self.segments.pop(number)
        segment.path.unlink(missing_ok=True)
        if self._reader is not None and self._reader[0] == number:
            self._reader[1].close()
            self._reader = None
        following = (min(self.segments), 0) if self.segments else (number + 1, 0)
        if self.committed[0] <= number:
            self.committed = following
            self._save_cursor(force=True)
        if self.read_pos[0] <= number:
            self.read_pos = following
        self.inflight = deque(e for e in self.inflight if e.start[0] > number)
        while self.recent and self.recent[0].start[0] <= number:
            self._forget_oldest_kept()

    # --- reading ---------------------------------------------------------------------------

    def _read_at(self, position: Position) -> tuple[Entry | None, Position]:
        """The record at `position`, or None at the end of what is written; moves past finished segments."""
        segment_number, offset = position
        while True:
            segment = self.segments.get(segment_number)
            if segment is None:
                return None, position
            if offset >= segment.size:
                if segment is self.tail:
                    return None, (segment_number, offset)
                segment_number, offset = segment_number + 1, 0
                continue
            kept = self._recall((segment_number, offset))
            if kept is not None:
                return kept, kept.end
            if self._reader is None or self._reader[0] != segment_number:
                if self._reader is not None:
                    self._reader[1].close()
                self._reader = (segment_number, open(segment.path, "rb"))
            handle = self._reader[1]
            handle.seek(offset)
            magic, header_len, payload_len, at, crc = RECORD_HEADER.unpack(handle.read(RECORD_HEADER.size))
            body = handle.read(header_len + payload_len)
            end = (segment_number, offset + RECORD_HEADER.size + header_len + payload_len)
            if magic not in MAGICS or zlib.crc32(body) != crc:
                self._count_drop("corrupt", 1)
                segment.size = offset  # the rest of this segment cannot be trusted
                continue
            return Entry((segment_number, offset), end, body[:header_len], body[header_len:], at, magic), end

    def next(self, timeout: float = 0.0) -> Entry | None:
        """The next unsent record (waiting up to `timeout` for one); expired records are dropped."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                entry, position = self._read_at(self.read_pos)
                if entry is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.lock.wait(remaining):
                        return None
                    continue
                self.read_pos = position
                self.inflight.append(entry)
                if self.max_age and self.clock() - entry.spooled_at > self.max_age:
                    self._count_drop("age", 1)
                    self._ack_locked(entry)
                    continue
                return entry

    def ack(self, entry: Entry) -> None:
        """The cloud has this record: commit every acknowledged record up to the first pending one."""
        with self.lock:
            self._ack_locked(entry)

    def _ack_locked(self, entry: Entry) -> None:
        entry.done = True
        moved = False
        while self.inflight and self.inflight[0].done:
            self.committed = self.inflight.popleft().end
            moved = True
        if not moved:
            return
        segment = self.segments.get(self.committed[0])
        if segment is not None and segment is not self.tail and self.committed[1] >= segment.size:
            self.committed = (self.committed[0] + 1, 0)  # that segment is fully delivered
        for number in [n for n in self.segments if n < self.committed[0]]:
            self._remove_segment(number)
        self._save_cursor()

    # --- state -----------------------------------------------------------------------------

    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments.values()) - self.committed[1]

    def pending(self) -> int:
        """Records not yet acknowledged by the cloud (unsent + in flight)."""
        with self.lock:
            total = sum(s.records for s in self.segments.values())
            first = self.segments.get(self.committed[0])
            return total - (self._records_before(first, self.committed) if first else 0)

    def close(self) -> None:
        with self.lock:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            if self._reader is not None:
                self._reader[1].close()
            self._save_cursor(force=True)
