"""processor: validate each face from the cloud broker, store it as PNG, acknowledge only after it is stored.

Messages arrive on paho's network thread and go to a bounded queue; worker threads take them in
batches (what is queued, up to the store's batch size), validate and store them, make the batch
durable with one `sync()`, retrying with backoff for as long as that fails. Memory is bounded by
two byte budgets: the payloads held (queued until acknowledged: paho's thread, and so the broker,
waits at the limit) and the working memory of the checks running at once. A QoS 1 message is
acknowledged only once its object is durable, so a crash or restart makes the broker redeliver
it, and because keys derive from the metadata the redelivery overwrites the same object.

Status messages of the edge components (`<base>/<device>/status/<component>`) are not faces: they
update the fleet's metrics (facepipe.fleet) on paho's thread and are acknowledged at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import Counter, Gauge, Histogram

from facepipe import contract, imaging
from facepipe.budget import ByteBudget
from facepipe.config import ProcessorSettings
from facepipe.contract import ContractError, FaceMeta
from facepipe.fleet import Fleet
from facepipe.metric_names import PROCESSOR_RECEIVED, PROCESSOR_REJECTED, PROCESSOR_STORE_ERRORS, PROCESSOR_STORE_REFUSED, PROCESSOR_STORED
from facepipe.mqtt import BrokerLink, client_id
from facepipe.observe import counted
from facepipe.service import Component
from facepipe.storage import Store, StoreRefused, StoreUnavailable, open_store

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class StoredFace:
    key: str
    png: bytes
    metadata: dict[str, str]
    meta: FaceMeta | None


def prepare(msg_topic: str, payload: bytes, props: Any, settings: ProcessorSettings, prefix: str) -> StoredFace:
    """Turn one message into the object to store, or raise ContractError saying why it is rejected."""
    base = settings.broker.topic
    device = contract.device_from_topic(base, msg_topic)
    if msg_topic != base and (device in contract.RESERVED_DEVICE_IDS or device == settings.broker.username):
        raise ContractError("reserved_device", f"{device!r} is reserved, not a device id (topic {msg_topic!r})")
    declared = getattr(props, "ContentType", None) if props is not None else None
    pairs = list(getattr(props, "UserProperty", [])) if props is not None else []
    meta = FaceMeta.from_user_properties(pairs, declared) if any(n == "schema" for n, _ in pairs) else None
    if meta is not None and (msg_topic == base or meta.device != device):
        # On the base topic itself no topic proves a device: only bare faces (MQTT 3.1.1 clients) go there.
        raise ContractError("device_mismatch", f"device {meta.device!r} published under {msg_topic!r}")
    largest = None if meta is None else contract.max_crop_size(meta.bbox)
    png = imaging.check_face(payload, declared, settings.max_bytes, settings.max_pixels, largest)
    if meta is None:
        key = contract.anonymous_key(prefix, device, datetime.now(UTC), payload)
        return StoredFace(key, png, {"device": device, "schema": "none"}, None)
    return StoredFace(contract.object_key(prefix, meta), png, meta.storage_metadata(), meta)


class Processor(Component):
    name = "processor"

    def __init__(self, settings: ProcessorSettings, log: logging.Logger, store: Store | None = None) -> None:
        super().__init__(settings.common, log)
        self.settings = settings
        self.store = store or open_store(settings.storage)
        self.queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue(maxsize=settings.workers * 64)
        self.store_ok = threading.Event()
        self.stopping = threading.Event()
        reg = self.registry
        self.received = Counter(PROCESSOR_RECEIVED, "messages received", registry=reg)
        self.stored = Counter(PROCESSOR_STORED, "faces stored", registry=reg)
        self.rejected = Counter(PROCESSOR_REJECTED, "messages rejected, by reason", ["reason"], registry=reg)
        for reason in contract.REJECTION_REASONS:  # at 0 from the start, so the first burst shows in rate()
            self.rejected.labels(reason)
        self.store_errors = Counter(PROCESSOR_STORE_ERRORS, "failed store attempts (retried)", registry=reg)
        self.store_refused = Counter(
            PROCESSOR_STORE_REFUSED,
            "store calls refused as configured (encryption, access, bucket), by reason: fix the configuration",
            ["reason"],
            registry=reg,
        )
        self.held = ByteBudget(settings.max_queued_bytes)
        self.checking = ByteBudget(settings.max_check_bytes)
        held_bytes = Gauge("facepipe_processor_queued_bytes", "payload bytes received and not yet acknowledged", registry=reg)
        held_bytes.set_function(lambda: self.held.used)
        check_bytes = Gauge("facepipe_processor_check_bytes", "working memory reserved by the checks running now", registry=reg)
        check_bytes.set_function(lambda: self.checking.used)
        self.store_seconds = Histogram(
            "facepipe_processor_store_seconds",
            "time to store one face (a batch's put and sync time, divided by its faces)",
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.latency = Histogram(
            "facepipe_processor_capture_to_stored_seconds", "capture to stored, from captured_at", registry=reg, buckets=LATENCY_BUCKETS
        )
        self.fleet = Fleet(reg)
        broker = settings.broker
        subscriptions = [contract.remote_subscription(broker.topic, settings.share_group)]
        if settings.share_group:  # a shared subscription gets no retained messages: every replica reads the status itself
            subscriptions.append(contract.remote_status_subscription(broker.topic))
        self.link = BrokerLink(
            "cloud", broker, client_id(broker, "processor", settings.common.device_id), self.link_metrics, log,
            subscriptions=tuple(subscriptions), on_message=self._on_message, manual_ack=True, session_expiry=settings.session_expiry,
            max_inflight=settings.workers * 64,
        )  # fmt: skip

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        status_of = contract.status_from_topic(self.settings.broker.topic, msg.topic)
        if status_of is None:
            self._enqueue(msg)
            return
        try:
            status, changed = self.fleet.observe(*status_of, msg.payload)
            if changed:
                self.log.info("device.status", extra={"device": status.device, "component": status.component, "state": status.state})
        except ContractError as exc:
            self.log.warning("status.rejected", extra={"topic": msg.topic, "reason": exc.reason, "detail": exc.detail[:300]})
        self.link.client.ack(msg.mid, msg.qos)

    def _enqueue(self, msg: mqtt.MQTTMessage) -> None:
        """Hand a message to the workers; block paho's thread while they are busy or hold too many bytes (backpressure)."""
        if not self.held.acquire(len(msg.payload), self.stopping):
            return
        while not self.stopping.is_set():
            try:
                self.queue.put(msg, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(self, stop: threading.Event) -> None:
        self.stopping = stop
        self._prepare_store(stop)
        self.link.start()
        workers = [threading.Thread(target=self._work, args=(stop,), name=f"worker-{i}") for i in range(self.settings.workers)]
        for worker in workers:
            worker.start()
        retention_due = time.monotonic()
        if self.settings.storage.retention_days and not self.store.prunes_itself:
            self.log.info(
                "retention.external",
                extra={"days": self.settings.storage.retention_days, "how": "a lifecycle rule set by `facepipe retention`"},
            )
        while not stop.wait(1.0):
            if self.settings.storage.retention_days and self.store.prunes_itself and time.monotonic() >= retention_due:
                self._apply_retention()
                retention_due = time.monotonic() + 3600
        for worker in workers:
            worker.join()
        self.link.stop()

    def _prepare_store(self, stop: threading.Event) -> None:
        """Wait until the store answers; the processor is not ready meanwhile."""
        delay = 1.0
        while not stop.is_set():
            try:
                self.store.check()
                self.store_ok.set()
                return
            except StoreUnavailable as exc:
                delay = self._store_failed("store.unavailable", exc, delay, stop, store=self.store.url)

    def _apply_retention(self) -> None:
        try:
            self.store.apply_retention(self.settings.storage.retention_days)
            self.log.info("retention.applied", extra={"days": self.settings.storage.retention_days})
        except StoreUnavailable as exc:
            self.log.error("retention.failed", extra={"error": str(exc)})

    def _take(self) -> list[mqtt.MQTTMessage]:
        """The next message (waiting briefly) and whatever else is queued, up to the store's batch size."""
        try:
            batch = [self.queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < self.store.max_batch:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for msg in self._handle(self._take(), stop):
                self.link.client.ack(msg.mid, msg.qos)
                self.held.release(len(msg.payload))

    def _handle(self, batch: list[mqtt.MQTTMessage], stop: threading.Event) -> list[mqtt.MQTTMessage]:
        """Validate and store a batch; return the messages that may be acknowledged (stored or rejected)."""
        done: list[mqtt.MQTTMessage] = []
        accepted: list[tuple[mqtt.MQTTMessage, StoredFace]] = []
        self.received.inc(len(batch))
        for msg in batch:
            cost = imaging.check_cost(msg.payload, self.settings.max_pixels)
            if not self.checking.acquire(cost, stop):
                return done
            try:
                accepted.append((msg, prepare(msg.topic, msg.payload, getattr(msg, "properties", None), self.settings, self.store.prefix)))
            except ContractError as exc:
                self.rejected.labels(exc.reason).inc()
                self.log.warning(
                    "face.rejected",
                    extra={"topic": msg.topic, "bytes": len(msg.payload), "reason": exc.reason, "detail": exc.detail[:300]},
                )
                done.append(msg)
            finally:
                self.checking.release(cost)
        if not accepted or not self._store_with_retry([face for _msg, face in accepted], stop):
            return done
        now = datetime.now(UTC)
        self.stored.inc(len(accepted))
        for msg, face in accepted:
            if face.meta is not None:
                self.latency.observe(max(0.0, (now - face.meta.captured_at).total_seconds()))
            self.log.info("face.stored", extra={"key": face.key, "bytes": len(face.png)})
            done.append(msg)
        return done

    def _store_with_retry(self, faces: list[StoredFace], stop: threading.Event) -> bool:
        """Store a batch and make it durable, retrying with backoff until it works; False only when stopping first
        (no ack then). A failed batch is written again whole: puts are idempotent (keys derive from the metadata)."""
        delay = 0.5
        while not stop.is_set():
            started = time.perf_counter()
            try:
                for face in faces:
                    self.store.put(face.key, face.png, face.metadata)
                self.store.sync()
                self.store_seconds.observe((time.perf_counter() - started) / len(faces))
                self.store_ok.set()
                return True
            except StoreUnavailable as exc:
                self.store_errors.inc()
                delay = self._store_failed("store.failed", exc, delay, stop, faces=len(faces))
        return False

    def _store_failed(self, event: str, exc: StoreUnavailable, delay: float, stop: threading.Event, **context: Any) -> float:
        """Log a failed store call, wait and return the next delay; not ready meanwhile. A refusal (the store will
        not take this configuration) is logged as `store.refused` with what to change, counted by reason, and
        retried only at the longest delay: nothing is acknowledged, so nothing is lost once it is fixed."""
        self.store_ok.clear()
        if isinstance(exc, StoreRefused):
            delay = self.settings.store_retry_max_seconds
            self.store_refused.labels(exc.reason).inc()
            self.log.error("store.refused", extra={"reason": exc.reason, "error": str(exc)[:1000], "retry_in": delay, **context})
        else:
            self.log.error(event, extra={"error": str(exc)[:500], "retry_in": delay, **context})
        stop.wait(delay)
        return min(delay * 2, self.settings.store_retry_max_seconds)

    def ready(self) -> bool:
        return self.link.connected.is_set() and self.store_ok.is_set()

    def summary(self) -> dict[str, Any]:
        return {
            "received": counted(self.received), "stored": counted(self.stored), "rejected": counted(self.rejected),
            "store_errors": counted(self.store_errors),
        }  # fmt: skip
