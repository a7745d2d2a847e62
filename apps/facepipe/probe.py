"""probe: publish one synthetic face and wait until a component's counter shows it, or sign in to a gallery
and read its API (`helm test`)."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
from prometheus_client import CollectorRegistry

from facepipe import imaging
from facepipe.config import ProbeSettings
from facepipe.contract import PNG, FaceMeta
from facepipe.mqtt import BrokerLink, LinkMetrics, client_id
from facepipe.observe import scrape


def synthetic_face(size: int = 96) -> bytes:
    """A small drawn face as PNG: valid for every receiver, recognisable by eye."""
    image = np.full((size, size, 3), 235, np.uint8)
    centre = (size // 2, size // 2)
    cv2.circle(image, centre, size // 2 - 4, (80, 160, 220), -1)
    for dx in (-size // 6, size // 6):
        cv2.circle(image, (centre[0] + dx, centre[1] - size // 8), size // 14, (40, 40, 40), -1)
    cv2.ellipse(image, (centre[0], centre[1] + size // 8), (size // 5, size // 10), 0, 0, 180, (40, 40, 40), 3)
    return imaging.encode(image, PNG)


def probe_meta(device: str) -> FaceMeta:
    return FaceMeta(
        device=device, camera="probe", boot=secrets.token_hex(4), seq=0, captured_at=datetime.now(UTC),
        frame=0, face=0, bbox=(0, 0, 96, 96), score=1.0, detector="probe/synthetic",
    )  # fmt: skip


def read_counter(urls: str, metric: str) -> float | None:
    """The counter summed over every URL of a comma-separated list (one per replica); None if one fails."""
    total = 0.0
    for url in filter(None, (u.strip() for u in urls.split(","))):
        try:
            total += scrape(url).get(metric, 0.0)
        except (OSError, urllib.error.URLError, ValueError):
            return None
    return total


def _gallery_get(settings: ProbeSettings, path: str) -> Any:
    token = base64.b64encode(f"{settings.gallery_user}:{settings.gallery_password}".encode()).decode()
    request = urllib.request.Request(settings.gallery_url.rstrip("/") + path, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def probe_gallery(settings: ProbeSettings, log: logging.Logger) -> int:
    """0 once the gallery answers /api/status (its store reachable) and /api/devices for the probe's user, 1 at the timeout."""
    deadline = time.monotonic() + settings.timeout
    problem = "no answer yet"
    while time.monotonic() < deadline:
        try:
            status = _gallery_get(settings, "/api/status")
            if not status["store"]["ok"]:
                problem = f"the gallery cannot read its store: {status['store']['error']}"
            else:
                devices = _gallery_get(settings, "/api/devices")["devices"]
                log.info("probe.ok", extra={"gallery": settings.gallery_url, "devices": len(devices)})
                return 0
        except (OSError, ValueError, KeyError) as exc:  # URLError and HTTPError are OSErrors
            problem = str(exc)
        time.sleep(1)
    log.error("probe.failed", extra={"gallery": settings.gallery_url, "error": problem[:300]})
    return 1


def run_probe(settings: ProbeSettings, log: logging.Logger) -> int:
    """0 when the counter rose after the face was published (or the gallery answered), 1 otherwise."""
    if settings.gallery_url:
        return probe_gallery(settings, log)
    deadline = time.monotonic() + settings.timeout
    before = None
    if settings.metrics_url:
        while before is None and time.monotonic() < deadline:
            before = read_counter(settings.metrics_url, settings.metric)
            if before is None:
                time.sleep(1)
        if before is None:
            log.error("probe.failed", extra={"error": f"cannot read {settings.metric} at {settings.metrics_url}"})
            return 1
    broker = settings.broker
    link = BrokerLink(
        "target", broker, client_id(broker, "probe", settings.common.device_id), LinkMetrics(CollectorRegistry()), log
    ).start()
    try:
        if not link.connected.wait(max(0.0, deadline - time.monotonic())):
            log.error("probe.failed", extra={"error": f"cannot connect to {broker.address}"})
            return 1
        info = link.client.publish(broker.topic, synthetic_face(), qos=1, properties=probe_meta(settings.common.device_id).to_properties())
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        log.info("probe.published", extra={"topic": broker.topic, "broker": broker.address})
        if not settings.metrics_url:
            return 0
        while time.monotonic() < deadline:
            now = read_counter(settings.metrics_url, settings.metric)
            if now is not None and before is not None and now > before:
                log.info("probe.ok", extra={"metric": settings.metric, "before": before, "after": now})
                return 0
            time.sleep(0.5)
        log.error("probe.failed", extra={"error": f"{settings.metric} did not increase within {settings.timeout:.0f}s"})
        return 1
    finally:
        link.stop()
