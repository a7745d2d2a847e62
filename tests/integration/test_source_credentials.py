"""A camera's stream credentials come from their own settings (a Secret in the chart) and never reach a log.

A small RTSP server on loopback asks for Basic authentication and records what it is sent; a real
camera process (OpenCV's FFmpeg underneath) connects to it with FACEPIPE_SOURCE_USERNAME and
FACEPIPE_SOURCE_PASSWORD, keeps failing (the stream does not exist) and retries. The server gets
the password; the camera's log, its --check-config output and its metrics never show it.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from facepipe import config
from facepipe.config import BrokerSettings, CameraSettings, CommonSettings, DetectorSettings
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.components import ComponentProcess
from facepipe_dev.processes import wait_until

USER = "admin"
PASSWORD = "p@ss:w/rd-S3cret%41"  # characters that must be percent-encoded in a URL


class RtspAuthServer:
    """Answers OPTIONS, asks DESCRIBE for Basic credentials, records them, then says the stream does not exist."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.authorizations: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ", 1)[0]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                cseq = headers.get("cseq", "0")
                if method == "OPTIONS":
                    reply = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"
                elif "authorization" not in headers:
                    reply = f'RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm="facepipe-test"\r\n\r\n'
                else:
                    self.authorizations.append(headers["authorization"])
                    reply = f"RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n"
                conn.sendall(reply.encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rtsp() -> Iterator[RtspAuthServer]:
    server = RtspAuthServer()
    yield server
    server.close()


def expected_authorization() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def camera_settings(broker: MosquittoBroker, model_dir: Path, source: str, username: str, password: str) -> CameraSettings:
    return CameraSettings(
        common=CommonSettings(device_id="edge-1"),
        broker=BrokerSettings(host=broker.host, port=broker.port),
        detect=DetectorSettings(model_dir=str(model_dir)),
        source=source,
        source_username=username,
        source_password=password,
        reconnect_seconds=0.5,
    )


@pytest.mark.parametrize("where", ["settings", "url"])
def test_stream_credentials_reach_the_camera_and_no_log(
    tmp_path: Path, edge_broker: MosquittoBroker, model_dir: Path, rtsp: RtspAuthServer, where: str
) -> None:
    """`settings`: FACEPIPE_SOURCE_USERNAME/_PASSWORD (what the chart takes from a Secret). `url`: the credentials
    inside FACEPIPE_SOURCE, the old way, which still works and is still never logged."""
    stream = f"rtsp://127.0.0.1:{rtsp.port}/stream"
    if where == "settings":
        settings = camera_settings(edge_broker, model_dir, stream, USER, PASSWORD)
    else:
        userinfo = f"{USER}:{PASSWORD.replace('%', '%25').replace('@', '%40').replace(':', '%3A').replace('/', '%2F')}"
        settings = camera_settings(edge_broker, model_dir, stream.replace("rtsp://", f"rtsp://{userinfo}@"), "", "")
    camera = ComponentProcess("camera", settings, tmp_path).start()
    try:
        wait_until(lambda: len(rtsp.authorizations) >= 2, timeout=60, what="two authenticated attempts (the camera retries)")
        metrics = json.dumps(camera.metrics())
    finally:
        camera.stop()
    assert set(rtsp.authorizations) == {expected_authorization()}, "the server got exactly the configured credentials"
    log = camera.process.log_path.read_text()
    assert '"source.unavailable"' in log and f"127.0.0.1:{rtsp.port}/stream" in log
    for secret in (PASSWORD, "S3cret", expected_authorization().split()[1]):
        assert secret not in log and secret not in metrics, f"{secret!r} in the camera's log or metrics"
    if where == "url":
        assert f"rtsp://***@127.0.0.1:{rtsp.port}/stream" in log

    env = {**camera.env, **config.to_environment(settings)}
    shown = subprocess.run([sys.executable, "-m", "facepipe", "camera", "--check-config"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    effective = json.loads(shown.stdout)["config"]
    assert "S3cret" not in shown.stdout + shown.stderr
    assert effective["FACEPIPE_SOURCE_PASSWORD"] == ("***" if where == "settings" else "")
    assert effective["FACEPIPE_SOURCE"] == (stream if where == "settings" else f"rtsp://***@127.0.0.1:{rtsp.port}/stream")
