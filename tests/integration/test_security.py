"""Uplink security (issue 5) against a real Mosquitto with a password file, an ACL and a TLS listener.

The cloud broker here is configured as the charts configure it: anonymous clients refused, one
user per device allowed to publish only `cam_bin_remote/<its user name>` (and its components'
status under it), a processor user allowed only to read `cam_bin_remote/#`, and a TLS listener with a certificate from a throwaway
CA (facepipe_dev.pki). The processor and the forwarder run as real `facepipe` processes
connecting over TLS with their own credentials.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from facepipe.config import BrokerSettings, CommonSettings
from facepipe.contract import FaceMeta
from facepipe.metric_names import (
    FORWARDER_FORWARDED,
    FORWARDER_REFUSED,
    MQTT_CONNECTED,
    PROCESSOR_RECEIVED,
    PROCESSOR_REJECTED,
    PROCESSOR_STORED,
)
from facepipe.probe import synthetic_face
from facepipe_dev.brokerauth import CloudAuth, mosquitto_passwd_available
from facepipe_dev.brokers import MosquittoBroker, secured
from facepipe_dev.components import ComponentProcess
from facepipe_dev.mqtt import TestClient
from facepipe_dev.pki import LocalPKI, openssl_available
from facepipe_dev.processes import wait_until
from facepipe_dev.rig import Rig, Uplink

BASE = "cam_bin_remote"
DEVICES = {"edge-a": "pw-a-7f3c", "edge-b": "pw-b-19d2"}
PROCESSOR = ("processor", "pw-proc-5e61")
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87
BAD_CREDENTIALS = 134  # 0x86


@dataclass
class Attempt:
    """What one connection attempt ended with."""

    connack: ReasonCode | None = None
    error: BaseException | None = None
    disconnected: bool = False

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure


def attempt_connect(host: str, port: int, timeout: float = 5.0, **auth: str | None) -> Attempt:
    """Connect with MQTT 5 and report the CONNACK, the TLS/socket error or the drop; always disconnects."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    result = Attempt()
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        result.connack = reason
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _reason: ReasonCode, _p: object) -> None:
        result.disconnected = True
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    if auth.get("username"):
        client.username_pw_set(auth["username"], auth.get("password"))
    if auth.get("ca_file"):
        client.tls_set(ca_certs=auth["ca_file"], certfile=auth.get("cert_file"), keyfile=auth.get("key_file"))
    try:
        client.connect(host, port)
    except (OSError, ssl.SSLError) as exc:
        result.error = exc
        return result
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return result


class Publisher:
    """An MQTT 5 publisher that records the PUBACK reason code of every QoS 1 publish."""

    def __init__(self, host: str, port: int, username: str, password: str, ca_file: Path | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        self.acks: dict[int, ReasonCode] = {}
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: None if rc.is_failure else self.connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{username} could not connect"

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        with self.cond:
            self.acks[mid] = reason
            self.cond.notify_all()

    def publish(self, topic: str, payload: bytes, props: Properties | None = None) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, properties=props)
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.acks, 10), f"no PUBACK for {topic}"
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def face_props(device: str, seq: int = 0, camera: str = "cam0") -> Properties:
    meta = FaceMeta(device, camera, "b007", seq, datetime.now(UTC), 0, 0, (1, 2, 96, 96), 0.9, "test/1")
    return meta.to_properties()


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for reason in (openssl_available(), mosquitto_passwd_available()):
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return LocalPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    """Another CA, which the broker does not use and does not trust."""
    return LocalPKI(tmp_path_factory.mktemp("foreign-pki"), name="someone else's CA")


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> CloudAuth:
    return CloudAuth(dict(DEVICES), PROCESSOR, BASE).write(tmp_path_factory.mktemp("auth"))


def start_secure_broker(workdir: Path, pki: LocalPKI, auth: CloudAuth, require_client_certificate: bool = False) -> MosquittoBroker:
    return MosquittoBroker(workdir, name="cloud-broker", security=secured(pki, auth, require_client_certificate)).start()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, pki: LocalPKI, auth: CloudAuth) -> Iterator[MosquittoBroker]:
    """One secured cloud broker for the module: plain listener + TLS listener, password file, ACL."""
    broker = start_secure_broker(tmp_path_factory.mktemp("cloud-broker"), pki, auth)
    yield broker
    broker.stop()


def tls_port(broker: MosquittoBroker) -> int:
    assert broker.security.tls_port
    return broker.security.tls_port


def remote_settings(broker: MosquittoBroker, pki: LocalPKI, user: tuple[str, str], client_id: str = "") -> BrokerSettings:
    return BrokerSettings(
        host=broker.host, port=tls_port(broker), topic=BASE, username=user[0], password=user[1],
        tls=True, ca_file=str(pki.ca_file), client_id=client_id,
    )  # fmt: skip


def secure_rig(workdir: Path, processor: BrokerSettings, forwarder: BrokerSettings | None = None, edge: MosquittoBroker | None = None) -> Rig:
    """A rig whose processor (and forwarder) reach the cloud broker over TLS with their own credentials."""
    local = BrokerSettings(host=edge.host, port=edge.port) if edge is not None else BrokerSettings()
    return Rig(workdir, local, Uplink(forwarder=forwarder or processor, processor=processor), common=CommonSettings(device_id="edge-a"))


def start_processor(workdir: Path, broker_settings: BrokerSettings, wait: bool = True) -> ComponentProcess:
    processor = secure_rig(workdir, broker_settings).processor().start()
    return processor.wait_ready() if wait else processor


def stored_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "faces").rglob("*.png"))


# --- authentication ---


def test_anonymous_clients_are_refused_on_both_listeners(cloud: MosquittoBroker, pki: LocalPKI) -> None:
    plain = attempt_connect(cloud.host, cloud.port)
    over_tls = attempt_connect(cloud.host, tls_port(cloud), ca_file=str(pki.ca_file))
    for attempt in (plain, over_tls):
        assert attempt.error is None and attempt.connack is not None, attempt
        assert attempt.connack.is_failure and attempt.connack.value == NOT_AUTHORIZED, attempt.connack
    log = cloud.log_path.read_text()
    assert "disconnected, not authorised" in log


def test_wrong_passwords_and_unknown_users_are_refused(cloud: MosquittoBroker, pki: LocalPKI) -> None:
    cases = {
        "wrong password": ("edge-a", "not-the-password"),
        "another device's password": ("edge-a", DEVICES["edge-b"]),
        "empty password": ("edge-a", ""),
        "unknown user": ("edge-z", "whatever"),
        "processor user, device password": (PROCESSOR[0], DEVICES["edge-a"]),
    }
    for what, (user, password) in cases.items():
        for port, tls in ((cloud.port, None), (tls_port(cloud), str(pki.ca_file))):
            attempt = attempt_connect(cloud.host, port, username=user, password=password, ca_file=tls)
            assert attempt.connack is not None and attempt.connack.is_failure, (what, port, attempt)
            assert attempt.connack.value in (NOT_AUTHORIZED, BAD_CREDENTIALS), (what, attempt.connack)
    # The right credentials are accepted on both listeners (so the refusals above are about the credentials).
    assert attempt_connect(cloud.host, cloud.port, username="edge-a", password=DEVICES["edge-a"]).accepted
    assert attempt_connect(cloud.host, tls_port(cloud), username="edge-a", password=DEVICES["edge-a"], ca_file=str(pki.ca_file)).accepted


# --- TLS ---


def test_a_client_trusting_another_ca_fails_the_tls_handshake(cloud: MosquittoBroker, pki: LocalPKI, foreign_pki: LocalPKI) -> None:
    user, password = "edge-a", DEVICES["edge-a"]
    wrong_ca = attempt_connect(cloud.host, tls_port(cloud), username=user, password=password, ca_file=str(foreign_pki.ca_file))
    assert isinstance(wrong_ca.error, ssl.SSLCertVerificationError), wrong_ca
    assert wrong_ca.connack is None
    # The system trust store does not know the test CA either: no silent trust of whatever the broker shows.
    system_store = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    system_store.tls_set()
    with pytest.raises(ssl.SSLCertVerificationError):
        system_store.connect(cloud.host, tls_port(cloud))
    # Plain MQTT against the TLS port gets no CONNACK.
    plain_to_tls = attempt_connect(cloud.host, tls_port(cloud), timeout=3, username=user, password=password)
    assert not plain_to_tls.accepted and plain_to_tls.connack is None, plain_to_tls
    assert "unknown ca" in cloud.log_path.read_text()
    # With the right CA the same credentials connect.
    assert attempt_connect(cloud.host, tls_port(cloud), username=user, password=password, ca_file=str(pki.ca_file)).accepted


def test_a_processor_trusting_another_ca_never_connects(tmp_path: Path, cloud: MosquittoBroker, pki: LocalPKI, foreign_pki: LocalPKI) -> None:
    settings = replace(remote_settings(cloud, pki, PROCESSOR, client_id="processor-wrong-ca"), ca_file=str(foreign_pki.ca_file))
    processor = start_processor(tmp_path, settings, wait=False)
    try:
        wait_until(lambda: MQTT_CONNECTED in str(processor.metrics()), timeout=30, what="the processor's metrics")
        time.sleep(2.0)
        assert processor.process.running()
        assert not processor.is_ready()
        assert processor.metrics().get('facepipe_mqtt_connected{broker="cloud"}') == 0
        assert processor.metrics().get('facepipe_mqtt_connects_total{broker="cloud"}', 0) == 0
    finally:
        processor.stop()


def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(
    tmp_path: Path, pki: LocalPKI, foreign_pki: LocalPKI, auth: CloudAuth
) -> None:
    broker = start_secure_broker(tmp_path / "mtls-broker", pki, auth, require_client_certificate=True)
    try:
        user, password, ca = "edge-a", DEVICES["edge-a"], str(pki.ca_file)
        own = pki.client("edge-a")
        foreign = foreign_pki.client("edge-a")
        without = attempt_connect(broker.host, tls_port(broker), username=user, password=password, ca_file=ca)
        assert not without.accepted and without.connack is None, without
        with_foreign = attempt_connect(
            broker.host, tls_port(broker), username=user, password=password, ca_file=ca,
            cert_file=str(foreign.cert_file), key_file=str(foreign.key_file),
        )  # fmt: skip
        assert not with_foreign.accepted and with_foreign.connack is None, with_foreign
        with_own = attempt_connect(
            broker.host, tls_port(broker), username=user, password=password, ca_file=ca,
            cert_file=str(own.cert_file), key_file=str(own.key_file),
        )  # fmt: skip
        assert with_own.accepted, with_own
        # A certificate does not replace the password: the password file still applies.
        bad_password = attempt_connect(
            broker.host, tls_port(broker), username=user, password="wrong", ca_file=ca,
            cert_file=str(own.cert_file), key_file=str(own.key_file),
        )  # fmt: skip
        assert bad_password.connack is not None and bad_password.connack.is_failure, bad_password
        log = broker.log_path.read_text()
        assert "peer did not return a certificate" in log or "certificate required" in log or "OpenSSL Error" in log
    finally:
        broker.stop()


# --- authorisation (ACL) ---


def test_devices_may_only_publish_their_own_topic_and_cannot_read(cloud: MosquittoBroker, pki: LocalPKI) -> None:
    """Per-device identity: edge-a cannot publish for edge-b, cannot read anyone's faces; the processor cannot publish."""
    face = synthetic_face()
    eavesdropper = TestClient(cloud.host, tls_port(cloud), username="edge-b", password=DEVICES["edge-b"], ca_file=str(pki.ca_file))
    eavesdropper.subscribe(f"{BASE}/#")
    watcher = TestClient(cloud.host, tls_port(cloud), username=PROCESSOR[0], password=PROCESSOR[1], ca_file=str(pki.ca_file))
    watcher.subscribe(f"{BASE}/#")
    device_a = Publisher(cloud.host, tls_port(cloud), "edge-a", DEVICES["edge-a"], pki.ca_file)
    processor_pub = Publisher(cloud.host, tls_port(cloud), *PROCESSOR, pki.ca_file)
    try:
        refused = {
            "edge-a as edge-b": device_a.publish(f"{BASE}/edge-b", face, face_props("edge-b")),
            "edge-a on the base topic": device_a.publish(BASE, face, face_props("edge-a")),
            "edge-a under its topic, a level down": device_a.publish(f"{BASE}/edge-a/x", face, face_props("edge-a")),
            "edge-a on another tree": device_a.publish("cam_bin/edge-a", face, face_props("edge-a")),
            "edge-a's status as edge-b": device_a.publish(f"{BASE}/edge-b/status/camera", b"{}", None),
            "edge-a's status, a level down": device_a.publish(f"{BASE}/edge-a/status/camera/x", b"{}", None),
            "processor publishing": processor_pub.publish(f"{BASE}/edge-a", face, face_props("edge-a")),
        }
        for what, reason in refused.items():
            assert reason.value == NOT_AUTHORIZED, (what, reason)
        own = [f"{BASE}/edge-a", f"{BASE}/edge-a/status/camera"]  # contract.device_topics: its faces, its status
        for topic in own:
            allowed = device_a.publish(topic, face, face_props("edge-a"))
            assert not allowed.is_failure, (topic, allowed)
        watcher.wait_for(len(own), timeout=10)
        time.sleep(0.5)
        assert [m.topic for m in watcher.messages] == own, "a refused publish reached a subscriber"
        assert eavesdropper.messages == [], "a device read another device's faces"
    finally:
        for client in (eavesdropper, watcher, device_a, processor_pub):
            client.close()


def test_a_device_publishing_under_another_devices_topic_does_not_reach_the_processor(
    tmp_path: Path, cloud: MosquittoBroker, pki: LocalPKI
) -> None:
    processor = start_processor(tmp_path, remote_settings(cloud, pki, PROCESSOR, client_id="processor-acl"))
    device_a = Publisher(cloud.host, tls_port(cloud), "edge-a", DEVICES["edge-a"], pki.ca_file)
    try:
        forged = synthetic_face(64)
        # A perfect forgery: topic, metadata and payload all claim edge-b; only the credentials are edge-a's.
        reason = device_a.publish(f"{BASE}/edge-b", forged, face_props("edge-b", seq=7, camera="forged"))
        assert reason.value == NOT_AUTHORIZED, reason
        good = synthetic_face(96)
        assert not device_a.publish(f"{BASE}/edge-a", good, face_props("edge-a", seq=1)).is_failure
        wait_until(lambda: processor.metrics().get(PROCESSOR_STORED) == 1, what="edge-a's face stored")
        time.sleep(1.0)  # room for anything else to (wrongly) arrive
        metrics = processor.metrics()
        assert metrics.get(PROCESSOR_RECEIVED) == 1
        assert metrics.get(PROCESSOR_STORED) == 1
        assert metrics.get(PROCESSOR_REJECTED, 0) == 0
        (stored,) = stored_files(tmp_path)
        assert stored.relative_to(tmp_path / "faces").parts[0] == "edge-a"
        assert stored.read_bytes() == good
        assert json.loads(stored.with_name(stored.name + ".json").read_text())["device"] == "edge-a"
    finally:
        device_a.close()
        processor.stop()


# --- the real components over TLS ---


def test_forwarder_over_tls_with_device_credentials_delivers_and_impersonation_is_refused(
    tmp_path: Path, cloud: MosquittoBroker, pki: LocalPKI, edge_broker: MosquittoBroker
) -> None:
    """Edge → forwarder (TLS, edge-a's credentials) → cloud → processor (TLS): the face is stored.

    A second forwarder on the same edge that calls itself edge-b but holds edge-a's credentials
    publishes under cam_bin_remote/edge-b: the broker refuses it and that forwarder counts it.
    """
    device_credentials = ("edge-a", DEVICES["edge-a"])
    rig = secure_rig(
        tmp_path, remote_settings(cloud, pki, PROCESSOR, client_id="processor-e2e"), remote_settings(cloud, pki, device_credentials), edge_broker
    )
    processor = rig.processor()
    forwarders = {
        name: rig.forwarder(
            label=name,
            common=CommonSettings(device_id=device),
            local=replace(rig.local, client_id=f"fwd-local-{name}"),
            remote=replace(rig.uplink.forwarder, client_id=f"fwd-remote-{name}"),
            spool_dir=str(tmp_path / f"spool-{name}"),
        )
        for name, device in (("honest", "edge-a"), ("impostor", "edge-b"))
    }
    camera = None
    try:
        processor.start().wait_ready()
        for forwarder in forwarders.values():
            forwarder.start()
        for forwarder in forwarders.values():
            forwarder.wait_ready()
        camera = TestClient(edge_broker.host, edge_broker.port)
        face = synthetic_face()
        camera.publish("cam_bin", face, face_props("edge-a", seq=3))
        wait_until(lambda: processor.metrics().get(PROCESSOR_STORED) == 1, what="the forwarded face stored")
        wait_until(
            lambda: forwarders["impostor"].metrics().get(FORWARDER_REFUSED) == 1, what="the impostor's refusal counted"
        )
        time.sleep(1.0)
        assert forwarders["honest"].metrics().get(FORWARDER_FORWARDED) == 1
        assert forwarders["honest"].metrics().get(FORWARDER_REFUSED, 0) == 0
        assert forwarders["impostor"].metrics().get(FORWARDER_FORWARDED, 0) == 0
        metrics = processor.metrics()
        assert metrics.get(PROCESSOR_RECEIVED) == 1
        (stored,) = stored_files(tmp_path)
        assert stored.read_bytes() == face
        meta = FaceMeta.from_storage_metadata(json.loads(stored.with_name(stored.name + ".json").read_text()))
        assert (meta.device, meta.seq) == ("edge-a", 3)
        for forwarder in forwarders.values():
            assert forwarder.metrics().get('facepipe_mqtt_connected{broker="cloud"}') == 1
    finally:
        if camera is not None:
            camera.close()
        rig.close()
