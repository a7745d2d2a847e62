"""`facepipe run`: the whole pipeline on one machine, ending when a finite source is done.

It starts two Mosquitto brokers on free loopback ports (unless told to use existing ones),
then processor, forwarder and logger, waits until they are ready, starts the camera, and
when the camera has published everything, waits until the processor has stored it. Every
component runs as its own `facepipe <component>` process with the environment a chart would
give it. The last line on stdout is a JSON summary.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from facepipe import config
from facepipe.brokers import MosquittoBroker
from facepipe.config import RunSettings
from facepipe.observe import scrape
from facepipe.processes import ChildProcess, free_port

PROGRESS_SECONDS = 2.0


class Pipeline:
    """The four component processes of one run and where to watch them."""

    def __init__(self, settings: RunSettings, workdir: Path, local: tuple[str, int], remote: config.BrokerSettings) -> None:
        self.settings = settings
        self.workdir = workdir
        self.ports: dict[str, int] = {}
        self.procs: dict[str, ChildProcess] = {}
        camera = settings.camera
        edge = replace(camera.broker, host=local[0], port=local[1])
        common = replace(camera.common, http_host="127.0.0.1")
        self.env: dict[str, dict[str, str]] = {
            "processor": config.to_environment(
                config.ProcessorSettings(common=replace(common, device_id="cloud"), broker=remote, storage=settings.storage)
            ),
            "forwarder": config.to_environment(config.ForwarderSettings(common=common, local=edge, remote=remote)),
            "logger": config.to_environment(config.LoggerSettings(common=common, broker=edge)),
            "camera": config.to_environment(replace(camera, common=common, broker=edge)),
        }

    def start(self, name: str) -> None:
        port = free_port()
        self.ports[name] = port
        env = dict(self.env[name], FACEPIPE_HTTP_PORT=str(port), FACEPIPE_SUMMARY_FILE=str(self.workdir / f"{name}.summary.json"))
        argv = [sys.executable, "-m", "facepipe", name]
        self.procs[name] = ChildProcess(name, argv, self.workdir / f"{name}.log", env=_inherit(env)).start()

    def metrics(self, name: str) -> dict[str, float]:
        try:
            return scrape(f"http://127.0.0.1:{self.ports[name]}/metrics")
        except OSError:
            return {}

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if not proc.running():
                raise RuntimeError(f"{name} exited (code {proc.returncode()}):\n{proc.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{name} not ready within {timeout:.0f}s:\n{self.procs[name].log_tail()}")

    def summary(self, name: str) -> dict[str, Any]:
        path = self.workdir / f"{name}.summary.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def stop(self) -> None:
        for name in ("camera", "logger", "forwarder", "processor"):
            if name in self.procs:
                self.procs[name].stop()


def _inherit(env: dict[str, str]) -> dict[str, str]:
    import os

    merged = dict(os.environ)
    merged.update(env)
    return merged


def _wait_stored(pipeline: Pipeline, published: int, settings: RunSettings, log: logging.Logger) -> None:
    """Wait until the processor has handled `published` faces, or no progress for drain_timeout."""
    last_progress, last_done, last_report = time.monotonic(), -1.0, 0.0
    while True:
        processor = pipeline.metrics("processor")
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


def _report_progress(pipeline: Pipeline, log: logging.Logger) -> None:
    camera = pipeline.metrics("camera")
    processor = pipeline.metrics("processor")
    log.info(
        "run.progress",
        extra={
            "frames": int(camera.get("facepipe_camera_frames_total", 0)),
            "published": int(camera.get("facepipe_camera_faces_published_total", 0)),
            "stored": int(processor.get("facepipe_processor_stored_total", 0)),
        },
    )


def run_pipeline(settings: RunSettings, log: logging.Logger) -> int:
    workdir = Path(settings.workdir) if settings.workdir else Path(tempfile.mkdtemp(prefix="facepipe-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    brokers: list[MosquittoBroker] = []
    pipeline: Pipeline | None = None
    started = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if settings.external_brokers:
            local = (settings.camera.broker.host, settings.camera.broker.port)
            remote = settings.remote
        else:
            edge_broker = MosquittoBroker(workdir / "edge-broker", name="edge-broker", binary=settings.mosquitto).start()
            cloud_broker = MosquittoBroker(workdir / "cloud-broker", name="cloud-broker", binary=settings.mosquitto).start()
            brokers += [edge_broker, cloud_broker]
            local = (edge_broker.host, edge_broker.port)
            remote = replace(settings.remote, host=cloud_broker.host, port=cloud_broker.port, username="", password="", tls=False)
        log.info("run.brokers", extra={"edge": f"{local[0]}:{local[1]}", "cloud": f"{remote.host}:{remote.port}", "workdir": str(workdir)})
        pipeline = Pipeline(settings, workdir, local, remote)
        for name in ("processor", "forwarder", "logger"):
            pipeline.start(name)
        for name in ("processor", "forwarder", "logger"):
            pipeline.wait_ready(name)
        pipeline.start("camera")
        camera = pipeline.procs["camera"]
        last_report = time.monotonic()
        while camera.running():
            time.sleep(0.1)
            if time.monotonic() - last_report >= PROGRESS_SECONDS:
                _report_progress(pipeline, log)
                last_report = time.monotonic()
        if camera.returncode() != 0:
            log.error("run.camera_failed", extra={"code": camera.returncode(), "log": camera.log_tail(10)})
            print(camera.log_tail(10), file=sys.stderr)
            return 2
        camera_summary = pipeline.summary("camera")
        _wait_stored(pipeline, int(camera_summary.get("published", 0)), settings, log)
        pipeline.stop()
        result = _result(settings, pipeline, camera_summary, time.monotonic() - started, workdir)
        print(json.dumps(result), flush=True)
        return 0 if result["lost"] == 0 else 1
    finally:
        if pipeline is not None:
            pipeline.stop()
        for broker in brokers:
            broker.stop()


def _result(settings: RunSettings, pipeline: Pipeline, camera: dict[str, Any], seconds: float, workdir: Path) -> dict[str, Any]:
    forwarder, processor, logger = (pipeline.summary(n) for n in ("forwarder", "processor", "logger"))
    published = int(camera.get("published", 0))
    stored, rejected = int(processor.get("stored", 0)), int(processor.get("rejected", 0))
    return {
        "source": settings.camera.source,
        "store": settings.storage.store,
        "frames": camera.get("frames", 0),
        "frames_dropped": camera.get("frames_dropped", 0),
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
