"""Monitoring objects of the charts (off by default): ServiceMonitor, PodMonitor, PrometheusRule and the
Grafana dashboard ConfigMap, valid for the Prometheus Operator's CRDs (tests/schemas/prometheus-operator),
carrying the shipped files, and selecting exactly the components that serve /metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from facepipe_dev import helm as h
from facepipe_dev.prometheus import RULE_FILES

MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
ALL_ON = {
    "face-edge": (*h.DEFAULT_SETS["face-edge"], "metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true",
                  "metrics.prometheusRule.enabled=true", "metrics.serviceMonitor.interval=15s", "metrics.podMonitor.scrapeTimeout=5s"),
    "face-cloud": ("gallery.enabled=true", "gallery.auth.existingSecret=gallery-users", "metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
                   "metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.namespace=monitoring",
                   "metrics.grafanaDashboard.folder=Fleet", "metrics.serviceMonitor.labels.release=kps"),
}  # fmt: skip
METRIC_COMPONENTS = {"face-edge": {"camera", "logger", "forwarder"}, "face-cloud": {"processor", "gallery"}}
DASHBOARD = h.chart_dir("face-cloud") / "files" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def rendered(helm_any: h.Helm) -> dict[str, list[dict[str, Any]]]:
    return {chart: helm_any.template(chart, (), sets) for chart, sets in ALL_ON.items()}


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions) against an object's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_monitoring_objects_are_off_by_default(helm_any: h.Helm, render_cache: h.RenderCache, chart: str) -> None:
    docs = render_cache.get(helm_any, chart, "default")
    assert not [d for d in docs if d["kind"] in MONITORING_KINDS]
    assert not [d for d in h.by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_monitoring_objects_validate_against_the_operators_crds(rendered: dict[str, list[dict[str, Any]]], chart: str) -> None:
    docs = [d for d in rendered[chart] if d["kind"] in MONITORING_KINDS]
    assert sorted(d["kind"] for d in docs) == sorted(MONITORING_KINDS)
    assert [e for d in docs if (e := h.validate_strict(d))] == []


def test_a_wrong_field_fails_the_crd_validation(rendered: dict[str, list[dict[str, Any]]]) -> None:
    monitor = json.loads(json.dumps(h.by_kind(rendered["face-edge"], "ServiceMonitor")[0]))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert "interval" in (h.validate_strict(monitor) or "")
    monitor["spec"]["endpoints"][0] = {"port": "http", "scrapeEvery": "15s"}
    assert "scrapeEvery" in (h.validate_strict(monitor) or "")


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_the_prometheus_rule_is_the_shipped_rules_file(rendered: dict[str, list[dict[str, Any]]], chart: str) -> None:
    (rule,) = h.by_kind(rendered[chart], "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULE_FILES[chart].read_text())


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_the_monitors_select_exactly_the_components_serving_metrics(rendered: dict[str, list[dict[str, Any]]], chart: str) -> None:
    docs = rendered[chart]
    (service_monitor,) = h.by_kind(docs, "ServiceMonitor")
    (pod_monitor,) = h.by_kind(docs, "PodMonitor")
    selected = [s for s in h.by_kind(docs, "Service") if matches(service_monitor["spec"]["selector"], s["metadata"]["labels"])]
    # One Service per component (the processors' headless Service would scrape each pod twice), each with the named port.
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected) == sorted(METRIC_COMPONENTS[chart])
    assert all("http" in [p["name"] for p in s["spec"]["ports"]] for s in selected)
    assert [e["port"] for e in service_monitor["spec"]["endpoints"]] == ["http"]
    assert service_monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    scraped = [w for w in workloads if matches(pod_monitor["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
    assert {w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for w in scraped} == METRIC_COMPONENTS[chart]
    for workload in scraped:
        ports = [p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        assert "http" in ports, workload["metadata"]["name"]
    for monitor in (service_monitor, pod_monitor):
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [h.NAMESPACE]}


def test_monitor_settings_reach_the_endpoints(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (service_monitor,) = h.by_kind(rendered["face-edge"], "ServiceMonitor")
    (pod_monitor,) = h.by_kind(rendered["face-edge"], "PodMonitor")
    assert service_monitor["spec"]["endpoints"][0]["interval"] == "15s"
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["scrapeTimeout"] == "5s"
    (cloud_monitor,) = h.by_kind(rendered["face-cloud"], "ServiceMonitor")
    assert cloud_monitor["metadata"]["labels"]["release"] == "kps"


def test_the_dashboard_configmap_carries_the_dashboard_with_the_sidecars_label(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (configmap,) = [d for d in h.by_kind(rendered["face-cloud"], "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "Fleet"
    (text,) = configmap["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text())


def test_the_dashboard_has_one_row_per_stage_and_every_panel_a_query() -> None:
    doc = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Capture", "Edge", "Uplink", "Cloud", "Store"]
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] and all(t["expr"].strip() for t in p["targets"]) for p in panels)
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "device"}
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
