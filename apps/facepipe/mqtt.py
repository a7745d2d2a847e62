"""MQTT 5 connections shared by every component: TLS, credentials, sessions, reconnect with backoff.

paho's network thread reconnects by itself (1 s doubling to 30 s); this module wires the
settings into a client, tracks the connection state for /readyz and metrics, and re-subscribes
on every connect.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter, Gauge

from facepipe.config import BrokerSettings
from facepipe.metric_names import MQTT_CONNECTED, MQTT_CONNECTS

RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 30

MessageHandler = Callable[[mqtt.MQTTMessage], None]
T = TypeVar("T")
READ_CHUNK = 256 * 1024


class ReadBufferedSocket:
    """paho's socket with a read buffer: one recv() serves many of paho's reads.

    paho reads each packet in three or more recv() calls (one byte of type, the length byte by
    byte, then the rest), each a system call, plus a select() per packet. Here one recv() takes
    whatever the kernel has, up to READ_CHUNK, and `pending()` reports what is buffered so paho's
    loop reads on without waiting in select(), exactly as it does for bytes buffered inside TLS.
    Everything else (send, fileno, close, setblocking...) is the wrapped socket's.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._offset = 0

    def recv(self, size: int) -> bytes:
        if self._offset >= len(self._buffer):
            data = self._sock.recv(max(size, READ_CHUNK))
            if len(data) <= size:
                return data
            self._buffer, self._offset = data, 0
        chunk = self._buffer[self._offset : self._offset + size]
        self._offset += len(chunk)
        return chunk

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._offset + inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Client(mqtt.Client):
    """paho's client reading through a ReadBufferedSocket."""

    def _create_socket(self) -> Any:
        return ReadBufferedSocket(super()._create_socket())


_UNTRACKED = object()


class AckTracker(Generic[T]):
    """Pairs QoS 1 publishes with their PUBACKs, whichever the application sees first.

    paho calls on_publish on its network thread while holding its own lock, so the application
    must not hold a lock of its own across `publish()`; a PUBACK can therefore arrive before
    `sent()` records the message id. Once both halves are known, `on_done(item)` runs, or
    `on_refused(item, reason)` when the broker refused the message (for instance its ACL).
    Other publishes on the same connection (status messages) are paired with `sent_untracked()`,
    so their acknowledgements are consumed instead of waiting for a message id paho reuses later.
    """

    def __init__(self, on_done: Callable[[T], None], on_refused: Callable[[T, ReasonCode], None]) -> None:
        self.on_done = on_done
        self.on_refused = on_refused
        self._cond = threading.Condition()
        self._waiting: dict[int, T] = {}
        self._early: dict[int, ReasonCode | None] = {}

    def sent(self, mid: int, item: T) -> None:
        with self._cond:
            if mid not in self._early:
                self._waiting[mid] = item
                return
            reason = self._early.pop(mid)
        self._complete(item, reason)

    def sent_untracked(self, mid: int) -> None:
        """A publish whose acknowledgement nobody waits for (it completes neither callback)."""
        self.sent(mid, _UNTRACKED)  # type: ignore[arg-type]

    def acked(self, mid: int, reason: ReasonCode | None) -> None:
        with self._cond:
            if mid not in self._waiting:
                self._early[mid] = reason
                return
            item = self._waiting.pop(mid)
            if not self._waiting:
                self._cond.notify_all()
        self._complete(item, reason)

    def _complete(self, item: T, reason: ReasonCode | None) -> None:
        if item is _UNTRACKED:
            return
        if reason is not None and reason.is_failure:
            self.on_refused(item, reason)
        else:
            self.on_done(item)

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)

    def wait_empty(self, timeout: float) -> bool:
        """True once nothing awaits an acknowledgement, False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting, timeout)


class BrokerLink:
    """One client connection to one broker, kept up for the life of the component."""

    def __init__(
        self,
        name: str,
        settings: BrokerSettings,
        client_id: str,
        metrics: LinkMetrics,
        log: logging.Logger,
        *,
        subscriptions: tuple[str, ...] = (),
        on_message: MessageHandler | None = None,
        manual_ack: bool = False,
        session_expiry: int = 0,
        max_inflight: int = 100,
    ) -> None:
        self.name = name
        self.settings = settings
        self.log = log
        self.subscriptions = subscriptions
        self.session_expiry = session_expiry
        self.connected = threading.Event()
        self.on_connected: list[Callable[[], None]] = []  # run on paho's thread on every (re)connect
        self.client = Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        self.client.reconnect_delay_set(RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password or None)
        if settings.tls:
            self.client.tls_set(
                ca_certs=settings.ca_file or None,
                certfile=settings.cert_file or None,
                keyfile=settings.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        if on_message is not None:
            self.client.on_message = lambda _c, _u, msg: on_message(msg)
        self._cert_expiry = metrics.server_cert_expiry.labels(name) if settings.tls else None
        self._connected_gauge = metrics.connected.labels(name)
        self._connects = metrics.connects.labels(name)
        self._disconnects = metrics.disconnects.labels(name)

    def start(self) -> BrokerLink:
        """Connect in the background; paho retries the first connection and every later one."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=self.session_expiry == 0,
            properties=props,
        )
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        self._connected_gauge.set(0)

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            self.log.error("mqtt.refused", extra={"broker": self.name, "address": self.settings.address, "reason": str(reason)})
            return
        for topic in self.subscriptions:
            client.subscribe(topic, qos=self.settings.qos)
        for hook in self.on_connected:  # before `connected` is set: what a waiter publishes next comes after
            hook()
        self.connected.set()
        self._connected_gauge.set(1)
        self._connects.inc()
        event = {"broker": self.name, "address": self.settings.address, "subscriptions": list(self.subscriptions)}
        expires = self._server_cert_expiry(client)
        if expires is not None:
            event["server_cert_expires"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        self.log.info("mqtt.connected", extra=event)

    def _server_cert_expiry(self, client: mqtt.Client) -> float | None:
        """The end of validity of the certificate the broker presented (TLS only), also as a metric."""
        if self._cert_expiry is None:
            return None
        cert = getattr(client.socket(), "getpeercert", lambda: None)()
        if not cert or "notAfter" not in cert:
            return None
        expires = float(ssl.cert_time_to_seconds(cert["notAfter"]))
        self._cert_expiry.set(expires)
        return expires

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self._connected_gauge.set(0)
        if was_connected:
            self._disconnects.inc()
            self.log.warning("mqtt.disconnected", extra={"broker": self.name, "address": self.settings.address, "reason": str(reason)})


def client_id(settings: BrokerSettings, component: str, device_id: str) -> str:
    """The configured client id, or `facepipe-<component>-<device>`."""
    return settings.client_id or f"facepipe-{component}-{device_id}"


class LinkMetrics:
    """Connection metrics of a component's broker links, labelled by broker."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connected = Gauge(MQTT_CONNECTED, "1 while connected to the broker", ["broker"], registry=registry)
        self.connects = Counter(MQTT_CONNECTS, "successful (re)connections", ["broker"], registry=registry)
        self.disconnects = Counter("facepipe_mqtt_disconnects_total", "lost connections", ["broker"], registry=registry)
        self.server_cert_expiry = Gauge(
            "facepipe_mqtt_server_cert_expiry_timestamp_seconds",
            "when the TLS certificate the broker presented expires (unix time; TLS links only)",
            ["broker"],
            registry=registry,
        )
