"""One `facepipe <component>` process configured through its environment, as a chart configures it."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from facepipe import config, contract
from facepipe.observe import scrape
from facepipe_dev.loadgen import CountingSubscriber
from facepipe_dev.processes import ChildProcess, free_port, poll


class ComponentProcess:
    """`facepipe <name>` with `settings` as environment variables, its HTTP endpoint on a free loopback port,
    its log and its exit summary in `workdir`."""

    def __init__(self, name: str, settings: Any, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.settings = settings
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

    def metric(self, name: str) -> float:
        """One sample of its current metrics (0 while it does not answer or has no such sample)."""
        return self.metrics().get(name, 0.0)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> ComponentProcess:
        """Wait for /readyz; raise with the log's tail if the process exits or is not ready in time."""
        if not poll(lambda: self.process.alive_or_raise() and self.is_ready(), timeout, 0.1):
            raise TimeoutError(f"{self.name} not ready within {timeout:.0f}s:\n{self.process.log_tail()}")
        return self

    def summary(self) -> dict[str, Any]:
        """The counters the component wrote when it stopped ({} if it has not)."""
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}

    def stop(self) -> int | None:
        return self.process.stop()

    def kill(self) -> None:
        self.process.kill()


def start_ready(*components: ComponentProcess) -> tuple[ComponentProcess, ...]:
    """Start the components, then wait until each is ready."""
    for component in components:
        component.start()
    for component in components:
        component.wait_ready()
    return components


def camera_to_end(
    settings: Any, host: str, port: int, workdir: Path, watch: Callable[[int | None], None] | None = None, timeout: float = 180.0
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Run the camera (`settings`, its broker replaced by host:port) on a file or folder to its end:
    (its summary, the user properties of every message it published, read back from the broker).
    `watch`, if given, is called with the camera's pid once it runs and with None when it ended."""
    collector = CountingSubscriber(host, port, contract.DEFAULT_LOCAL_TOPIC, keep=True)
    camera = ComponentProcess("camera", replace(settings, broker=config.BrokerSettings(host=host, port=port)), workdir)
    try:
        camera.start()
        if watch is not None:
            watch(camera.process.pid)
        poll(lambda: not camera.process.running(), timeout)
        if watch is not None:
            watch(None)
        camera.stop()
        summary = camera.summary()
        published = int(summary.get("published", 0))
        with collector.lock:
            collector.lock.wait_for(lambda: len(collector.records) >= published, 10)
            return summary, list(collector.records)
    finally:
        collector.close()
