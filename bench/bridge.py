"""3. The forwarder (spool on) against Mosquitto's native bridge, on the same brokers and messages.

Each run: a fresh edge and cloud broker, a Python counting subscriber on the cloud
(`cam_bin_remote/#`, QoS 1), the Python publisher flat out to the edge (`cam_bin`, QoS 1).
msgs/s = distinct faces counted at the cloud ÷ (last arrival − first publish). Modes run
interleaved, several rounds, median taken, so a change in the machine's load hits all alike.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass

from bench import original_forwarder
from bench.measure import CpuMeter
from bench.report import Row, at_least
from bench.support import DEVICE, Context, Profile, profile_markdown, publisher
from facepipe import contract
from facepipe.config import CommonSettings
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.components import ComponentProcess
from facepipe_dev.loadgen import CountingSubscriber, Face, face_crops
from facepipe_dev.paths import VIDEO
from facepipe_dev.processes import ChildProcess, poll
from facepipe_dev.rig import Rig

RATIO_TARGET = 0.9
MODES = ("native bridge", "forwarder", "original forwarder", "no hop")


@dataclass
class BridgedBroker(MosquittoBroker):
    """An edge broker whose native bridge sends `cam_bin` to `cam_bin_remote/<device>` on the cloud, MQTT 5, QoS 1."""

    remote_port: int = 0
    device: str = DEVICE

    def config_text(self) -> str:
        remote = contract.remote_topic(contract.DEFAULT_REMOTE_TOPIC, self.device)
        bridge = [
            "connection bench-bridge",
            f"address {self.host}:{self.remote_port}",
            "bridge_protocol_version mqttv50",
            "cleansession false",
            f"remote_clientid bench-bridge-{self.device}",
            "notifications false",
            f'topic "" out 1 {contract.DEFAULT_LOCAL_TOPIC} {remote}',
        ]
        return super().config_text() + "\n".join(bridge) + "\n"


@dataclass
class Result:
    rate: float
    received: int
    sent: int
    meter: CpuMeter


def one_run(ctx: Context, mode: str, crops: list[Face], count: int, profile: bool = False) -> Result:
    workdir = ctx.scratch(f"bridge-{mode.replace(' ', '-')}")
    cloud = MosquittoBroker(workdir / "cloud-broker", name="cloud-broker").start()
    edge: MosquittoBroker = (
        BridgedBroker(workdir / "edge-broker", name="edge-broker", remote_port=cloud.port)
        if mode == "native bridge"
        else MosquittoBroker(workdir / "edge-broker", name="edge-broker")
    )
    edge.start()
    hop: ComponentProcess | ChildProcess | None = None
    counter = CountingSubscriber(cloud.host, cloud.port, f"{contract.DEFAULT_REMOTE_TOPIC}/#")
    target = cloud if mode == "no hop" else edge
    topic = contract.remote_topic(contract.DEFAULT_REMOTE_TOPIC, DEVICE) if mode == "no hop" else contract.DEFAULT_LOCAL_TOPIC
    load = publisher(target.host, target.port, topic, crops, qos=1)
    try:
        if mode == "forwarder":
            rig = Rig.on(workdir, edge, cloud, common=CommonSettings(device_id=DEVICE), qos=1)
            hop = rig.forwarder().start().wait_ready()
            ctx.rss.watch("forwarder", hop.process.pid)
        elif mode == "original forwarder":
            argv = [
                sys.executable,
                "-m",
                original_forwarder.__name__,
                "--local-port",
                str(edge.port),
                "--remote-port",
                str(cloud.port),
                "--device",
                DEVICE,
            ]
            hop = ChildProcess("original-forwarder", argv, workdir / "original-forwarder.log").start()
            if not poll(lambda: '"ready"' in hop.log_tail(5), 30):  # type: ignore[union-attr]
                raise RuntimeError(f"original forwarder not ready:\n{hop.log_tail()}")
        warm = load.run(20)
        if not counter.wait(warm.boot, 20, 30):
            raise RuntimeError(f"{mode}: the warm-up faces did not reach the cloud broker")
        counter.reset()
        pids = {"edge broker": edge.pid, "cloud broker": cloud.pid, "publisher+counter": os.getpid()}
        if hop is not None:
            pids[mode] = hop.process.pid if isinstance(hop, ComponentProcess) else hop.pid
        spy = Profile(pids[mode], ctx.workdir / "profile-forwarder.txt", 120) if profile and mode in pids else None
        meter = CpuMeter(pids)
        sent = load.run(count)
        counter.wait(sent.boot, count, timeout=120)
        meter.stop()
        if spy is not None:
            spy.stop()
        received = counter.count(sent.boot)
        return Result(received / max(1e-9, counter.last - sent.started), received, sent.count, meter)
    finally:
        load.close()
        counter.close()
        if hop is not None:
            if isinstance(hop, ComponentProcess):
                ctx.rss.unwatch("forwarder")
            hop.stop()
        edge.stop()
        cloud.stop()


def run(ctx: Context) -> list[Row]:
    count = 500 if ctx.quick else 5000
    rounds = 1 if ctx.quick else 3
    crops = face_crops(VIDEO, ctx.model_dir)
    ctx.rss.phase = "forwarder vs native bridge"
    ctx.report.notes.append(
        "Forwarder vs bridge: fresh brokers per run; Python publisher flat out to the edge (≤ 100 in flight, QoS 1) and a Python counting "
        "subscriber on the cloud broker in the bench process; msgs/s = distinct faces counted ÷ (last arrival − first publish); "
        "modes interleaved, median of the rounds. `no hop` publishes straight to the cloud broker: the ceiling of the measuring tools."
    )
    results: dict[str, list[Result]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            results[mode].append(one_run(ctx, mode, crops, count))
    median = {mode: statistics.median(r.rate for r in runs) for mode, runs in results.items()}
    rows = []
    for mode in MODES:
        runs = results[mode]
        lost = sum(r.sent - r.received for r in runs)
        spread = ", ".join(f"{r.rate:.0f}" for r in runs)
        rows.append(
            Row(
                "3 forwarder",
                f"{mode}: edge → cloud, QoS 1, flat out",
                f"{median[mode]:.0f} msgs/s ({lost} lost)",
                note=f"median of {len(runs)} × {count} ({spread}); last run: CPU of one core {runs[-1].meter.shares()}; {runs[-1].meter.per_item(count, 'message')}",
            )
        )
    bridge = median["native bridge"]
    ratio, met = at_least(median["forwarder"] / bridge, RATIO_TARGET)
    rows.append(
        Row(
            "3 forwarder",
            "forwarder (spool on) ÷ native bridge",
            f"{median['forwarder'] / bridge:.2f}×",
            target=f"≥ {RATIO_TARGET}×",
            ratio=ratio,
            met=met and all(r.received == r.sent for r in results["forwarder"]),
        )
    )
    rows.append(
        Row(
            "3 forwarder",
            "original inline forwarder ÷ native bridge",
            f"{median['original forwarder'] / bridge:.2f}×",
            note="for orientation",
        )
    )
    if ctx.profile and not met:
        one_run(ctx, "forwarder", crops, count, profile=True)
        raw = ctx.workdir / "profile-forwarder.txt"
        if raw.is_file():
            ctx.report.evidence.append(
                profile_markdown(
                    f"Forwarder, flat out at QoS 1 ({median['forwarder']:.0f} msgs/s, {median['forwarder'] / bridge:.2f}× the native bridge)",
                    raw,
                    "Busy threads of the forwarder during an extra run (not counted in the figures).",
                )
            )
    return rows
