"""A real Prometheus (3.16.0) scraping a running pipeline on loopback, with the shipped rules.

Edge and cloud Mosquitto (the cloud one as in production: TLS from a local CA, a password per
identity, ACLs), a real S3 store (Ceph RGW), the four components as processes, Prometheus
scraping each every second and evaluating the shipped rules every second, their `for:` shortened
to 2 s. The conditions are made for real and the alerts are read back from Prometheus's API:
the cloud broker stopped (the spool grows, the uplink alerts fire, then clear when it is back),
the camera killed (its last will makes the device-offline alert fire; it clears when the camera
is back), garbage on the cloud topic (the rejection alert fires), and the cloud broker's
certificate (two days left, from facepipe_dev.pki) makes the certificate alert fire. Then every panel query of the
shipped Grafana dashboard must return data from that Prometheus.

Deadlines are generous and nothing is asserted about how long anything takes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facepipe import contract
from facepipe.config import BrokerSettings, CommonSettings, DetectorSettings, StatusSettings
from facepipe_dev.components import start_ready
from facepipe_dev.mqtt import TestClient
from facepipe_dev.processes import wait_until
from facepipe_dev.prometheus import REPO, RULE_FILES, PrometheusServer
from facepipe_dev.rgw import RadosGateway
from facepipe_dev.rig import Rig
from facepipe_dev.store import Store

DEVICE = "edge-mon"
BASE = contract.DEFAULT_REMOTE_TOPIC
DASHBOARD = REPO / "charts" / "face-cloud" / "files" / "grafana-dashboard.json"
SPOOL_LIMIT = 100_000  # bytes: a short outage fills 80% of it
DEADLINE = 180.0


class Monitored:
    """The pipeline, its brokers and store, and the Prometheus watching it. Each scenario runs once."""

    def __init__(self, workdir: Path, rgw: RadosGateway, prometheus_bin: Path, model_dir: Path, source: Path) -> None:
        self.workdir = workdir
        self.done: set[str] = set()
        bucket = "monitoring"
        store = Store.s3(rgw, bucket)
        self.rig = Rig.start(workdir, secure=True, common=CommonSettings(device_id=DEVICE), remote=BrokerSettings(topic=BASE), store=store)
        self.edge, self.cloud, self.uplink = self.rig.edge_broker, self.rig.cloud_broker, self.rig.uplink
        fast = StatusSettings(status_interval=1.0)
        detect = DetectorSettings(model_dir=str(model_dir))
        start_ready(
            self.rig.processor(),
            self.rig.forwarder(status=fast, spool_max_bytes=SPOOL_LIMIT),
            self.rig.logger(status=fast),
            self.rig.camera(status=fast, detect=detect, source=str(source), loop=True, max_fps=3, publish_policy="every"),
        )
        self.components = self.rig.components
        targets = {name: f"127.0.0.1:{c.port}" for name, c in self.components.items()}
        self.prometheus = PrometheusServer(workdir / "prometheus", prometheus_bin, targets, list(RULE_FILES.values()))
        self.prometheus.check_config()
        self.prometheus.start()
        wait_until(lambda: self.prometheus.targets_up() == dict.fromkeys(targets, True), timeout=DEADLINE, what="every target up")
        wait_until(lambda: self.value("sum(facepipe_processor_stored_total)") > 0, timeout=DEADLINE, what="faces stored")

    def value(self, expr: str) -> float:
        """The single value of an instant query (0 when it returns nothing)."""
        result = self.prometheus.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    def wait_alert(self, name: str, firing: bool = True, **labels: str) -> None:
        def matches() -> bool:
            found = any(labels.items() <= alert.items() for alert in self.prometheus.alerts(name))
            return found == firing

        wait_until(matches, timeout=DEADLINE, interval=0.5, what=f"{name} {labels} {'firing' if firing else 'resolved'}")

    def once(self, scenario: str, run: Callable[[], None]) -> None:
        if scenario not in self.done:
            self.done.add(scenario)
            run()

    # --- the scenarios ---------------------------------------------------------------------

    def cloud_outage(self) -> None:
        """Cloud broker stopped: the spool grows, the uplink and spool alerts fire; back: they clear."""
        spool = "max(facepipe_forwarder_spool_bytes)"
        self.wait_alert("FacepipeUplinkDown", firing=False)
        before = self.value(spool)
        self.cloud.stop()
        try:
            self.wait_alert("FacepipeUplinkDown", device=DEVICE, severity="critical")
            wait_until(lambda: self.value(spool) > before + 20_000, timeout=DEADLINE, what="the spool to grow")
            self.wait_alert("FacepipeSpoolFilling", device=DEVICE)
        finally:
            self.cloud.start()
        self.wait_alert("FacepipeUplinkDown", firing=False)
        self.wait_alert("FacepipeSpoolFilling", firing=False)
        wait_until(lambda: self.value(spool) < SPOOL_LIMIT * 0.2, timeout=DEADLINE, what="the spool to drain")

    def camera_dies(self) -> None:
        """Camera killed: its last will makes FacepipeDeviceOffline fire for it; restarted: it clears."""
        self.wait_alert("FacepipeDeviceOffline", firing=False)
        camera = self.components["camera"]
        camera.kill()
        self.wait_alert("FacepipeDeviceOffline", device=DEVICE, component="camera", severity="critical")
        assert self.value(f'max(facepipe_fleet_up{{device="{DEVICE}",component="forwarder"}})') == 1, "only the camera is offline"
        camera.start().wait_ready()
        self.wait_alert("FacepipeDeviceOffline", firing=False)

    def garbage(self) -> None:
        """Bytes that are no image on the device's cloud topic: FacepipeRejectionsRising fires."""
        self.wait_alert("FacepipeRejectionsRising", firing=False)
        forwarder = self.uplink.forwarder
        client = TestClient(
            self.cloud.host, forwarder.port, username=forwarder.username, password=forwarder.password, ca_file=forwarder.ca_file
        )
        try:
            for i in range(100):
                client.publish(contract.remote_topic(BASE, DEVICE), b"\x00not an image " + str(i).encode())
        finally:
            client.close()
        self.wait_alert("FacepipeRejectionsRising", severity="warning")
        assert self.value('sum(facepipe_processor_rejected_total{reason="not_image"})') == 100

    def close(self) -> None:
        self.prometheus.stop()
        self.rig.close()


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory, rgw: RadosGateway, prometheus_bin: Path, model_dir: Path, shared_data: Path
) -> Iterator[Monitored]:
    rig = Monitored(tmp_path_factory.mktemp("monitored"), rgw, prometheus_bin, model_dir, shared_data / "images" / "skimage")
    try:
        yield rig
    finally:
        rig.close()


def test_the_uplink_alert_fires_while_the_cloud_broker_is_down_and_clears_when_it_is_back(monitored: Monitored) -> None:
    monitored.once("cloud outage", monitored.cloud_outage)


def test_the_device_offline_alert_fires_from_the_cameras_last_will(monitored: Monitored) -> None:
    monitored.once("camera dies", monitored.camera_dies)


def test_the_rejection_alert_fires_on_garbage(monitored: Monitored) -> None:
    monitored.once("garbage", monitored.garbage)


def test_the_certificate_alert_fires_for_the_cloud_brokers_two_day_certificate(monitored: Monitored) -> None:
    """facepipe_dev.pki issues certificates valid for two days: well within the alert's 14."""
    monitored.wait_alert("FacepipeUplinkCertificateExpiring", device=DEVICE, severity="warning")
    days = monitored.value('max(facepipe_mqtt_server_cert_expiry_timestamp_seconds{broker="cloud"}) - time()') / 86400
    assert 1 < days <= 2


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard, its variables as Grafana fills them for "all"."""
    doc = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            queries.append((f"{panel['title']} [{target['refId']}]", re.sub(r"\$\{?device\}?", ".*", expr)))
    return queries


def test_every_dashboard_panel_query_returns_data(monitored: Monitored) -> None:
    """Runs after the scenarios (their series: rejections, spool, offline); run alone, it makes them first."""
    monitored.once("cloud outage", monitored.cloud_outage)
    monitored.once("camera dies", monitored.camera_dies)
    monitored.once("garbage", monitored.garbage)
    queries = dashboard_queries()
    assert len(queries) >= 20
    empty: list[str] = []

    def all_answer() -> bool:  # a restarted target needs two scrapes before its rate() answers
        empty[:] = [title for title, expr in queries if not monitored.prometheus.query(expr)]
        return not empty

    try:
        wait_until(all_answer, timeout=DEADLINE, interval=1.0, what="every panel query to return data")
    except AssertionError:
        pytest.fail(f"panels without data: {empty}")
