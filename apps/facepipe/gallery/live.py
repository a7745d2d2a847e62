"""Live updates: faces announced on the cloud broker, pushed to open pages once they are in the store,
and the edge components' retained status (`<topic>/<device>/status/<component>`): which devices are alive.

The gallery subscribes to `<cloud topic>/#` with a plain (not shared) subscription, so every
gallery replica sees every face, at QoS 0 with a clean session: a gallery that is away misses
announcements, never faces (the pages read the store). A face is pushed only after a HEAD of its
key (derived from the metadata, as the processor derives it) finds it stored, so a page never
shows a face the processor rejected or has not stored yet. Faces without metadata are not
announced (their key depends on the processor's arrival time); they appear on the next load.

The same subscription brings every device's retained status (its forwarder's, camera's and
logger's: online with a heartbeat interval, offline on a clean stop or as the MQTT last will), kept
in a `facepipe.fleet.Fleet` and pushed to the pages as it changes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

from facepipe import contract
from facepipe.config import BrokerSettings
from facepipe.contract import ContractError, FaceMeta
from facepipe.fleet import Fleet
from facepipe.mqtt import BrokerLink, LinkMetrics
from facepipe.storage import ObjectNotFound, Store, StoreUnavailable

# Waits between HEADs of an announced face that is not stored yet (about 6 s in all).
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
PENDING_LIMIT = 2000
CLIENT_QUEUE = 200
# A status older than this many of its intervals (plus a margin) no longer counts as online: the
# broker publishes the last will only once it notices the broken connection (1.5 keepalives).
STALE_INTERVALS = 2.0
STALE_MARGIN_SECONDS = 30.0


def device_status(fleet: Fleet, now: float) -> dict[str, dict[str, Any]]:
    """Per device: each component's state and last seen, the cameras' capture, and `online` (its forwarder
    says online, and recently enough): what the devices page shows."""
    with fleet.lock:
        components = list(fleet.components.items())
        cameras = list(fleet.cameras.items())
    devices: dict[str, dict[str, Any]] = {}
    for (device, component), seen in components:
        status = seen.status
        fresh = status.interval <= 0 or now - seen.last_seen <= STALE_INTERVALS * status.interval + STALE_MARGIN_SECONDS
        entry = devices.setdefault(device, {"online": False, "components": {}, "cameras": {}})
        entry["components"][component] = {
            "state": status.state if fresh or status.state == "offline" else "stale",
            "last_seen": contract.format_timestamp(datetime.fromtimestamp(seen.last_seen, UTC)),
            "interval": status.interval,
        }
    for (device, camera), capture in cameras:
        if device in devices:
            devices[device]["cameras"][camera] = {"source": capture.source, "fps": capture.fps, "faces": capture.faces}
    for entry in devices.values():
        entry["online"] = entry["components"].get("forwarder", {}).get("state") == "online"
    return devices


class Hub:
    """The open event streams; each gets its own bounded queue (a slow page misses events, nobody waits)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._clients: set[queue.Queue[dict[str, Any]]] = set()
        self._lock = threading.Lock()
        self.clients = Gauge("facepipe_gallery_live_clients", "open live event streams", registry=registry)
        self.missed = Counter("facepipe_gallery_live_missed_total", "events not delivered to a slow page", registry=registry)

    def subscribe(self) -> queue.Queue[dict[str, Any]]:
        stream: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=CLIENT_QUEUE)
        with self._lock:
            self._clients.add(stream)
            self.clients.set(len(self._clients))
        return stream

    def unsubscribe(self, stream: queue.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._clients.discard(stream)
            self.clients.set(len(self._clients))

    def count(self) -> int:
        with self._lock:
            return len(self._clients)

    def listening(self) -> bool:
        return self.count() > 0

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            clients = list(self._clients)
        for stream in clients:
            try:
                stream.put_nowait(event)
            except queue.Full:
                self.missed.inc()


class LiveFeed:
    """Subscribes to the cloud topic and calls `on_stored(key)` for each announced face found in the store."""

    def __init__(
        self,
        broker: BrokerSettings,
        client_id: str,
        store: Store,
        hub: Hub,
        on_stored: Callable[[str], None],
        link_metrics: LinkMetrics,
        registry: CollectorRegistry,
        log: logging.Logger,
    ) -> None:
        self.store = store
        self.hub = hub
        self.on_stored = on_stored
        self.log = log
        self.topic = broker.topic
        self.fleet = Fleet(CollectorRegistry())  # the processors export facepipe_fleet_*; the gallery only shows it
        self.link = BrokerLink(
            "cloud", replace(broker, qos=0), client_id, link_metrics, log,
            subscriptions=(contract.remote_subscription(broker.topic),), on_message=self._announced,
        )  # fmt: skip
        self.events = Counter(
            "facepipe_gallery_live_events_total",
            "announced faces and statuses, by outcome (pushed, not_stored, status, ignored: nobody watching or not valid, "
            "dropped: too many waiting)",
            ["outcome"],
            registry=registry,
        )
        self._due: list[tuple[float, int, str, int]] = []  # (when, order, key, attempt)
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._check, name="live", daemon=True)

    def start(self) -> LiveFeed:
        self.link.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._thread.join(5)
        self.link.stop()

    def _announced(self, msg: mqtt.MQTTMessage) -> None:
        """On paho's thread: keep a status; work out a face's key, leaving the HEADs to the checker thread."""
        status_of = contract.status_from_topic(self.topic, msg.topic)
        if status_of is not None:
            self._status(*status_of, msg.payload)
            return
        if not self.hub.listening():
            self.events.labels("ignored").inc()
            return
        try:
            device = contract.device_from_topic(self.topic, msg.topic)
            meta = FaceMeta.from_properties(getattr(msg, "properties", None))
            if meta.device != device:
                raise ContractError("device_mismatch", msg.topic)
        except ContractError:
            self.events.labels("ignored").inc()
            return
        self._schedule(contract.object_key(self.store.prefix, meta), 0)

    def _status(self, device: str, component: str, payload: bytes) -> None:
        try:
            self.fleet.observe(device, component, payload)
        except ContractError:
            self.events.labels("ignored").inc()
            return
        self.events.labels("status").inc()
        status = device_status(self.fleet, time.time()).get(device)
        if status is not None:
            self.hub.publish({"event": "status", "device": device, "status": status})

    def _schedule(self, key: str, attempt: int) -> None:
        with self._wake:
            if len(self._due) >= PENDING_LIMIT:
                self.events.labels("dropped").inc()
                return
            heapq.heappush(self._due, (time.monotonic() + RETRY_DELAYS[attempt], next(self._order), key, attempt))
            self._wake.notify()

    def _check(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                while not self._stop.is_set() and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else 1.0)
                if self._stop.is_set():
                    return
                _when, _order, key, attempt = heapq.heappop(self._due)
            try:
                self.store.head(key)
            except (ObjectNotFound, StoreUnavailable):
                if attempt + 1 < len(RETRY_DELAYS):
                    self._schedule(key, attempt + 1)
                else:
                    self.events.labels("not_stored").inc()
                continue
            self.events.labels("pushed").inc()
            self.on_stored(key)
