"""The charts' monitoring objects (all switched on) created on the live API server, which carries the
Prometheus Operator's CRDs (tests/kube/conftest.py): accepted with strict field validation, and a
wrong field refused, as a cluster running the Operator would."""

from __future__ import annotations

import copy

import pytest

from facepipe_dev import helm as h
from tests.charts.test_monitoring import ALL_ON, MONITORING_KINDS
from tests.kube import live

pytestmark = pytest.mark.kube


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_monitoring_objects_are_created_by_the_api_server(chart: str, helm4: h.Helm, cluster: live.Cluster) -> None:
    namespace = live.dns_label("monitoring", chart.removeprefix("face-"))
    cluster.create_namespace(namespace)
    docs = [d for d in helm4.template(chart, (), ALL_ON[chart], namespace=namespace) if d["kind"] in MONITORING_KINDS]
    assert sorted(d["kind"] for d in docs) == sorted(MONITORING_KINDS)
    for doc in docs:
        status, body = cluster.create(doc, namespace)
        assert status == 201, (doc["kind"], body)
    refused = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceMonitor"))
    refused["metadata"]["name"] += "-bad"
    refused["spec"]["endpoints"][0]["interval"] = "every 15 seconds"
    status, body = cluster.create(refused, namespace)
    assert status == 422 and "interval" in str(body), body
