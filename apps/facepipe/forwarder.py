"""forwarder: republish every face from the edge broker to `<remote topic>/<device>` on the cloud broker.

Payload and MQTT 5 properties are kept byte for byte. Each edge message is first written to the
on-disk spool (fsync'd) and only then acknowledged to the edge broker; a sender thread drains the
spool in order to the cloud at QoS 1, committing each record when the cloud acknowledges it.
While the cloud is unreachable faces accumulate in the bounded spool, which survives restarts.

The edge components' retained status (`<local topic>/status/<component>`) is relayed to
`<remote topic>/<device>/status/<component>`, the newest of each again after every reconnect, and
the forwarder keeps its own status there, with the cloud broker holding its last will.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter, Gauge

from facepipe import contract
from facepipe.config import ForwarderSettings
from facepipe.metric_names import FORWARDER_FORWARDED, FORWARDER_RECEIVED, FORWARDER_REFUSED
from facepipe.mqtt import AckTracker, BrokerLink, client_id
from facepipe.observe import counted
from facepipe.service import Component
from facepipe.spool import DROP_REASONS, Entry, Spool, encode_properties
from facepipe.status import StatusAnnouncer, publish_status

LOCAL_SESSION_EXPIRY = 7 * 86400
# Edge acknowledgements wait for the spool's fsync; group them so one fsync covers many faces.
SYNC_INTERVAL_SECONDS = 0.005


class Forwarder(Component):
    name = "forwarder"

    def __init__(self, settings: ForwarderSettings, log: logging.Logger) -> None:
        super().__init__(settings.common, log)
        self.settings = settings
        self.topic = contract.remote_topic(settings.remote.topic, settings.common.device_id)
        self.lock = threading.Lock()
        reg = self.registry
        self.received = Counter(FORWARDER_RECEIVED, "faces read from the edge broker", registry=reg)
        self.forwarded = Counter(FORWARDER_FORWARDED, "faces acknowledged by the cloud broker", registry=reg)
        self.refused = Counter(FORWARDER_REFUSED, "faces the cloud broker refused (ACL)", registry=reg)
        self.inflight = Gauge("facepipe_forwarder_inflight", "faces sent to the cloud and not yet acknowledged", registry=reg)
        self.spool_dropped = Counter(
            "facepipe_forwarder_spool_dropped_total", "faces dropped from the spool, by reason", ["reason"], registry=reg
        )
        for reason in DROP_REASONS:  # at 0 from the start, so the first drops show in increase()
            self.spool_dropped.labels(reason)
        self.spool_bytes = Gauge("facepipe_forwarder_spool_bytes", "bytes waiting in the spool", registry=reg)
        Gauge("facepipe_forwarder_spool_limit_bytes", "the spool's size limit (FACEPIPE_SPOOL_MAX_BYTES)", registry=reg).set(
            settings.spool_max_bytes
        )
        self.relayed = Counter(
            "facepipe_forwarder_status_relayed_total", "edge components' status messages relayed to the cloud", ["component"], registry=reg
        )
        self.latest_status: dict[str, bytes] = {}  # cloud status topic -> the newest status relayed there
        self.spool = Spool(Path(settings.spool_dir), settings.spool_max_bytes, settings.spool_max_age_seconds, on_drop=self._on_spool_drop)
        self.acks: AckTracker[Entry] = AckTracker(self._done, self._refused)  # cloud mid -> spool record awaiting the cloud's ack
        self.unsynced: list[mqtt.MQTTMessage] = []  # edge messages spooled, awaiting fsync before their ack
        device = settings.common.device_id
        self.remote = BrokerLink(
            "cloud", settings.remote, client_id(settings.remote, "forwarder", device), self.link_metrics, log,
            max_inflight=settings.max_inflight,
        )  # fmt: skip
        self.remote.client.on_publish = self._on_remote_ack
        self.remote_acks = self.acks if settings.remote.qos else None  # where the cloud's acks of status publishes go
        self.status = StatusAnnouncer(
            self.remote, contract.remote_status_topic(settings.remote.topic, device, self.name), self.identity(),
            settings.status.status_interval, acks=self.remote_acks,
        )  # fmt: skip
        self.remote.on_connected.append(self._relay_latest)
        # The edge session persists so faces published while the forwarder restarts wait for it.
        self.status_prefix = contract.status_topic(settings.local.topic, "")
        self.local = BrokerLink(
            "edge", settings.local, client_id(settings.local, "forwarder", device), self.link_metrics, log,
            subscriptions=(settings.local.topic, contract.status_topic(settings.local.topic, "+")),
            on_message=self._on_local_message, manual_ack=True,
            session_expiry=LOCAL_SESSION_EXPIRY if settings.local.qos else 0, max_inflight=settings.max_inflight,
        )  # fmt: skip

    def _on_spool_drop(self, reason: str, count: int) -> None:
        self.spool_dropped.labels(reason).inc(count)
        self.log.error("spool.dropped", extra={"reason": reason, "count": count, "spool": self.settings.spool_dir})

    # --- edge -> spool ---------------------------------------------------------------------

    def _on_local_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(self.status_prefix):
            self._relay_status(msg)
            return
        self.spool.append(encode_properties(getattr(msg, "properties", None)), msg.payload)
        self.received.inc()
        with self.lock:
            self.unsynced.append(msg)

    def _sync_loop(self, stop: threading.Event) -> None:
        """fsync the spool, then acknowledge the edge messages it now holds durably."""
        while not stop.wait(SYNC_INTERVAL_SECONDS):
            self._sync()
        self._sync()

    def _sync(self) -> None:
        with self.lock:
            batch, self.unsynced = self.unsynced, []
        if not batch:
            return
        self.spool.sync()
        for msg in batch:
            self.local.client.ack(msg.mid, msg.qos)
        self.spool_bytes.set(self.spool.size_bytes())

    # --- status -> cloud -------------------------------------------------------------------

    def _relay_status(self, msg: mqtt.MQTTMessage) -> None:
        """Relay an edge component's status (newest wins: it is retained on both brokers, never spooled)."""
        component = msg.topic[len(self.status_prefix) :]
        if component in contract.STATUS_COMPONENTS and component != self.name:
            topic = contract.remote_status_topic(self.settings.remote.topic, self.settings.common.device_id, component)
            with self.lock:
                self.latest_status[topic] = msg.payload
            if self.remote.connected.is_set():
                publish_status(self.remote, topic, msg.payload, self.remote_acks)
            self.relayed.labels(component).inc()
        else:
            self.log.warning("status.ignored", extra={"topic": msg.topic, "bytes": len(msg.payload)})
        self.local.client.ack(msg.mid, msg.qos)

    def _relay_latest(self) -> None:
        """After a (re)connect to the cloud: the newest status of each edge component again."""
        with self.lock:
            latest = list(self.latest_status.items())
        for topic, payload in latest:
            publish_status(self.remote, topic, payload, self.remote_acks)

    # --- spool -> cloud --------------------------------------------------------------------

    def _send_loop(self, stop: threading.Event) -> None:
        """Send spooled faces in order while the cloud is connected and the window has room."""
        while not stop.is_set():
            if not self.remote.connected.is_set() or len(self.acks) >= self.settings.max_inflight:
                time.sleep(0.005)
                continue
            entry = self.spool.next(timeout=0.2)
            if entry is None:
                continue
            info = self.remote.client.publish(self.topic, entry.payload, qos=self.settings.remote.qos, properties=entry.properties())
            if self.settings.remote.qos:
                self.acks.sent(info.mid, entry)
            else:
                self._done(entry)
            self.inflight.set(len(self.acks))

    def _on_remote_ack(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _props: Any) -> None:
        if self.settings.remote.qos:
            self.acks.acked(mid, reason)

    def _refused(self, entry: Entry, reason: ReasonCode) -> None:
        """The cloud broker refused a face (for instance its ACL): retrying cannot help; say so loudly."""
        self.refused.inc()
        self.log.error("face.refused", extra={"topic": self.topic, "reason": str(reason), "bytes": len(entry.payload)})
        self.spool.ack(entry)

    def _done(self, entry: Entry) -> None:
        self.spool.ack(entry)
        self.forwarded.inc()

    # --- life cycle ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.remote.start()
        self.local.start()
        self.status.start()
        workers = [
            threading.Thread(target=self._sync_loop, args=(stop,), name="spool-sync"),
            threading.Thread(target=self._send_loop, args=(stop,), name="sender"),
        ]
        for worker in workers:
            worker.start()
        while not stop.wait(1.0):
            self.spool_bytes.set(self.spool.size_bytes())
        for worker in workers:
            worker.join()
        self.local.stop()
        self.status.stop()
        self.remote.stop()
        self.spool.close()

    def ready(self) -> bool:
        return self.local.connected.is_set() and self.remote.connected.is_set()

    def summary(self) -> dict[str, Any]:
        return {
            "received": counted(self.received), "forwarded": counted(self.forwarded), "refused": counted(self.refused),
            "spool_dropped": counted(self.spool_dropped), "inflight": len(self.acks), "spooled": self.spool.pending(),
        }  # fmt: skip
