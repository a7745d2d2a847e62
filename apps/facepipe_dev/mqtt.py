"""Test-side MQTT clients: a publisher that waits for acknowledgements and a collecting subscriber."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class TestClient:
    """A connected MQTT 5 client for tests (paho's network thread running)."""

    __test__ = False  # not a pytest class

    def __init__(self, host: str, port: int, client_id: str = "", session_expiry: int = 0, **auth: Any) -> None:
        """`session_expiry` > 0: a persistent session (clean start off) the broker keeps that long after a disconnect."""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if auth.get("username"):
            self.client.username_pw_set(auth["username"], auth.get("password"))
        if auth.get("ca_file"):
            self.client.tls_set(ca_certs=auth["ca_file"], certfile=auth.get("cert_file"), keyfile=auth.get("key_file"))
        self.messages: list[mqtt.MQTTMessage] = []
        self.received = threading.Condition()
        self.client.on_message = self._on_message
        properties = None
        if session_expiry:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry
        self.client.connect(host, port, clean_start=not session_expiry, properties=properties)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.received:
            self.messages.append(msg)
            self.received.notify_all()

    def subscribe(self, topic: str, qos: int = 1) -> TestClient:
        """Subscribe and wait for the SUBACK (granted or not: `try_subscribe` tells)."""
        self.try_subscribe(topic, qos=qos)
        return self

    def try_subscribe(self, *topics: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribe to each topic filter and return the broker's reason code for each (refusals included)."""
        done = threading.Event()
        granted: list[ReasonCode] = []

        def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any) -> None:
            granted.extend(codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe([(topic, qos) for topic in topics])
        assert done.wait(10), f"no SUBACK for {topics}"
        return granted

    def publish(self, topic: str, payload: bytes, props: Properties | None = None, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos, properties=props)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[mqtt.MQTTMessage]:
        with self.received:
            self.received.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
