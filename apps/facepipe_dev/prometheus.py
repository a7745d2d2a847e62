"""Prometheus and promtool for the monitoring tests.

Built from the Go module proxy by `bash .ci/install-prometheus.sh` into
`${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/prometheus-3.16.0/bin`
(or FACEPIPE_PROMETHEUS_BIN: a directory holding both binaries).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from facepipe_dev.paths import REPO
from facepipe_dev.processes import ChildProcess, free_port

PROMETHEUS_VERSION = "3.16.0"
INSTALL_HINT = "run bash .ci/install-prometheus.sh (or set FACEPIPE_PROMETHEUS_BIN to a directory with prometheus and promtool)"
RULE_FILES = {
    "face-edge": REPO / "charts" / "face-edge" / "files" / "prometheus-rules.yaml",
    "face-cloud": REPO / "charts" / "face-cloud" / "files" / "prometheus-rules.yaml",
}


def bin_dir() -> Path:
    configured = os.environ.get("FACEPIPE_PROMETHEUS_BIN")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("FACEPIPE_TOOLS_CACHE", "/var/cache/facepipe-tools"))
    return cache / f"prometheus-{PROMETHEUS_VERSION}" / "bin"


def binaries() -> tuple[Path | None, str]:
    """(bin dir, "") when prometheus and promtool are there, else (None, why not) for pytest.skip."""
    directory = bin_dir()
    missing = [name for name in ("prometheus", "promtool") if not os.access(directory / name, os.X_OK)]
    if missing:
        return None, f"{', '.join(missing)} not in {directory}: {INSTALL_HINT}"
    return directory, ""


class PrometheusServer:
    """A real Prometheus on a free loopback port: scrapes `targets` (job -> host:port) and evaluates
    the shipped rules every `interval`, with every rule's `for:` shortened to `pending` (the test
    config: the expressions are the shipped ones, only the waiting is shorter)."""

    def __init__(
        self, workdir: Path, binaries: Path, targets: dict[str, str], rule_files: list[Path], interval: str = "1s", pending: str = "2s"
    ) -> None:
        self.workdir = workdir
        self.binaries = binaries
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        rules = []
        for source in rule_files:
            doc = yaml.safe_load(source.read_text())
            for group in doc["groups"]:
                for rule in group["rules"]:
                    if "for" in rule:
                        rule["for"] = pending
            rules.append(workdir / f"rules-{source.parent.parent.name}.yaml")
            rules[-1].write_text(yaml.safe_dump(doc, sort_keys=False))
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(r) for r in rules],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()],
        }
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [
            str(binaries / "prometheus"), f"--config.file={self.config_file}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ]  # fmt: skip
        self.process = ChildProcess("prometheus", argv, workdir / "prometheus.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_config(self) -> str:
        """`promtool check config` of the generated configuration (it also checks the rule files)."""
        done = subprocess.run([str(self.binaries / "promtool"), "check", "config", str(self.config_file)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        self.process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"prometheus exited (code {self.process.returncode()}):\n{self.process.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready within {timeout:.0f}s:\n{self.process.log_tail()}")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (each {"metric": labels, "value": [t, "v"]}); an error fails the test."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [{"metric": {}, "value": data["result"]}]

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, str]]:
        """The labels of each `name` alert in `state` (firing or pending), as Prometheus's API reports them."""
        return [a["labels"] for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name and a["state"] == state]

    def targets_up(self) -> dict[str, bool]:
        return {t["labels"]["job"]: t["health"] == "up" for t in self.api("targets")["activeTargets"]}

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
