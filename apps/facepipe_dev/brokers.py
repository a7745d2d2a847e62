"""Local Mosquitto brokers for `facepipe run`, the tests and the bench.

The configuration avoids Mosquitto's silent losses: its default `max_queued_messages 1000`
drops QoS 1 messages for a slow subscriber, so the queue limit is raised; persistence is on.
"""

from __future__ import annotations

import getpass
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from facepipe import contract
from facepipe_dev.brokerauth import CloudAuth
from facepipe_dev.pki import LocalPKI
from facepipe_dev.processes import ChildProcess, free_port

# Queue limits per client: large enough that a slow or absent QoS 1 subscriber with a
# persistent session loses nothing in any realistic outage, bounded so the broker cannot
# exhaust memory.
MAX_QUEUED_MESSAGES = 1_000_000
MAX_QUEUED_BYTES = 2 * 1024 * 1024 * 1024
MAX_INFLIGHT_MESSAGES = 1000
# Room for the largest accepted payload plus its properties; 0 would be rejected by Mosquitto.
MAX_PACKET_SIZE = contract.DEFAULT_MAX_PAYLOAD_BYTES + 64 * 1024


def find_mosquitto(name: str = "mosquitto") -> str:
    """The mosquitto binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"]))
    if not found:
        raise FileNotFoundError(
            f"{name!r} not found: install Mosquitto 2.x (Debian/Ubuntu: sudo apt-get install mosquitto mosquitto-clients; "
            "macOS: brew install mosquitto) or pass --mosquitto /path/to/mosquitto"
        )
    return found


@dataclass
class BrokerSecurity:
    """Optional password file, ACL file and TLS listener for a broker."""

    password_file: Path | None = None
    acl_file: Path | None = None
    tls_port: int | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    require_client_certificate: bool = False


def secured(pki: LocalPKI, auth: CloudAuth, require_client_certificate: bool = False) -> BrokerSecurity:
    """A cloud broker's security as the charts configure it: `auth`'s users and ACL, a TLS listener on a free
    port with a server certificate from `pki` (and, optionally, client certificates required)."""
    server = pki.server()
    return BrokerSecurity(
        password_file=auth.password_file, acl_file=auth.acl_file, tls_port=free_port(),
        ca_file=pki.ca_file, cert_file=server.cert_file, key_file=server.key_file,
        require_client_certificate=require_client_certificate,
    )  # fmt: skip


@dataclass
class MosquittoBroker:
    """A Mosquitto process on loopback with its own config, persistence directory and log."""

    workdir: Path
    name: str = "broker"
    port: int = field(default_factory=free_port)
    binary: str = "mosquitto"
    security: BrokerSecurity = field(default_factory=BrokerSecurity)
    host: str = "127.0.0.1"
    process: ChildProcess | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """The broker's own log (flushed per line, unlike its stdout)."""
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        data = self.workdir / "data"
        sec = self.security
        lines = [
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            f"allow_anonymous {'false' if sec.password_file else 'true'}",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 1",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"max_queued_bytes {MAX_QUEUED_BYTES}",
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
            f"max_packet_size {MAX_PACKET_SIZE}",
            f"log_dest file {self.log_path}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {self.port} {self.host}",
        ]
        if sec.password_file:
            lines.append(f"password_file {sec.password_file}")
        if sec.acl_file:
            lines.append(f"acl_file {sec.acl_file}")
        if sec.tls_port:
            lines += [
                f"listener {sec.tls_port} {self.host}",
                f"cafile {sec.ca_file}",
                f"certfile {sec.cert_file}",
                f"keyfile {sec.key_file}",
                f"require_certificate {'true' if sec.require_client_certificate else 'false'}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> MosquittoBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self.process = ChildProcess(self.name, [find_mosquitto(self.binary), "-c", str(conf)], self.workdir / "mosquitto.out").start()
        for listener in (self.port, self.security.tls_port):
            if listener:
                self.process.wait_for_port(self.host, listener, timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 15.0) -> MosquittoBroker:
        """Stop (saving persistence) and start again on the same port."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
