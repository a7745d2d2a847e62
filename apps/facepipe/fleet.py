"""The fleet as the processor sees it: each edge component's retained status (relayed by its
device's forwarder) turned into metrics: online or not, last seen, and the camera's heartbeat."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from facepipe import contract
from facepipe.contract import Capture, ContractError, Status


@dataclass
class Seen:
    status: Status
    last_seen: float  # unix time


class Fleet(Collector):
    """Latest status per (device, component) and capture per (device, camera), as facepipe_fleet_* metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lock = threading.Lock()
        self.components: dict[tuple[str, str], Seen] = {}
        self.cameras: dict[tuple[str, str], Capture] = {}
        self.rejected = Counter(
            "facepipe_fleet_status_rejected_total", "status messages that break the contract, by reason", ["reason"], registry=registry
        )
        registry.register(self)

    def observe(self, device: str, component: str, payload: bytes, now: float | None = None) -> tuple[Status, bool]:
        """Take one status from `<base>/<device>/status/<component>`: (it, whether its state or run changed);
        raise ContractError (counted) when it is not valid."""
        try:
            status = Status.from_json(payload)
            if (status.device, status.component) != (device, component):
                raise ContractError("device_mismatch", f"status of {status.device}/{status.component} under {device}/{component}")
        except ContractError as exc:
            self.rejected.labels(exc.reason).inc()
            raise
        arrived = time.time() if now is None else now
        # A retained status can be old: it was seen when it was sent (never later than now, whatever the device's clock).
        seen = min(status.sent_at.timestamp(), arrived)
        with self.lock:
            # The newest message is the truth (a last will is sent_at when it was armed, so older than the
            # heartbeats before it); last seen only moves forward within one run of the component.
            previous = self.components.get((device, component))
            same_run = previous is not None and previous.status.boot == status.boot
            self.components[(device, component)] = Seen(status, max(seen, previous.last_seen) if same_run and previous else seen)
            if status.capture is not None:
                self.cameras[(device, status.capture.camera)] = status.capture
        return status, not same_run or previous is None or previous.status.state != status.state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "facepipe_fleet_up", "1 while the component's status says online, 0 once offline", labels=["device", "component"]
        )
        seen = GaugeMetricFamily(
            "facepipe_fleet_last_seen_timestamp_seconds",
            "when the component's newest status was sent (unix time)",
            labels=["device", "component"],
        )
        interval = GaugeMetricFamily(
            "facepipe_fleet_status_interval_seconds",
            "seconds between the component's status refreshes (0: none)",
            labels=["device", "component"],
        )
        source = GaugeMetricFamily(
            "facepipe_fleet_camera_source",
            "1 for the camera's video source state (contract.SOURCE_STATES)",
            labels=["device", "camera", "state"],
        )
        fps = GaugeMetricFamily("facepipe_fleet_camera_fps", "frames the camera read per second", labels=["device", "camera"])
        counters = {
            name: CounterMetricFamily(f"facepipe_fleet_camera_{name}", help_text, labels=["device", "camera"])
            for name, help_text in (
                ("frames_read", "frames the camera read since it started"),
                ("frames_analysed", "frames the camera analysed since it started"),
                ("faces", "faces the camera detected since it started"),
            )
        }
        with self.lock:
            components = list(self.components.items())
            cameras = list(self.cameras.items())
        for (device, component), entry in components:
            labels = [device, component]
            up.add_metric(labels, 1.0 if entry.status.state == "online" else 0.0)
            seen.add_metric(labels, entry.last_seen)
            interval.add_metric(labels, entry.status.interval)
        for (device, camera), capture in cameras:
            for state in contract.SOURCE_STATES:
                source.add_metric([device, camera, state], 1.0 if capture.source == state else 0.0)
            fps.add_metric([device, camera], capture.fps)
            for name, family in counters.items():
                family.add_metric([device, camera], getattr(capture, name))
        yield from (up, seen, interval, source, fps, *counters.values())
