"""forwarder: republish every face from the edge broker to `<remote topic>/<device>` on the cloud broker.

Payload and MQTT 5 properties are kept byte for byte. At QoS 1 an edge message is
acknowledged only once the cloud broker has acknowledged its copy, so faces stay queued on
the edge broker (persistent session) while the cloud is unreachable, and nothing accepted is lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter, Gauge

from facepipe import contract
from facepipe.config import ForwarderSettings
from facepipe.mqtt import AckTracker, BrokerLink, client_id
from facepipe.service import Component

# Properties a publisher sets that travel with the message (not per-hop ones like topic aliases).
FORWARDED_PROPERTIES = (
    "PayloadFormatIndicator",
    "MessageExpiryInterval",
    "ContentType",
    "ResponseTopic",
    "CorrelationData",
    "UserProperty",
)

LOCAL_SESSION_EXPIRY = 7 * 86400


def forwarded_properties(received: Properties | None) -> Properties:
    """A PUBLISH property set carrying over everything the publisher set, in the same order."""
    props = Properties(PacketTypes.PUBLISH)
    if received is not None:
        for name in FORWARDED_PROPERTIES:
            if hasattr(received, name):
                setattr(props, name, getattr(received, name))
    return props


class Forwarder(Component):
    name = "forwarder"

    def __init__(self, settings: ForwarderSettings, log: logging.Logger) -> None:
        super().__init__(settings.common, log)
        self.settings = settings
        self.topic = contract.remote_topic(settings.remote.topic, settings.common.device_id)
        self.lock = threading.Lock()
        self.acks: AckTracker[mqtt.MQTTMessage] = AckTracker()  # cloud mid -> edge message awaiting the cloud's ack
        self.totals = {"received": 0, "forwarded": 0}
        reg = self.registry
        self.received = Counter("facepipe_forwarder_received_total", "faces read from the edge broker", registry=reg)
        self.forwarded = Counter("facepipe_forwarder_forwarded_total", "faces acknowledged by the cloud broker", registry=reg)
        self.refused = Counter("facepipe_forwarder_refused_total", "faces the cloud broker refused (ACL)", registry=reg)
        self.inflight = Gauge("facepipe_forwarder_inflight", "faces sent to the cloud and not yet acknowledged", registry=reg)
        device = settings.common.device_id
        self.remote = BrokerLink(
            "cloud", settings.remote, client_id(settings.remote, "forwarder", device), self.link_metrics, log,
            max_inflight=settings.max_inflight,
        )  # fmt: skip
        self.remote.client.on_publish = self._on_remote_ack
        # The edge session persists so faces published while the forwarder restarts wait for it.
        self.local = BrokerLink(
            "edge", settings.local, client_id(settings.local, "forwarder", device), self.link_metrics, log,
            subscriptions=(settings.local.topic,), on_message=self._on_local_message, manual_ack=True,
            session_expiry=LOCAL_SESSION_EXPIRY if settings.local.qos else 0, max_inflight=settings.max_inflight,
        )  # fmt: skip

    def _on_local_message(self, msg: mqtt.MQTTMessage) -> None:
        self.received.inc()
        with self.lock:
            self.totals["received"] += 1
        info = self.remote.client.publish(
            self.topic, msg.payload, qos=self.settings.remote.qos, properties=forwarded_properties(getattr(msg, "properties", None))
        )
        if not self.settings.remote.qos:
            self._done(msg)
            return
        self._finish(self.acks.sent(info.mid, msg))
        self.inflight.set(len(self.acks))

    def _on_remote_ack(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _props: Any) -> None:
        if self.settings.remote.qos:
            self._finish(self.acks.acked(mid, reason))
            self.inflight.set(len(self.acks))

    def _finish(self, done: tuple[mqtt.MQTTMessage, ReasonCode | None] | None) -> None:
        if done is None:
            return
        msg, reason = done
        if reason is not None and reason.is_failure:
            # The cloud broker refused it (for instance its ACL): retrying cannot help; say so loudly.
            self.refused.inc()
            self.log.error("face.refused", extra={"topic": self.topic, "reason": str(reason), "bytes": len(msg.payload)})
            self.local.client.ack(msg.mid, msg.qos)
            return
        self._done(msg)

    def _done(self, msg: mqtt.MQTTMessage) -> None:
        """The cloud has the face (or QoS 0 sent it): release it on the edge broker."""
        self.local.client.ack(msg.mid, msg.qos)
        self.forwarded.inc()
        with self.lock:
            self.totals["forwarded"] += 1

    def run(self, stop: threading.Event) -> None:
        self.remote.start()
        self.local.start()
        stop.wait()
        self.local.stop()
        self.remote.stop()

    def ready(self) -> bool:
        return self.local.connected.is_set() and self.remote.connected.is_set()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.totals, inflight=len(self.acks))
