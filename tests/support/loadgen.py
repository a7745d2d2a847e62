"""A steady-rate face publisher (a stand-in for the camera) and exact accounting of stored objects.

`LoadGenerator` publishes valid synthetic faces with full `FaceMeta` properties to a broker at a
fixed rate, from a thread, with its own boot id and seq 0, 1, 2, ... At QoS 1 it waits for the
broker's PUBACK of each face before the next, so `sent` is exactly the set of seqs the broker
acknowledged (accepted responsibility for); a face that was not acknowledged in time is recorded
in `unacknowledged` and the generator goes on with the next seq, as a camera would.

`account()` compares what was sent with the objects in a store. Object keys derive from the
metadata (`.../<HHMMSS.mmm>_<camera>_<boot>_<seq>.png`), so a redelivered face overwrites its own
object: more than one object for one (device, camera, boot, seq) is a real duplicate.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from facepipe.contract import FaceMeta
from facepipe.probe import synthetic_face

StreamKey = tuple[str, str, str]  # (device, camera, boot)


class LoadGenerator:
    """Publish synthetic faces at `rate` per second to `topic` until stopped (or `count` are done)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        topic: str = "cam_bin",
        device: str = "edge-1",
        camera: str = "load0",
        rate: float = 20.0,
        count: int | None = None,
        qos: int = 1,
        ack_timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.device, self.camera = device, camera
        self.boot = secrets.token_hex(4)  # hex: no '_' in the object key's name part
        self.rate, self.count, self.qos, self.ack_timeout = rate, count, qos, ack_timeout
        self.payload = synthetic_face()
        self.sent: list[int] = []  # seqs the broker acknowledged (QoS 1) or took (QoS 0), in order
        self.unacknowledged: list[int] = []  # seqs published without an acknowledgement in time
        self.sent_at: dict[int, float] = {}  # seq -> time.time() of its acknowledgement
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"loadgen-{self.camera}", daemon=True)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"loadgen-{self.device}-{self.camera}-{self.boot}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(1)
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_disconnect = lambda *_a: self._connected.clear()

    @property
    def stream(self) -> StreamKey:
        return (self.device, self.camera, self.boot)

    def meta(self, seq: int) -> FaceMeta:
        return FaceMeta(
            device=self.device, camera=self.camera, boot=self.boot, seq=seq, captured_at=datetime.now(UTC),
            frame=seq, face=0, bbox=(0, 0, 96, 96), score=0.99, detector="loadgen/synthetic",
        )  # fmt: skip

    def start(self, timeout: float = 10.0) -> LoadGenerator:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.client.loop_stop()
            raise TimeoutError(f"load generator could not connect to {self.host}:{self.port}")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            started = time.monotonic()
            seq = 0
            while not self._stop.is_set() and (self.count is None or seq < self.count):
                delay = started + seq / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                info = self.client.publish(self.topic, self.payload, qos=self.qos, properties=self.meta(seq).to_properties())
                if self.qos:
                    info.wait_for_publish(self.ack_timeout)
                    ok = info.is_published()
                else:
                    ok = info.rc == mqtt.MQTT_ERR_SUCCESS
                with self._lock:
                    if ok:
                        self.sent.append(seq)
                        self.sent_at[seq] = time.time()
                    else:
                        self.unacknowledged.append(seq)
                seq += 1
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def sent_count(self) -> int:
        with self._lock:
            return len(self.sent)

    def wait_sent(self, count: int, timeout: float = 30.0) -> None:
        """Block until `count` faces have been acknowledged."""
        deadline = time.monotonic() + timeout
        while self.sent_count() < count:
            if time.monotonic() > deadline or self.error is not None or not self._thread.is_alive():
                raise AssertionError(f"load generator: {self.sent_count()}/{count} faces acknowledged (error: {self.error!r})")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop publishing (the face being published is finished first) and disconnect; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.ack_timeout + 5)
        self.client.disconnect()
        self.client.loop_stop()

    def stop(self) -> LoadGenerator:
        """close(), then fail if the publishing thread raised."""
        self.close()
        if self.error is not None:
            raise AssertionError(f"load generator failed: {self.error!r}") from self.error
        return self

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    from facepipe.storage.s3 import is_check_key

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
