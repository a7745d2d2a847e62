"""`facepipe run`: the whole pipeline on one machine, ending when a finite source is done.

It starts two Mosquitto brokers on free loopback ports (unless told to use existing ones),
then processor, forwarder and logger, waits until they are ready, starts the camera, and
when the camera has published everything, waits until the processor has stored it. Every
component runs as its own `facepipe <component>` process with the environment a chart would
give it (the devkit's rig). Beside them the gallery serves the store on 127.0.0.1 (address, user and
a password new each run printed on stderr and kept in <run dir>/gallery-login.json). The last line
on stdout is a JSON summary.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from facepipe import config
from facepipe.config import RunSettings
from facepipe.gallery.auth import hash_password
from facepipe.metric_names import CAMERA_FACES_PUBLISHED, CAMERA_FRAMES, PROCESSOR_REJECTED, PROCESSOR_STORED
from facepipe_dev.components import ComponentProcess, start_ready
from facepipe_dev.processes import free_port, wait_progress
from facepipe_dev.rig import Rig, Uplink
from facepipe_dev.store import Store

PROGRESS_SECONDS = 2.0
GALLERY_USER = "admin"


def make_rig(settings: RunSettings, workdir: Path) -> Rig:
    """run's rig: brokers of its own (the cloud one secured with --secure-uplink), or the configured ones."""
    camera = settings.camera
    options: dict[str, Any] = {"common": camera.common, "store": Store(settings.storage)}
    if settings.external_brokers:
        return Rig(workdir, camera.broker, Uplink(settings.remote, settings.remote, settings.remote), **options)
    remote = settings.remote if settings.secure_uplink else replace(settings.remote, username="", password="", tls=False)
    return Rig.start(workdir, mosquitto=settings.mosquitto, secure=settings.secure_uplink, local=camera.broker, remote=remote, **options)


@dataclass(frozen=True)
class GalleryLogin:
    """Where run's gallery is and how to get in; also written to <run dir>/gallery-login.json."""

    url: str
    user: str
    password: str
    users_file: str
    port: int


def add_gallery(settings: RunSettings, rig: Rig) -> tuple[ComponentProcess, GalleryLogin]:
    """The gallery over run's store on 127.0.0.1, with live updates and one admin whose password is new each run."""
    password = secrets.token_urlsafe(12)
    users = rig.workdir / "gallery-users"
    users.write_text(f"{GALLERY_USER}:admin:{hash_password(password)}\n")
    users.chmod(0o600)
    port = settings.gallery_port or free_port()
    gallery = rig.gallery(users, host="127.0.0.1", port=port, secure_cookies=False, session_secret=secrets.token_urlsafe(32))
    login = GalleryLogin(f"http://127.0.0.1:{port}/", GALLERY_USER, password, str(users), port)
    path = rig.workdir / "gallery-login.json"
    path.write_text(json.dumps(vars(login)) + "\n")
    path.chmod(0o600)
    return gallery, login


def _stored_and_rejected(rig: Rig) -> float:
    processor = rig["processor"].metrics()
    return processor.get(PROCESSOR_STORED, 0.0) + processor.get(PROCESSOR_REJECTED, 0.0)


def _wait_stored(rig: Rig, published: int, settings: RunSettings, log: logging.Logger) -> None:
    """Wait until the processor has handled `published` faces, or no progress for drain_timeout."""

    def report(done: float) -> None:
        log.info("run.draining", extra={"published": published, "handled": int(done)})

    done = wait_progress(
        lambda: _stored_and_rejected(rig), published, settings.drain_timeout, interval=0.1, every=(PROGRESS_SECONDS, report)
    )
    if done < published:
        log.error("run.drain_timeout", extra={"published": published, "handled": done, "seconds": settings.drain_timeout})


class Progress:
    """run's progress line. The camera's counters are the last it reported: while it finishes it no
    longer answers, and once it has exited they come from its summary, so the line never falls back to 0."""

    def __init__(self, rig: Rig, log: logging.Logger) -> None:
        self.rig = rig
        self.log = log
        self.frames = self.published = 0

    def camera_finished(self, summary: dict[str, Any]) -> None:
        self.frames, self.published = int(summary.get("frames", self.frames)), int(summary.get("published", self.published))

    def report(self) -> None:
        camera = self.rig["camera"].metrics()
        if camera:
            self.frames = int(camera.get(CAMERA_FRAMES, self.frames))
            self.published = int(camera.get(CAMERA_FACES_PUBLISHED, self.published))
        stored = int(self.rig["processor"].metrics().get(PROCESSOR_STORED, 0))
        self.log.info("run.progress", extra={"frames": self.frames, "published": self.published, "stored": stored})


def run_pipeline(settings: RunSettings, log: logging.Logger) -> int:
    workdir = Path(settings.run_dir) if settings.run_dir else Path(tempfile.mkdtemp(prefix="facepipe-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rig: Rig | None = None
    login: GalleryLogin | None = None
    started = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        rig = make_rig(settings, workdir)
        edge = f"{rig.local.host}:{rig.local.port}"
        log.info("run.brokers", extra={"edge": edge, "cloud": rig.uplink.forwarder.address, "workdir": str(workdir)})
        status = settings.camera.status
        components = [rig.processor(), rig.forwarder(status=status), rig.logger(status=status)]
        if settings.gallery:
            gallery, login = add_gallery(settings, rig)
            components.append(gallery)
        start_ready(*components)
        if login is not None:
            # A line for the person at the terminal (not the log: it holds a password); also in gallery-login.json.
            print(f"gallery: {login.url}  user {login.user}  password {login.password}", file=sys.stderr, flush=True)
        camera = rig.camera(settings.camera).start().process
        progress = Progress(rig, log)
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
        camera_summary = rig["camera"].summary()
        progress.camera_finished(camera_summary)
        _wait_stored(rig, int(camera_summary.get("published", 0)), settings, log)
        progress.report()
        rig.stop_components()
        result = _result(settings, rig, camera_summary, time.monotonic() - started, workdir)
        result["gallery"] = login.url if login is not None else None
        print(json.dumps(result), flush=True)
        return 0 if result["lost"] == 0 else 1
    finally:
        if rig is not None:
            rig.close()


def _result(settings: RunSettings, rig: Rig, camera: dict[str, Any], seconds: float, workdir: Path) -> dict[str, Any]:
    forwarder, processor, logger = (rig[n].summary() for n in ("forwarder", "processor", "logger"))
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
