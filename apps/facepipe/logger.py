"""logger: one structured line per face seen on the edge broker, counters per device, loss by seq gaps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import Counter

from facepipe import contract
from facepipe.config import LoggerSettings
from facepipe.contract import ContractError, FaceMeta, format_timestamp
from facepipe.metric_names import LOGGER_DUPLICATES, LOGGER_FACES, LOGGER_LOST
from facepipe.mqtt import BrokerLink, client_id
from facepipe.observe import counted
from facepipe.service import Component
from facepipe.status import StatusAnnouncer

LOSS_CHECK_SECONDS = 1.0


Stream = tuple[str, str, str]  # (device, camera, boot)


class SeqTracker:
    """Per (device, camera, boot): which seqs arrived; a missing seq counts as lost only after a grace period.

    Faces can arrive out of order (QoS 1 redelivery after a reconnect overtaken by new faces), so a
    gap is only a suspicion at first: a seq that turns up within `grace` seconds fills its gap; one
    that does not is reported lost. A seq at or below the newest one that was not missing is a repeat.
    """

    MAX_MISSING = 100_000  # per stream; a larger gap is reported lost at once

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self.newest: dict[Stream, int] = {}
        self.missing: dict[Stream, dict[int, float]] = {}

    def observe(self, meta: FaceMeta) -> bool:
        """Record a face; True when it is a repeat of one already seen."""
        stream = (meta.device, meta.camera, meta.boot)
        missing = self.missing.setdefault(stream, {})
        newest = self.newest.get(stream)
        if meta.seq in missing:
            del missing[meta.seq]
            return False
        if newest is not None and meta.seq <= newest:
            return True
        if newest is not None and meta.seq - newest - 1 <= self.MAX_MISSING:
            noticed = self.clock()
            missing.update(dict.fromkeys(range(newest + 1, meta.seq), noticed))
        elif newest is not None:
            missing.update(dict.fromkeys(range(newest + 1, meta.seq), float("-inf")))
        self.newest[stream] = meta.seq
        return False

    def expire(self) -> list[tuple[Stream, int, int]]:
        """Runs (stream, first seq, last seq) of faces missing for longer than the grace period: lost."""
        cutoff = self.clock() - self.grace
        runs: list[tuple[Stream, int, int]] = []
        for stream, missing in self.missing.items():
            lost = sorted(seq for seq, noticed in missing.items() if noticed <= cutoff)
            for seq in lost:
                del missing[seq]
                if runs and runs[-1][0] == stream and runs[-1][2] == seq - 1:
                    runs[-1] = (stream, runs[-1][1], seq)
                else:
                    runs.append((stream, seq, seq))
        return runs


class FaceLogger(Component):
    name = "logger"

    def __init__(self, settings: LoggerSettings, log: logging.Logger) -> None:
        super().__init__(settings.common, log)
        self.settings = settings
        self.seqs = SeqTracker(settings.loss_grace_seconds)
        self.faces = Counter(LOGGER_FACES, "faces seen", ["device"], registry=self.registry)
        self.lost = Counter(LOGGER_LOST, "faces missing from seq gaps", ["device"], registry=self.registry)
        self.duplicates = Counter(LOGGER_DUPLICATES, "faces seen again (redelivery)", ["device"], registry=self.registry)
        self.malformed = Counter("facepipe_logger_malformed_total", "messages that break the contract", ["reason"], registry=self.registry)
        for counter in (self.faces, self.lost, self.duplicates):  # this device's series exist at 0 from the start
            counter.labels(settings.common.device_id)
        self.lock = threading.Lock()  # the seq tracker: paho's thread and the loss check
        broker = settings.broker
        self.link = BrokerLink(
            "local", broker, client_id(broker, "logger", settings.common.device_id), self.link_metrics, log,
            subscriptions=(broker.topic,), on_message=self.on_message,
        )  # fmt: skip
        self.status = StatusAnnouncer(
            self.link, contract.status_topic(broker.topic, self.name), self.identity(), settings.status.status_interval
        )

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            meta = FaceMeta.from_properties(getattr(msg, "properties", None))
        except ContractError as exc:
            self.malformed.labels(exc.reason).inc()
            self.log.warning(
                "face.malformed", extra={"topic": msg.topic, "bytes": len(msg.payload), "reason": exc.reason, "detail": exc.detail}
            )
            return
        with self.lock:
            repeat = self.seqs.observe(meta)
        if repeat:
            self.duplicates.labels(meta.device).inc()
            return
        self.faces.labels(meta.device).inc()
        self.log.info(
            "face",
            extra={
                "device": meta.device, "camera": meta.camera, "seq": meta.seq, "bbox": list(meta.bbox),
                "score": meta.score, "bytes": len(msg.payload), "captured_at": format_timestamp(meta.captured_at),
            },
        )  # fmt: skip

    def report_losses(self) -> None:
        """Count and log the faces whose gap the grace period did not fill."""
        with self.lock:
            runs = self.seqs.expire()
        for (device, camera, boot), first, last in runs:
            count = last - first + 1
            self.lost.labels(device).inc(count)
            self.log.warning(
                "faces.lost",
                extra={"device": device, "camera": camera, "boot": boot, "count": count, "first_seq": first, "before_seq": last + 1},
            )

    def run(self, stop: threading.Event) -> None:
        self.link.start()
        self.status.start()
        while not stop.wait(LOSS_CHECK_SECONDS):
            self.report_losses()
        self.status.stop()
        self.link.stop()
        self.report_losses()

    def ready(self) -> bool:
        return self.link.connected.is_set()

    def summary(self) -> dict[str, Any]:
        return {
            "faces": counted(self.faces), "lost": counted(self.lost), "duplicates": counted(self.duplicates),
            "malformed": counted(self.malformed),
        }  # fmt: skip
