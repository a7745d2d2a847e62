"""A component's retained status on its broker (contract.Status): `online` on every connect and
every interval, `offline` on a clean stop, and `offline` as the MQTT last will the broker publishes
when the connection breaks (a crash, a power cut, a network gone)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from paho.mqtt.client import MQTTMessageInfo
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facepipe import contract
from facepipe.contract import Capture, Status
from facepipe.mqtt import AckTracker, BrokerLink

STATUS_QOS = 1
OFFLINE_ACK_SECONDS = 2.0


def status_properties(packet_type: int = PacketTypes.PUBLISH) -> Properties:
    props = Properties(packet_type)
    props.ContentType = contract.STATUS_CONTENT_TYPE
    return props


def publish_status(link: BrokerLink, topic: str, payload: bytes, acks: AckTracker | None) -> MQTTMessageInfo:
    """Publish a retained status; `acks`: the link's tracker, when its on_publish feeds one."""
    info = link.client.publish(topic, payload, qos=STATUS_QOS, retain=True, properties=status_properties())
    if acks is not None:
        acks.sent_untracked(info.mid)
    return info


class StatusAnnouncer:
    """Keeps one component's status topic up to date on one broker link (call before `link.start()`)."""

    def __init__(
        self,
        link: BrokerLink,
        topic: str,
        identity: tuple[str, str, str],
        interval: float,
        acks: AckTracker | None = None,
        capture: Callable[[], Capture] | None = None,
    ) -> None:
        self.link = link
        self.topic = topic
        self.device, self.component, self.boot = identity
        self.interval = interval
        self.acks = acks
        self.capture = capture
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        will = self.status("offline", with_capture=False).to_json()
        link.client.will_set(topic, will, qos=STATUS_QOS, retain=True, properties=status_properties(PacketTypes.WILLMESSAGE))
        link.on_connected.append(self.publish)

    def status(self, state: str, with_capture: bool = True) -> Status:
        capture = self.capture() if with_capture and self.capture is not None else None
        return Status(self.device, self.component, state, self.boot, datetime.now(UTC), self.interval, capture)

    def publish(self, state: str = "online") -> MQTTMessageInfo:
        return publish_status(self.link, self.topic, self.status(state).to_json(), self.acks)

    def changed(self) -> None:
        """Something the status carries changed (the camera's source): say so now, not at the next refresh."""
        if self.link.connected.is_set():
            self.publish()

    def start(self) -> StatusAnnouncer:
        if self.interval:
            self._thread = threading.Thread(target=self._refresh, name=f"status-{self.component}", daemon=True)
            self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            self.changed()

    def stop(self) -> None:
        """Say `offline` (with the final counters) and wait briefly for the broker to take it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.link.connected.is_set():
            self.publish("offline").wait_for_publish(OFFLINE_ACK_SECONDS)
