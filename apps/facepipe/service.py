"""The life cycle every long-running component shares: HTTP endpoints, signals, summary."""

from __future__ import annotations

import errno
import json
import logging
import secrets
import signal
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Info

from facepipe import __version__
from facepipe.config import CommonSettings
from facepipe.errors import FatalError
from facepipe.mqtt import LinkMetrics
from facepipe.observe import HealthServer


class Component(ABC):
    """A component: `run` blocks until `stop` is set (or a finite source ends)."""

    name: str = "component"

    def __init__(self, common: CommonSettings, log: logging.Logger) -> None:
        self.common = common
        self.log = log
        self.registry = CollectorRegistry()
        self.link_metrics = LinkMetrics(self.registry)
        self.boot = secrets.token_hex(4)  # this process run: the faces' `boot`, the status messages'
        # facepipe_component_info{component, device, version} 1: lets rules join a target's metrics to its device.
        Info("facepipe_component", "which component this is, on which device", registry=self.registry).info(
            {"component": self.name, "device": common.device_id, "version": __version__}
        )

    def identity(self) -> tuple[str, str, str]:
        """(device, component, boot): who a status message is from."""
        return self.common.device_id, self.name, self.boot

    @abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Do the work until `stop` is set; release every resource before returning."""

    @abstractmethod
    def ready(self) -> bool:
        """True when the component can do its job now (brokers connected, store reachable)."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """Counters worth reporting when the component stops."""


PROGRESS_SECONDS = 30.0


def _report_progress(component: Component, stop: threading.Event) -> None:
    """Log the component's counters every PROGRESS_SECONDS while they change: a long run shows progress."""
    last: dict[str, Any] = {}
    while not stop.wait(PROGRESS_SECONDS):
        now = component.summary()
        if now != last:
            component.log.info("progress", extra={"summary": now})
            last = now


def port_error(exc: OSError, host: str, port: int, serves: str, setting: str) -> FatalError:
    """The one-line error for a port a component cannot listen on, naming the setting that moves it."""
    problem = "is already in use (another component on this host?)" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc.strerror}"
    return FatalError(f"port {port} on {host} for {serves} {problem}; give each component its own port with {setting}")


def start_health_server(component: Component) -> HealthServer | None:
    """The /healthz /readyz /metrics server on FACEPIPE_HTTP_PORT (None when that is 0); a port that
    cannot be had stops the component with a FatalError naming the port and the setting."""
    common = component.common
    if not common.http_port:
        return None
    try:
        health = HealthServer(common.http_host, common.http_port, component.registry, component.ready).start()
    except OSError as exc:
        raise port_error(
            exc,
            common.http_host,
            common.http_port,
            "/healthz /readyz /metrics",
            "FACEPIPE_HTTP_PORT (--http-port), or 0 to turn the server off",
        ) from None
    component.log.info("http.listening", extra={"address": f"{common.http_host}:{health.port}"})
    return health


def serve(component: Component) -> int:
    """Run a component with /healthz /readyz /metrics, stopping cleanly on SIGTERM or SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        component.log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health = start_health_server(component)
    threading.Thread(target=_report_progress, args=(component, stop), name="progress", daemon=True).start()
    try:
        component.run(stop)
    finally:
        if health is not None:
            health.stop()
    summary = component.summary()
    if component.common.summary_file:
        Path(component.common.summary_file).write_text(json.dumps(summary) + "\n")
    component.log.info("stopped", extra={"summary": summary})
    return 0
