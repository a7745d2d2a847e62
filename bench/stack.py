"""The pipeline under test: two Mosquitto brokers and the real processor, forwarder and logger processes,
with the store (Ceph RGW or a directory) and the helpers that read what reached it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.support import DEVICE, Context, wait_for
from facepipe import contract
from facepipe.brokers import MosquittoBroker
from facepipe.config import BrokerSettings, CommonSettings, ForwarderSettings, LoggerSettings, ProcessorSettings, StoreSettings
from facepipe.run import ComponentProcess
from facepipe.storage.s3 import is_check_key

S3_PREFIX = "faces"


class Store:
    """Where the processor stores: a bucket on the run's RGW (`s3`) or a directory (`dir`; `dir-syncfs` with
    FACEPIPE_STORE_SYNC=filesystem)."""

    def __init__(self, ctx: Context, kind: str, name: str, workdir: Path) -> None:
        self.kind = kind
        self.rgw = ctx.rgw() if kind == "s3" else None
        if kind == "s3":
            if self.rgw is None:
                raise RuntimeError("no S3 server (Ceph RGW) here")
            self.bucket = name
            self.client = self.rgw.client()
            self.client.create_bucket(Bucket=self.bucket)
            self.settings = StoreSettings(
                store=f"s3://{self.bucket}/{S3_PREFIX}", s3_endpoint_url=self.rgw.endpoint_url, s3_region=self.rgw.region
            )
        else:
            self.root = workdir / "faces"
            self.settings = StoreSettings(store=f"file://{self.root}", directory_sync="filesystem" if kind == "dir-syncfs" else "files")

    def env(self) -> dict[str, str]:
        return self.rgw.env() if self.rgw is not None else {}

    def keys(self, prefix: str = "") -> list[str]:
        if self.kind == "s3":
            out: list[str] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                out += [item["Key"] for item in page.get("Contents", []) if not is_check_key(item["Key"])]
            return out
        if not self.root.exists():
            return []
        return [str(p.relative_to(self.root)) for p in self.root.rglob("*.png")]

    def stored_seqs(self, boot: str) -> set[int]:
        """Distinct seqs of one publishing run (`..._<camera>_<boot>_<seq>.png`) that reached the store."""
        marker = f"_{boot}_"
        return {int(key.rsplit("_", 1)[1].removesuffix(".png")) for key in self.keys() if marker in key}


def broker_pid(broker: MosquittoBroker) -> int:
    assert broker.process is not None, f"{broker.name} was not started"
    return broker.process.pid


def processor_settings(broker: MosquittoBroker, store: Store, qos: int) -> ProcessorSettings:
    remote = BrokerSettings(host=broker.host, port=broker.port, topic=contract.DEFAULT_REMOTE_TOPIC, qos=qos)
    return ProcessorSettings(common=CommonSettings(device_id="cloud"), broker=remote, storage=store.settings)


class Stack:
    """edge broker → forwarder → cloud broker → processor → store, plus the logger on the edge broker."""

    def __init__(self, ctx: Context, label: str, store_kind: str, qos: int) -> None:
        self.ctx, self.label, self.qos = ctx, label, qos
        self.workdir = ctx.scratch(f"pipeline-{label}")
        self.edge = MosquittoBroker(self.workdir / "edge-broker", name="edge-broker")
        self.cloud = MosquittoBroker(self.workdir / "cloud-broker", name="cloud-broker")
        self.store = Store(ctx, store_kind, f"bench-{label}", self.workdir)
        self.components: dict[str, ComponentProcess] = {}

    def edge_settings(self) -> BrokerSettings:
        return BrokerSettings(host=self.edge.host, port=self.edge.port, topic=contract.DEFAULT_LOCAL_TOPIC, qos=self.qos)

    def start(self) -> Stack:
        self.edge.start()
        self.cloud.start()
        common = CommonSettings(device_id=DEVICE)
        remote = BrokerSettings(host=self.cloud.host, port=self.cloud.port, topic=contract.DEFAULT_REMOTE_TOPIC, qos=self.qos)
        self.components = {
            "processor": ComponentProcess(
                "processor", processor_settings(self.cloud, self.store, self.qos), self.workdir, self.store.env()
            ),
            "forwarder": ComponentProcess(
                "forwarder", ForwarderSettings(common=common, local=self.edge_settings(), remote=remote), self.workdir
            ),
            "logger": ComponentProcess("logger", LoggerSettings(common=common, broker=self.edge_settings()), self.workdir),
        }
        for component in self.components.values():
            component.start()
        for name, component in self.components.items():
            component.wait_ready()
            self.ctx.rss.watch(name, component.process.pid)
        return self

    def add(self, name: str, settings: Any) -> ComponentProcess:
        """Start one more component (the camera) against this stack's edge broker."""
        component = ComponentProcess(name, replace(settings, broker=self.edge_settings()), self.workdir)
        self.components[name] = component
        component.start()
        self.ctx.rss.watch(name, component.process.pid)
        return component

    def metric(self, component: str, name: str) -> float:
        return self.components[component].metrics().get(name, 0.0)

    def stored(self) -> float:
        return self.metric("processor", "facepipe_processor_stored_total")

    def pids(self) -> dict[str, int]:
        found = {name: c.process.pid for name, c in self.components.items() if c.process.running()}
        for broker in (self.edge, self.cloud):
            if broker.process is not None and broker.process.running():
                found[broker.name] = broker.process.pid
        if self.store.rgw is not None:
            found.update({f"ceph-{name}": pid for name, pid in self.store.rgw.pids().items()})
        return found

    def stop(self) -> None:
        for name, component in self.components.items():
            self.ctx.rss.unwatch(name)
            component.stop()
        self.edge.stop()
        self.cloud.stop()


def wait_stored(read: Any, target: float, timeout: float, stall: float = 10.0) -> float:
    """Poll `read()` until it reaches `target`, gives up after `stall` s without progress; returns the last value."""
    deadline = time.monotonic() + timeout
    last, last_change = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        value = read()
        if value >= target:
            return value
        if value > last:
            last, last_change = value, time.monotonic()
        elif time.monotonic() - last_change > stall:
            break
        time.sleep(0.05)
    return max(last, read())


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


def wait_ready(component: ComponentProcess, timeout: float = 60.0) -> None:
    if not wait_for(component.is_ready, timeout, 0.05):
        raise TimeoutError(f"{component.name} not ready:\n{component.process.log_tail()}")
