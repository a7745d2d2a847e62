"""Test-side MQTT clients: a publisher that waits for acknowledgements and a collecting subscriber."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties


class TestClient:
    """A connected MQTT 5 client for tests (paho's network thread running)."""

    __test__ = False  # not a pytest class

    def __init__(self, host: str, port: int, client_id: str = "", **auth: Any) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if auth.get("username"):
            self.client.username_pw_set(auth["username"], auth.get("password"))
        if auth.get("ca_file"):
            self.client.tls_set(ca_certs=auth["ca_file"], certfile=auth.get("cert_file"), keyfile=auth.get("key_file"))
        self.messages: list[mqtt.MQTTMessage] = []
        self.received = threading.Condition()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.received:
            self.messages.append(msg)
            self.received.notify_all()

    def subscribe(self, topic: str, qos: int = 1) -> TestClient:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic, qos)
        assert done.wait(10), f"no SUBACK for {topic}"
        return self

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


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> None:
    """Poll `predicate` until it is truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
