"""The brokers' rendered configuration, run by a real Mosquitto 2.0.

From the rendered ConfigMap, users Secret, TLS Secret and the init container's script (paths moved
into a temporary directory, ports onto free loopback ports), start Mosquitto and check what the
chart promises: anonymous clients and wrong passwords refused, a device publishes only under its
own topic, the processor user only reads, TLS with the chart-generated CA works, and the edge
broker takes QoS 1 messages from its clients.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from facepipe_dev import helm as h

pytestmark = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("mosquitto", "mosquitto_passwd", "mosquitto_pub", "mosquitto_sub"))
    and not Path("/usr/sbin/mosquitto").exists(),
    reason="needs Mosquitto and its clients (apt-get install mosquitto mosquitto-clients)",
)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def dynamic_security_plugin() -> str:
    """This machine's mosquitto_dynamic_security.so (Debian keeps it under the architecture's lib folder)."""
    found = sorted(Path("/usr/lib").glob("**/mosquitto_dynamic_security.so"))
    if not found:
        pytest.skip("mosquitto_dynamic_security.so not found (Debian's mosquitto package ships it)")
    return str(found[0])


TOPIC = "cam_bin_remote"
DEVICES = {"dev-a": "password-of-dev-a", "dev-b": "password-of-dev-b"}
NOT_AUTHORIZED = 0x87


class Broker:
    """Lay out a rendered broker pod's files under `root` and run Mosquitto on loopback."""

    def __init__(self, docs: list[dict[str, Any]], root: Path) -> None:
        from facepipe_dev.processes import free_port

        self.docs = docs
        self.root = root
        self.deploy = h.find(docs, "Deployment", "broker")
        self.ports: dict[int, int] = {}
        conf = h.find(docs, "ConfigMap", "broker")["data"]
        (root / "config").mkdir()
        for name, text in conf.items():
            (root / "config" / name).write_text(text)
        for line in conf["mosquitto.conf"].splitlines():
            if m := re.fullmatch(r"listener (\d+)", line.strip()):
                self.ports[int(m.group(1))] = free_port()
        for sub in ("auth", "data", "tls", "secret", "tmp"):
            (root / sub).mkdir()
        self._mount_secrets()
        self._run_init()
        text = self._paths(conf["mosquitto.conf"])
        text = re.sub(r"^plugin /\S+$", f"plugin {dynamic_security_plugin()}", text, flags=re.MULTILINE)
        for inside, outside in self.ports.items():
            text = re.sub(rf"^listener {inside}$", f"listener {outside} 127.0.0.1", text, flags=re.MULTILINE)
        if os.geteuid() == 0:
            text = "user root\n" + text  # or Mosquitto drops to user "mosquitto" and cannot read the files
        (root / "mosquitto.conf").write_text(text)

    def _paths(self, text: str) -> str:
        """The pod's paths, moved under root (one pass, so root's own /tmp prefix is left alone)."""
        moved = {"/mosquitto/": "/", "/secret": "/secret", "/acl/": "/config/", "/tmp": "/tmp"}
        return re.sub(r"(?<![\w/.-])(/mosquitto/|/secret|/acl/|/tmp)", lambda m: f"{self.root}{moved[m.group(1)]}", text)

    def _mount_secrets(self) -> None:
        spec = h.pod_spec(self.deploy)
        mounts = {m["name"]: m["mountPath"] for c in h.containers(self.deploy) for m in c["volumeMounts"]}
        secrets = {d["metadata"]["name"]: d for d in h.by_kind(self.docs, "Secret")}
        for volume in spec["volumes"]:
            if "secret" not in volume:
                continue
            target = {"/secret": "secret", "/mosquitto/tls": "tls"}[mounts[volume["name"]]]
            for key, value in secrets[volume["secret"]["secretName"]]["data"].items():
                (self.root / target / key).write_bytes(base64.b64decode(value))

    def _run_init(self) -> None:
        for init in h.pod_spec(self.deploy).get("initContainers", []):
            script = self._paths(init["args"][0])
            subprocess.run([*init["command"], script], check=True, capture_output=True, text=True)

    def port(self, inside: int) -> int:
        return self.ports[inside]

    def __enter__(self) -> Broker:
        from facepipe_dev.processes import ChildProcess

        self.process = ChildProcess("mosquitto", [MOSQUITTO, "-c", str(self.root / "mosquitto.conf")], self.root / "mosquitto.log").start()
        for port in self.ports.values():
            self.process.wait_for_port("127.0.0.1", port, timeout=15)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def log(self) -> str:
        return (self.root / "mosquitto.log").read_text()


def pub(port: int, topic: str, *args: str, user: str | None = None, password: str | None = None) -> int:
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1", "-t", topic, "-m", "face", *args]
    if user:
        cmd += ["-u", user, "-P", password or ""]
    return subprocess.run(cmd, capture_output=True, timeout=20, check=False).returncode


class Subscriber:
    def __init__(self, port: int, topic: str, user: str, password: str, count: int = 1) -> None:
        cmd = [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            topic,
            "-v",
            "-u",
            user,
            "-P",
            password,
            "-C",
            str(count),
            "-W",
            "4",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # subscribed

    def result(self) -> list[str]:
        out, _ = self.proc.communicate(timeout=20)
        return out.split()


def test_cloud_broker_enforces_users_acls_and_tls(helm_any: h.Helm, tmp_path: Path) -> None:
    sets = ["broker.tls.hosts[0]=localhost", "broker.tls.hosts[1]=127.0.0.1"]
    for i, (name, password) in enumerate(DEVICES.items()):
        sets += [f"broker.auth.devices[{i}].name={name}", f"broker.auth.devices[{i}].password={password}"]
    docs = helm_any.template("face-cloud", sets=sets)
    users = {
        k: base64.b64decode(v).decode()
        for k, v in next(d for d in h.by_kind(docs, "Secret") if d["metadata"]["name"].endswith("-broker-users"))["data"].items()
    }
    passwd = None
    with Broker(docs, tmp_path) as broker:
        passwd = (tmp_path / "auth" / "passwd").read_text()
        plain, tls = broker.port(1883), broker.port(8883)
        ca = ["--cafile", str(tmp_path / "tls" / "ca.crt")]

        # The processor (shared subscription, as the chart configures it) gets dev-a's face sent over TLS.
        sub = Subscriber(plain, f"$share/processors/{TOPIC}/#", "processor", users["processor"])
        assert pub(tls, f"{TOPIC}/dev-a", *ca, user="dev-a", password=DEVICES["dev-a"]) == 0, broker.log()
        assert sub.result() == [f"{TOPIC}/dev-a", "face"], broker.log()

        # dev-a posing as dev-b, and the processor publishing, reach nobody.
        sub = Subscriber(plain, f"{TOPIC}/#", "processor", users["processor"])
        pub(tls, f"{TOPIC}/dev-b", *ca, user="dev-a", password=DEVICES["dev-a"])
        pub(plain, f"{TOPIC}/dev-a", user="processor", password=users["processor"])
        pub(tls, f"{TOPIC}/facepipe-probe", *ca, user="facepipe-probe", password=users["facepipe-probe"])
        assert sub.result() == [f"{TOPIC}/facepipe-probe", "face"], "only the probe's own topic got through"

        # Anonymous clients and wrong passwords are refused; a client that does not trust the CA fails.
        assert pub(plain, f"{TOPIC}/dev-a") != 0
        assert pub(tls, f"{TOPIC}/dev-a", *ca, user="dev-a", password="wrong") != 0
        other_ca = tmp_path / "other-ca.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "other-ca.key"),
             "-out", str(other_ca), "-days", "1", "-subj", "/CN=another CA"],
            check=True, capture_output=True,
        )  # fmt: skip
        assert pub(tls, f"{TOPIC}/dev-a", "--cafile", str(other_ca), user="dev-a", password=DEVICES["dev-a"]) != 0
    # Hashed, never plain text, in the broker's password file.
    assert passwd.count("\n") == len(users)
    assert all(pw not in passwd for pw in users.values())


def chart_broker_docs(helm: h.Helm, *extra: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The cloud chart rendered with DEVICES (TLS for localhost), and every user's password."""
    sets = ["broker.tls.hosts[0]=localhost", "broker.tls.hosts[1]=127.0.0.1", *extra]
    for i, (name, password) in enumerate(DEVICES.items()):
        sets += [f"broker.auth.devices[{i}].name={name}", f"broker.auth.devices[{i}].password={password}"]
    docs = helm.template("face-cloud", sets=sets)
    secret = next(d for d in h.by_kind(docs, "Secret") if d["metadata"]["name"].endswith("-broker-users"))
    return docs, {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_a_device_can_neither_join_the_processors_group_nor_read(helm_any: h.Helm, tmp_path: Path) -> None:
    """The review's attack on the chart's broker: dev-a's credentials subscribing to the processors' shared group,
    to `#`, to dev-b's subtree and to every device, from a live connection and from three persistent sessions left
    disconnected. Every subscription is refused, the attacker receives nothing, and every one of dev-b's faces
    reaches the processors (before the fix: half of them, or a quarter with the persistent sessions)."""
    from paho.mqtt.reasoncodes import ReasonCode

    from facepipe_dev.mqtt import TestClient
    from facepipe_dev.processes import wait_until

    docs, users = chart_broker_docs(helm_any)
    group = h.effective_values("face-cloud", "default")["processor"]["shareGroup"]
    attacks = [f"$share/{group}/{TOPIC}/#", "#", f"{TOPIC}/dev-b", f"{TOPIC}/dev-b/#", f"{TOPIC}/#", f"$share/{group}/#", "$SYS/#"]
    with Broker(docs, tmp_path) as broker:
        plain = broker.port(1883)
        processors = [
            TestClient("127.0.0.1", plain, f"processor-{i}", session_expiry=3600, username="processor", password=users["processor"])
            for i in range(2)
        ]
        for processor in processors:
            (code,) = processor.try_subscribe(f"$share/{group}/{TOPIC}/#")
            assert not code.is_failure, code
        refused: list[ReasonCode] = []
        for i in range(3):  # persistent sessions, then gone
            attacker = TestClient("127.0.0.1", plain, f"dev-a-{i}", session_expiry=3600, username="dev-a", password=DEVICES["dev-a"])
            refused += attacker.try_subscribe(*attacks)
            attacker.close()
        live = TestClient("127.0.0.1", plain, "dev-a-live", username="dev-a", password=DEVICES["dev-a"])
        refused += live.try_subscribe(*attacks)
        assert [code.value for code in refused] == [NOT_AUTHORIZED] * len(refused), refused
        dev_b = TestClient("127.0.0.1", plain, "dev-b", username="dev-b", password=DEVICES["dev-b"])
        for seq in range(20):
            dev_b.publish(f"{TOPIC}/dev-b", f"face-{seq}".encode())
        wait_until(lambda: sum(len(p.messages) for p in processors) >= 20, what="dev-b's faces at the processors")
        time.sleep(0.5)
        received = sorted(m.payload.decode() for p in processors for m in p.messages)
        assert received == sorted(f"face-{seq}" for seq in range(20)), "every face reached the processors, once"
        assert live.messages == []
        for i in range(3):  # the persistent sessions come back: nothing was queued for them
            attacker = TestClient("127.0.0.1", plain, f"dev-a-{i}", session_expiry=3600, username="dev-a", password=DEVICES["dev-a"])
            time.sleep(0.5)
            assert attacker.messages == []
            attacker.close()
        for client in (live, dev_b, *processors):
            client.close()


def test_a_user_that_is_no_device_id_stops_the_broker(helm_any: h.Helm) -> None:
    """With existingSecret or passwordFileSecret the chart never sees the user names: the init container checks
    them. A wildcard, a level separator or the reserved `unknown` would give a role over topics no device owns."""
    docs, _users = chart_broker_docs(helm_any)
    for bad in ("unknown", "edge+1", "#", "a/b", "-leading", "x" * 64):
        with pytest.raises(subprocess.CalledProcessError) as info:
            h.broker_access(docs, ["processor", bad])
        assert f"broker user '{bad}' is not a usable device id" in info.value.stderr.decode()
    assert h.grants(h.broker_access(docs, ["processor", "edge.1_a-b"]), "edge.1_a-b")


def test_edge_broker_with_password(helm_any: h.Helm, tmp_path: Path) -> None:
    docs = helm_any.template(
        "face-edge", sets=["cloud.host=mqtt.example.com", "broker.auth.enabled=true", "broker.auth.password=edge-secret"]
    )
    with Broker(docs, tmp_path) as broker:
        port = broker.port(1883)
        sub = Subscriber(port, "cam_bin", "facepipe", "edge-secret", count=3)
        for _ in range(3):
            assert pub(port, "cam_bin", user="facepipe", password="edge-secret") == 0, broker.log()
        assert sub.result() == ["cam_bin", "face"] * 3
        assert pub(port, "cam_bin") != 0, "anonymous refused once a password is set"


def test_edge_broker_default_config_starts(helm_any: h.Helm, tmp_path: Path) -> None:
    docs = helm_any.template("face-edge", sets=["cloud.host=mqtt.example.com"])
    with Broker(docs, tmp_path) as broker:
        assert pub(broker.port(1883), "cam_bin") == 0
    log = broker.log()
    assert "Error" not in log, log


def make_pki(root: Path, *clients: str) -> None:
    """A CA, the broker's certificate for 127.0.0.1 (root/tls: ca.crt, tls.crt, tls.key) and one client certificate
    per name, its common name that name (root/<name>.crt, .key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    tls = root / "tls"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(root / "ca.key"), "-out", str(tls / "ca.crt"),
            "-days", "1", "-subj", "/CN=facepipe test CA")  # fmt: skip
    for name, cn, ext in [
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1"),
        *((c, c, "extendedKeyUsage=clientAuth") for c in clients),
    ]:
        key, csr, crt = root / f"{name}.key", root / f"{name}.csr", root / f"{name}.crt"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        (root / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(tls / "ca.crt"), "-CAkey", str(root / "ca.key"), "-CAcreateserial",
                "-out", str(crt), "-days", "1", "-extfile", str(root / f"{name}.ext"))  # fmt: skip
    shutil.copy(root / "server.crt", tls / "tls.crt")
    shutil.copy(root / "server.key", tls / "tls.key")


def test_client_certificates_bound_to_the_user_name(helm_any: h.Helm, tmp_path: Path) -> None:
    """broker.tls.useIdentityAsUsername: on the TLS port a device is who its certificate says (common name = device
    id), whatever user name and password it sends. dev-a's certificate cannot publish as dev-b even with dev-b's
    password; dev-b's password without a certificate gets nowhere; dev-a's certificate alone publishes as dev-a."""
    docs, users = chart_broker_docs(helm_any, "broker.tls.requireClientCertificate=true", "broker.tls.useIdentityAsUsername=true")
    conf = h.find(docs, "ConfigMap", "broker")["data"]["mosquitto.conf"]
    assert "use_identity_as_username true" in conf
    broker = Broker(docs, tmp_path)
    make_pki(tmp_path, "dev-a")
    with broker:
        plain, tls = broker.port(1883), broker.port(8883)
        ca = ["--cafile", str(tmp_path / "tls" / "ca.crt")]
        dev_a = [*ca, "--cert", str(tmp_path / "dev-a.crt"), "--key", str(tmp_path / "dev-a.key")]
        sub = Subscriber(plain, f"{TOPIC}/#", "processor", users["processor"], count=2)
        assert pub(tls, f"{TOPIC}/dev-a", *dev_a) == 0, broker.log()  # no user name, no password: the certificate
        pub(tls, f"{TOPIC}/dev-b", *dev_a, user="dev-b", password=DEVICES["dev-b"])  # dev-a's certificate, dev-b's password
        assert pub(tls, f"{TOPIC}/dev-b", *ca, user="dev-b", password=DEVICES["dev-b"]) != 0, "a password without a certificate"
        assert pub(tls, f"{TOPIC}/dev-a", *dev_a, user="dev-b", password="wrong") == 0, "the certificate decides, not the password"
        assert sub.result() == [f"{TOPIC}/dev-a", "face"] * 2, broker.log()
