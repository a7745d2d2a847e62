"""logger: one structured line per face seen on the edge broker, counters per device, loss by seq gaps."""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import Counter

from facepipe.config import LoggerSettings
from facepipe.contract import ContractError, FaceMeta, format_timestamp
from facepipe.mqtt import BrokerLink, client_id
from facepipe.service import Component


class SeqTracker:
    """Per (device, camera, boot): the last seq seen; reports gaps (lost) and repeats (duplicates)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str, str], int] = {}

    def observe(self, meta: FaceMeta) -> tuple[int, bool]:
        """Return (faces lost before this one, whether this one is a repeat)."""
        stream = (meta.device, meta.camera, meta.boot)
        previous = self.last.get(stream)
        if previous is not None and meta.seq <= previous:
            return 0, True
        self.last[stream] = meta.seq
        return (0 if previous is None else meta.seq - previous - 1), False


class FaceLogger(Component):
    name = "logger"

    def __init__(self, settings: LoggerSettings, log: logging.Logger) -> None:
        super().__init__(settings.common, log)
        self.settings = settings
        self.seqs = SeqTracker()
        self.faces = Counter("facepipe_logger_faces_total", "faces seen", ["device"], registry=self.registry)
        self.lost = Counter("facepipe_logger_lost_total", "faces missing from seq gaps", ["device"], registry=self.registry)
        self.duplicates = Counter("facepipe_logger_duplicates_total", "faces seen again (redelivery)", ["device"], registry=self.registry)
        self.malformed = Counter("facepipe_logger_malformed_total", "messages that break the contract", ["reason"], registry=self.registry)
        self.totals = {"faces": 0, "lost": 0, "duplicates": 0, "malformed": 0}
        self.lock = threading.Lock()
        broker = settings.broker
        self.link = BrokerLink(
            "local", broker, client_id(broker, "logger", settings.common.device_id), self.link_metrics, log,
            subscriptions=(broker.topic,), on_message=self.on_message,
        )  # fmt: skip

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            meta = FaceMeta.from_properties(getattr(msg, "properties", None))
        except ContractError as exc:
            self.malformed.labels(exc.reason).inc()
            self._count("malformed")
            self.log.warning(
                "face.malformed", extra={"topic": msg.topic, "bytes": len(msg.payload), "reason": exc.reason, "detail": exc.detail}
            )
            return
        lost, repeat = self.seqs.observe(meta)
        if repeat:
            self.duplicates.labels(meta.device).inc()
            self._count("duplicates")
            return
        if lost:
            self.lost.labels(meta.device).inc(lost)
            self._count("lost", lost)
            self.log.warning(
                "faces.lost", extra={"device": meta.device, "camera": meta.camera, "boot": meta.boot, "count": lost, "before_seq": meta.seq}
            )
        self.faces.labels(meta.device).inc()
        self._count("faces")
        self.log.info(
            "face",
            extra={
                "device": meta.device, "camera": meta.camera, "seq": meta.seq, "bbox": list(meta.bbox),
                "score": meta.score, "bytes": len(msg.payload), "captured_at": format_timestamp(meta.captured_at),
            },
        )  # fmt: skip

    def _count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.totals[name] += amount

    def run(self, stop: threading.Event) -> None:
        self.link.start()
        stop.wait()
        self.link.stop()

    def ready(self) -> bool:
        return self.link.connected.is_set()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.totals)
