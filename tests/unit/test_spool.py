"""The forwarder's spool: order, restart, limits in bytes and age (counted), torn records."""

import json
import zlib
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facepipe.spool import MAGIC_JSON, RECORD_HEADER, Spool, decode_properties, encode_properties


def drain(spool: Spool, ack: bool = True) -> list[bytes]:
    out = []
    while (entry := spool.next()) is not None:
        out.append(entry.payload)
        if ack:
            spool.ack(entry)
    return out


def test_properties_survive_byte_for_byte() -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "image/png"
    props.UserProperty = [("schema", "facepipe/1"), ("seq", "7"), ("seq", "dup"), ("ünï", "cödé")]
    props.CorrelationData = b"\x00\xff"
    back = decode_properties(encode_properties(props))
    assert back.ContentType == "image/png"
    assert back.UserProperty == props.UserProperty
    assert back.CorrelationData == b"\x00\xff"
    assert back.pack() == props.pack()


def test_order_and_resume_after_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9, max_age=0, segment_bytes=300)
    for i in range(20):
        spool.append(b"{}", f"face-{i:02d}".encode() * 5)
    first = [spool.next() for _ in range(8)]
    for entry in first[:5]:
        assert entry is not None
        spool.ack(entry)
    spool.close()  # entries 5..7 were in flight, unacknowledged, when the process stopped
    again = Spool(tmp_path, max_bytes=10**9, max_age=0, segment_bytes=300)
    assert again.pending() == 15
    assert drain(again) == [f"face-{i:02d}".encode() * 5 for i in range(5, 20)]
    assert again.pending() == 0
    again.close()
    assert len(list(tmp_path.glob("seg-*.spool"))) == 1  # consumed segments are deleted


def test_out_of_order_acks_commit_only_the_contiguous_prefix(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9, max_age=0)
    for i in range(3):
        spool.append(b"{}", bytes([i]))
    a, b, c = spool.next(), spool.next(), spool.next()
    assert a and b and c
    spool.ack(c)
    spool.ack(a)
    assert spool.pending() == 2  # b is still outstanding, so c is not committed past it
    spool.ack(b)
    assert spool.pending() == 0


def test_byte_limit_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    spool = Spool(tmp_path, max_bytes=2000, max_age=0, segment_bytes=500, on_drop=lambda r, n: dropped.append((r, n)))
    for i in range(40):
        spool.append(b"{}", bytes([i]) * 100)
    assert spool.size_bytes() <= 2000
    remaining = drain(spool)
    lost = sum(n for reason, n in dropped if reason == "full")
    assert lost + len(remaining) == 40
    assert remaining == [bytes([i]) * 100 for i in range(40 - len(remaining), 40)]  # the newest survive, in order


def test_age_limit_drops_and_counts_expired_faces(tmp_path: Path) -> None:
    now = [1000.0]
    spool = Spool(tmp_path, max_bytes=10**9, max_age=60, clock=lambda: now[0])
    spool.append(b"{}", b"old")
    now[0] += 120
    spool.append(b"{}", b"new")
    assert drain(spool) == [b"new"]
    assert spool.counts.dropped["age"] == 1


def test_torn_tail_after_a_crash_is_counted_not_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**9, max_age=0)
    spool.append(b"{}", b"complete")
    spool.append(b"{}", b"torn-record")
    spool.sync()
    segment = next(tmp_path.glob("seg-*.spool"))
    segment.write_bytes(segment.read_bytes()[:-5])  # power cut mid-write
    recovered = Spool(tmp_path, max_bytes=10**9, max_age=0)
    assert drain(recovered) == [b"complete"]
    assert recovered.counts.dropped["corrupt"] == 1


def read_pattern(tmp_path: Path, recent_bytes: int) -> tuple[list[tuple[object, ...]], int]:
    """Appends and reads interleaved (a reader keeping up, then falling behind, across segments)."""
    spool = Spool(tmp_path / str(recent_bytes), max_bytes=10**9, max_age=0, segment_bytes=300, recent_bytes=recent_bytes)
    seen, kept = [], 0
    for step in range(60):
        spool.append(f'{{"n":{step}}}'.encode(), f"face-{step:02d}".encode() * (1 + step % 4))
        kept = max(kept, len(spool.recent))
        for _ in range(1 if step < 20 or step > 40 else 0):  # keeps up, stalls, catches up slowly
            if (entry := spool.next()) is not None:
                seen.append((entry.start, entry.end, entry.header, entry.payload, entry.spooled_at))
                spool.ack(entry)
    seen += [(e.start, e.end, e.header, e.payload, e.spooled_at) for e in iter(spool.next, None)]
    spool.close()
    return seen, kept


def test_records_read_from_memory_are_the_records_in_the_files(tmp_path: Path) -> None:
    from_files, kept_none = read_pattern(tmp_path, recent_bytes=0)
    from_memory, kept_some = read_pattern(tmp_path, recent_bytes=200)  # overflows while the reader stalls
    assert (kept_none, len(from_files)) == (0, 60)
    assert kept_some > 1
    assert [record[:4] for record in from_memory] == [record[:4] for record in from_files]
    assert [record[2] for record in from_memory] == [f'{{"n":{n}}}'.encode() for n in range(60)]


def test_per_connection_properties_are_not_relayed() -> None:
    received = Properties(PacketTypes.PUBLISH)
    received.ContentType = "image/png"
    received.UserProperty = [("schema", "facepipe/1")]
    received.SubscriptionIdentifier = 7
    received.TopicAlias = 3
    relayed = decode_properties(encode_properties(received))
    assert relayed.ContentType == "image/png" and relayed.UserProperty == [("schema", "facepipe/1")]
    assert not hasattr(relayed, "SubscriptionIdentifier") and not hasattr(relayed, "TopicAlias")


def test_records_of_a_0_1_spool_are_still_sent(tmp_path: Path) -> None:
    """facepipe 0.1 spooled the properties as JSON (record magic FP): an upgraded forwarder sends them."""
    header = json.dumps({"ContentType": "image/png", "UserProperty": [["schema", "facepipe/1"], ["seq", "4"]]}).encode()
    body = header + b"old face"
    (tmp_path / "seg-000000000000.spool").write_bytes(RECORD_HEADER.pack(MAGIC_JSON, len(header), 8, 1.0, zlib.crc32(body)) + body)
    spool = Spool(tmp_path, max_bytes=10**9, max_age=0)
    spool.append(encode_properties(None), b"new face")
    old, new = spool.next(), spool.next()
    assert old is not None and new is not None
    assert (old.payload, old.properties().UserProperty) == (b"old face", [("schema", "facepipe/1"), ("seq", "4")])
    assert (new.payload, new.properties().pack()) == (b"new face", b"\x00")
    spool.close()
