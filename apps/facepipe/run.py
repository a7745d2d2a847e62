"""`facepipe run`: the whole pipeline on one machine, ending when a finite source is done.

It starts two Mosquitto brokers on free loopback ports (unless told to use existing ones),
then processor, forwarder and logger, waits until they are ready, starts the camera, and
when the camera has published everything, waits until the processor has stored it. Every
component runs as its own `facepipe <component>` process with the environment a chart would
give it. Beside them the gallery serves the store on 127.0.0.1 (address, user and a password new
each run printed on stderr and kept in <run dir>/gallery-login.json). The last line on stdout is
a JSON summary.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from facepipe import config
from facepipe.brokerauth import CloudAuth, mosquitto_passwd_available
from facepipe.brokers import BrokerSecurity, MosquittoBroker
from facepipe.config import RunSettings
from facepipe.gallery.auth import hash_password
from facepipe.observe import scrape
from facepipe.pki import LocalPKI, openssl_available
from facepipe.processes import ChildProcess, free_port

PROGRESS_SECONDS = 2.0
GALLERY_BROKER_USER = "gallery"
GALLERY_USER = "admin"


@dataclass(frozen=True)
class Uplink:
    """How the forwarder, the processor and the gallery reach the cloud broker (their own credentials each)."""

    forwarder: config.BrokerSettings
    processor: config.BrokerSettings
    gallery: config.BrokerSettings


def start_cloud_broker(settings: RunSettings, workdir: Path) -> tuple[MosquittoBroker, Uplink]:
    """run's cloud broker: open on loopback, or, with --secure-uplink, TLS + passwords + ACLs as in production."""
    if not settings.secure_uplink:
        broker = MosquittoBroker(workdir / "cloud-broker", name="cloud-broker", binary=settings.mosquitto).start()
        remote = replace(settings.remote, host=broker.host, port=broker.port, username="", password="", tls=False)
        return broker, Uplink(remote, remote, remote)
    for missing in (openssl_available(), mosquitto_passwd_available()):
        if missing:
            raise FileNotFoundError(f"--secure-uplink needs it: {missing}")
    pki = LocalPKI(workdir / "pki")
    server = pki.server()
    device = settings.camera.common.device_id
    auth = CloudAuth(
        {device: secrets.token_urlsafe(18)}, ("processor", secrets.token_urlsafe(18)), settings.remote.topic,
        readers={GALLERY_BROKER_USER: secrets.token_urlsafe(18)},
    )  # fmt: skip
    auth.write(workdir / "auth")
    security = BrokerSecurity(
        password_file=auth.password_file, acl_file=auth.acl_file, tls_port=free_port(),
        ca_file=pki.ca_file, cert_file=server.cert_file, key_file=server.key_file,
    )  # fmt: skip
    broker = MosquittoBroker(workdir / "cloud-broker", name="cloud-broker", binary=settings.mosquitto, security=security).start()
    assert security.tls_port is not None
    tls = replace(settings.remote, host=broker.host, port=security.tls_port, tls=True, ca_file=str(pki.ca_file))
    return broker, Uplink(
        forwarder=replace(tls, username=device, password=auth.devices[device]),
        processor=replace(tls, username=auth.processor[0], password=auth.processor[1]),
        gallery=replace(tls, username=GALLERY_BROKER_USER, password=auth.readers[GALLERY_BROKER_USER]),
    )


class ComponentProcess:
    """One `facepipe <component>` process configured through its environment, as a chart does."""

    def __init__(self, name: str, settings: Any, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.summary_path = workdir / f"{name}.summary.json"
        self.env = dict(os.environ)
        self.env.update(config.to_environment(settings))
        if self.env.get("FACEPIPE_SPOOL_DIR") == config.DEFAULT_SPOOL_DIR:
            self.env["FACEPIPE_SPOOL_DIR"] = str(workdir / f"{name}-spool")  # kept across restarts of this process
        self.env.update(extra_env or {})
        self.env.update(FACEPIPE_HTTP_HOST="127.0.0.1", FACEPIPE_HTTP_PORT=str(self.port), FACEPIPE_SUMMARY_FILE=str(self.summary_path))
        self.process = ChildProcess(name, [sys.executable, "-m", "facepipe", name], workdir / f"{name}.log", env=self.env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ComponentProcess:
        self.summary_path.unlink(missing_ok=True)
        self.process.start()
        return self

    def metrics(self) -> dict[str, float]:
        """The component's current metrics ({} while it does not answer)."""
        try:
            return scrape(self.url + "/metrics")
        except OSError:
            return {}

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> ComponentProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"{self.name} exited (code {self.process.returncode()}):\n{self.process.log_tail()}")
            if self.is_ready():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready within {timeout:.0f}s:\n{self.process.log_tail()}")

    def summary(self) -> dict[str, Any]:
        """The counters the component wrote when it stopped ({} if it has not)."""
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}

    def stop(self) -> int | None:
        return self.process.stop()

    def kill(self) -> None:
        self.process.kill()


@dataclass(frozen=True)
class GalleryLogin:
    """Where run's gallery is and how to get in; also written to <run dir>/gallery-login.json."""

    url: str
    user: str
    password: str
    users_file: str
    port: int


def start_gallery(settings: RunSettings, workdir: Path, broker: config.BrokerSettings) -> tuple[ComponentProcess, GalleryLogin]:
    """The gallery over run's store on 127.0.0.1, with live updates and one admin whose password is new each run."""
    password = secrets.token_urlsafe(12)
    users = workdir / "gallery-users"
    users.write_text(f"{GALLERY_USER}:admin:{hash_password(password)}\n")
    users.chmod(0o600)
    port = settings.gallery_port or free_port()
    gallery = config.GallerySettings(
        common=replace(settings.camera.common, device_id="cloud"), storage=settings.storage, broker=broker,
        host="127.0.0.1", port=port, users_file=str(users), secure_cookies=False, session_secret=secrets.token_urlsafe(32),
    )  # fmt: skip
    login = GalleryLogin(f"http://127.0.0.1:{port}/", GALLERY_USER, password, str(users), port)
    path = workdir / "gallery-login.json"
    path.write_text(json.dumps(vars(login)) + "\n")
    path.chmod(0o600)
    return ComponentProcess("gallery", gallery, workdir).start(), login


class Pipeline:
    """The four component processes of one run."""

    def __init__(self, settings: RunSettings, workdir: Path, local: tuple[str, int], uplink: Uplink) -> None:
        camera = settings.camera
        edge = replace(camera.broker, host=local[0], port=local[1])
        common = camera.common
        self.components = {
            "processor": ComponentProcess(
                "processor",
                config.ProcessorSettings(common=replace(common, device_id="cloud"), broker=uplink.processor, storage=settings.storage),
                workdir,
            ),
            "forwarder": ComponentProcess(
                "forwarder", config.ForwarderSettings(common=common, local=edge, remote=uplink.forwarder, status=camera.status), workdir
            ),
            "logger": ComponentProcess("logger", config.LoggerSettings(common=common, broker=edge, status=camera.status), workdir),
            "camera": ComponentProcess("camera", replace(camera, broker=edge), workdir),
        }

    def __getitem__(self, name: str) -> ComponentProcess:
        return self.components[name]

    def stop(self) -> None:
        for name in ("camera", "logger", "forwarder", "processor"):
            self.components[name].stop()


def _wait_stored(pipeline: Pipeline, published: int, settings: RunSettings, log: logging.Logger) -> None:
    """Wait until the processor has handled `published` faces, or no progress for drain_timeout."""
    last_progress, last_done, last_report = time.monotonic(), -1.0, 0.0
    while True:
        processor = pipeline["processor"].metrics()
        done = processor.get("facepipe_processor_stored_total", 0.0) + processor.get("facepipe_processor_rejected_total", 0.0)
        now = time.monotonic()
        if done >= published:
            return
        if done > last_done:
            last_done, last_progress = done, now
        if now - last_progress > settings.drain_timeout:
            log.error("run.drain_timeout", extra={"published": published, "handled": done, "seconds": settings.drain_timeout})
            return
        if now - last_report >= PROGRESS_SECONDS:
            log.info("run.draining", extra={"published": published, "handled": int(done)})
            last_report = now
        time.sleep(0.1)


class Progress:
    """run's progress line. The camera's counters are the last it reported: while it finishes it no
    longer answers, and once it has exited they come from its summary, so the line never falls back to 0."""

    def __init__(self, pipeline: Pipeline, log: logging.Logger) -> None:
        self.pipeline = pipeline
        self.log = log
        self.frames = self.published = 0

    def camera_finished(self, summary: dict[str, Any]) -> None:
        self.frames, self.published = int(summary.get("frames", self.frames)), int(summary.get("published", self.published))

    def report(self) -> None:
        camera = self.pipeline["camera"].metrics()
        if camera:
            self.frames = int(camera.get("facepipe_camera_frames_total", self.frames))
            self.published = int(camera.get("facepipe_camera_faces_published_total", self.published))
        stored = int(self.pipeline["processor"].metrics().get("facepipe_processor_stored_total", 0))
        self.log.info("run.progress", extra={"frames": self.frames, "published": self.published, "stored": stored})


def run_pipeline(settings: RunSettings, log: logging.Logger) -> int:
    workdir = Path(settings.run_dir) if settings.run_dir else Path(tempfile.mkdtemp(prefix="facepipe-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    brokers: list[MosquittoBroker] = []
    pipeline: Pipeline | None = None
    gallery: ComponentProcess | None = None
    login: GalleryLogin | None = None
    started = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if settings.external_brokers:
            local = (settings.camera.broker.host, settings.camera.broker.port)
            uplink = Uplink(settings.remote, settings.remote, settings.remote)
        else:
            edge_broker = MosquittoBroker(workdir / "edge-broker", name="edge-broker", binary=settings.mosquitto).start()
            brokers.append(edge_broker)
            cloud_broker, uplink = start_cloud_broker(settings, workdir)
            brokers.append(cloud_broker)
            local = (edge_broker.host, edge_broker.port)
        log.info("run.brokers", extra={"edge": f"{local[0]}:{local[1]}", "cloud": uplink.forwarder.address, "workdir": str(workdir)})
        pipeline = Pipeline(settings, workdir, local, uplink)
        for name in ("processor", "forwarder", "logger"):
            pipeline[name].start()
        if settings.gallery:
            gallery, login = start_gallery(settings, workdir, uplink.gallery)
        for name in ("processor", "forwarder", "logger"):
            pipeline[name].wait_ready()
        if gallery is not None and login is not None:
            gallery.wait_ready()
            # A line for the person at the terminal (not the log: it holds a password); also in gallery-login.json.
            print(f"gallery: {login.url}  user {login.user}  password {login.password}", file=sys.stderr, flush=True)
        camera = pipeline["camera"].start().process
        progress = Progress(pipeline, log)
        last_report = time.monotonic()
        while camera.running():
            time.sleep(0.1)
            if time.monotonic() - last_report >= PROGRESS_SECONDS:
                progress.report()
                last_report = time.monotonic()
        if camera.returncode() != 0:
            log.error("run.camera_failed", extra={"code": camera.returncode(), "log": camera.log_tail(10)})
            print(camera.log_tail(10), file=sys.stderr)
            return 2
        camera_summary = pipeline["camera"].summary()
        progress.camera_finished(camera_summary)
        _wait_stored(pipeline, int(camera_summary.get("published", 0)), settings, log)
        progress.report()
        pipeline.stop()
        result = _result(settings, pipeline, camera_summary, time.monotonic() - started, workdir)
        result["gallery"] = login.url if login is not None else None
        print(json.dumps(result), flush=True)
        return 0 if result["lost"] == 0 else 1
    finally:
        if pipeline is not None:
            pipeline.stop()
        if gallery is not None:
            gallery.stop()
        for broker in brokers:
            broker.stop()


def _result(settings: RunSettings, pipeline: Pipeline, camera: dict[str, Any], seconds: float, workdir: Path) -> dict[str, Any]:
    forwarder, processor, logger = (pipeline[n].summary() for n in ("forwarder", "processor", "logger"))
    published = int(camera.get("published", 0))
    stored, rejected = int(processor.get("stored", 0)), int(processor.get("rejected", 0))
    return {
        "source": config.redact_url(settings.camera.source),
        "store": settings.storage.store,
        "frames": camera.get("frames", 0),
        "frames_dropped": camera.get("frames_dropped", 0),
        "frames_skipped_no_motion": camera.get("frames_skipped_no_motion", 0),
        "frames_skipped_stable": camera.get("frames_skipped_stable", 0),
        "faces_detected": camera.get("faces_detected", 0),
        "published": published,
        "forwarded": forwarder.get("forwarded", 0),
        "stored": stored,
        "rejected": rejected,
        "lost": max(0, published - stored - rejected) + int(camera.get("dropped", 0)),
        "logger_seen": logger.get("faces", 0),
        "logger_lost": logger.get("lost", 0),
        "seconds": round(seconds, 2),
        "logs": str(workdir),
    }
