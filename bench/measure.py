"""What the pipeline benchmarks measure with: the stack (a devkit rig watched by the RSS sampler), progress,
CPU meters and exact capture→stored latencies from the processor's log."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.support import DEVICE, Context
from facepipe.config import CommonSettings
from facepipe.metric_names import PROCESSOR_STORED
from facepipe_dev.components import ComponentProcess, start_ready
from facepipe_dev.rig import Rig
from facepipe_dev.store import Store


def stack(ctx: Context, label: str, store_kind: str, qos: int) -> Rig:
    """edge broker → forwarder → cloud broker → processor → store, plus the logger on the edge broker, at `qos`:
    a rig with brokers of its own, the components ready and watched by the RSS sampler."""
    workdir = ctx.scratch(f"pipeline-{label}")
    rig = Rig.start(workdir, common=CommonSettings(device_id=DEVICE), qos=qos, store=bench_store(ctx, store_kind, f"bench-{label}", workdir))
    try:
        start_ready(rig.processor(), rig.forwarder(), rig.logger())
    except BaseException:
        rig.close()
        raise
    for name, component in rig.components.items():
        ctx.rss.watch(name, component.process.pid)
    return rig


def bench_store(ctx: Context, kind: str, name: str, workdir: Path) -> Store:
    """A bucket on the run's RGW (`s3`) or a directory (`dir`; `dir-syncfs` with FACEPIPE_STORE_SYNC=filesystem)."""
    if kind == "s3":
        rgw = ctx.rgw()
        if rgw is None:
            raise RuntimeError("no S3 server (Ceph RGW) here")
        return Store.s3(rgw, name)
    return Store.directory(workdir / "faces", sync="filesystem" if kind == "dir-syncfs" else "files")


def add_watched(ctx: Context, component: ComponentProcess) -> ComponentProcess:
    """Start one more component (the camera) and watch its RSS."""
    component.start()
    ctx.rss.watch(component.name, component.process.pid)
    return component


def stop_watched(ctx: Context, rig: Rig) -> None:
    for name in rig.components:
        ctx.rss.unwatch(name)
    rig.close()


def stored(rig: Rig) -> float:
    return rig.metric("processor", PROCESSOR_STORED)


class Progress:
    """Polls counters in the background and notes the wall time each first reaches its target."""

    def __init__(self, counters: dict[str, Any], target: float, interval: float = 0.05) -> None:
        self.counters, self.target, self.interval = counters, target, interval
        self.reached: dict[str, float] = {}
        self.values: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.reached) < len(self.counters):
            for name, read in self.counters.items():
                if name in self.reached:
                    continue
                try:
                    self.values[name] = value = read()
                except Exception:
                    continue
                if value >= self.target:
                    self.reached[name] = time.time()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each process (its children included)."""
    out = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[name] = times.user + times.system + times.children_user + times.children_system
    return out


class CpuMeter:
    """CPU used by named processes between construction and `stop()`: shares of a core and cost per item.

    CPU time, unlike throughput, barely depends on what else the machine runs, so the cost per
    face says what each process would manage on an idle core.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.before = cpu_seconds(self.pids)
        self.started = time.monotonic()
        self.used: dict[str, float] = {}
        self.seconds = 0.0

    def stop(self, extra: dict[str, float] | None = None) -> CpuMeter:
        after = cpu_seconds(self.pids)
        self.seconds = time.monotonic() - self.started
        self.used = {name: after[name] - self.before[name] for name in after if name in self.before}
        self.used.update(extra or {})
        return self

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(((n, v) for n, v in self.used.items() if v / max(self.seconds, 1e-9) >= 0.02), key=lambda item: -item[1])

    def shares(self) -> str:
        """'processor 78%, forwarder 40%, ...' of one core each, busiest first."""
        return ", ".join(f"{name} {100 * value / max(self.seconds, 1e-9):.0f}%" for name, value in self.ranked())

    def per_item(self, count: int, item: str = "face", cores: int = 2) -> str:
        """'processor 1.90, ceph-rgw 1.20 ms CPU per face (3.1 ms in all: ≤ 645/s on 2 cores)'."""
        if not count:
            return ""
        ranked = self.ranked()
        total = 1000 * sum(v for _, v in ranked) / count
        parts = ", ".join(f"{name} {1000 * value / count:.2f}" for name, value in ranked)
        return f"ms CPU per {item}: {parts} ({total:.2f} in all: ≤ {cores * 1000 / max(total, 1e-9):.0f}/s on {cores} idle cores)"


# --- the processor's log: exact capture→stored latencies --------------------------------------------


def log_offset(component: ComponentProcess) -> int:
    path = component.process.log_path
    return path.stat().st_size if path.exists() else 0


def log_events(component: ComponentProcess, offset: int, event: str) -> list[dict[str, Any]]:
    """The component's JSON log records of `event` written after `offset`."""
    path = component.process.log_path
    with open(path, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        if f'"event":"{event}"' not in line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def log_time(record: dict[str, Any]) -> float:
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def captured_time(key: str) -> float:
    """captured_at of a face from its object key (`.../YYYY/MM/DD/HHMMSS.mmm_...png`), to the millisecond."""
    parts = key.split("/")
    day = "/".join(parts[-4:-1])
    clock = parts[-1].split("_", 1)[0]
    return datetime.strptime(f"{day} {clock}", "%Y/%m/%d %H%M%S.%f").replace(tzinfo=UTC).timestamp()


def stored_latencies(processor: ComponentProcess, offset: int, boot: str) -> tuple[list[float], float]:
    """(capture→stored seconds of each face of `boot`, wall time of the last one) from the processor's `face.stored` lines."""
    latencies, last = [], 0.0
    for record in log_events(processor, offset, "face.stored"):
        key = str(record.get("key", ""))
        if f"_{boot}_" not in key:
            continue
        at = log_time(record)
        latencies.append(at - captured_time(key))
        last = max(last, at)
    return latencies, last
