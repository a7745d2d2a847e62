"""Pod Security admission of the live API server against the charts' pods.

Every pod the charts render (each workload's template, the helm test pods) is created with
`dryRun=All` in a namespace labelled `pod-security.kubernetes.io/enforce=<level>`: the API server
runs its PodSecurity admission on it as for a real pod, and nothing is left behind (there is no
workload controller, scheduler or kubelet here). The level is the one the profile declares
(`podSecurity.level`; the cloud: restricted), and for the fleet the labels Argo CD puts on each
device's namespace (`managedNamespaceMetadata` of argocd/apps/). A privileged camera is refused by
a restricted namespace, so a declared exception is one that is needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from facepipe_dev import helm as h
from tests.gitops import argo
from tests.kube import live

pytestmark = pytest.mark.kube

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
CASES = [(chart, profile) for chart in h.CHART_NAMES for profile in h.profile_ids(chart)]


def level_labels(level: str) -> dict[str, str]:
    return {"pod-security.kubernetes.io/enforce": level, "pod-security.kubernetes.io/enforce-version": "latest"}


def declared_level(chart: str, values: Mapping[str, Any]) -> str:
    return str(values["podSecurity"]["level"]) if chart == "face-edge" else "restricted"


def pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod) of every pod the rendering would make: workload templates and (hook) Pods."""
    found = []
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            template = doc["spec"]["template"]
            found.append((f"{doc['kind']}/{doc['metadata']['name']}", {"metadata": template.get("metadata", {}), "spec": template["spec"]}))
        elif doc["kind"] == "Pod":
            found.append((f"Pod/{doc['metadata']['name']}", {"metadata": doc["metadata"], "spec": doc["spec"]}))
    return found


def admit(cluster: live.Cluster, namespace: str, where: str, pod: Mapping[str, Any], index: int) -> tuple[int, Any]:
    """Create the pod with dryRun=All: the API server's admission (PodSecurity included) decides, nothing is stored."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"admission-{index}", "labels": dict(pod["metadata"].get("labels", {}))},
        "spec": pod["spec"],
    }
    return cluster.api.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All&fieldValidation=Strict", body)


def prepared_namespace(cluster: live.Cluster, name: str, labels: dict[str, str], docs: list[dict[str, Any]]) -> str:
    """The labelled namespace, holding the rendering's ServiceAccounts (admission looks them up)."""
    cluster.create_namespace(name, labels=labels)
    for account in h.by_kind(docs, "ServiceAccount"):
        status, body = cluster.create({**account, "metadata": {"name": account["metadata"]["name"]}}, namespace=name)
        assert status == 201, body
    return name


def refusals(cluster: live.Cluster, namespace: str, docs: list[dict[str, Any]]) -> dict[str, str]:
    """where -> the API server's message, for every pod it refuses."""
    refused = {}
    for index, (where, pod) in enumerate(pods(docs)):
        status, body = admit(cluster, namespace, where, pod, index)
        if status != 201:
            refused[where] = body.get("message", str(body)) if isinstance(body, dict) else str(body)
    return refused


@pytest.fixture
def namespaces(cluster: live.Cluster) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        cluster.delete_namespace(name)


@pytest.mark.parametrize(("chart", "profile"), CASES, ids=[f"{c}:{p}" for c, p in CASES])
def test_every_pod_of_a_profile_is_admitted_at_its_declared_level(
    cluster: live.Cluster, helm_any: h.Helm, render_cache: h.RenderCache, namespaces: list[str], chart: str, profile: str
) -> None:
    docs = render_cache.get(helm_any, chart, profile)
    level = declared_level(chart, h.effective_values(chart, profile))
    assert pods(docs), "no pod rendered"
    ns = prepared_namespace(cluster, live.dns_label("psa", chart.removeprefix("face-"), profile), level_labels(level), docs)
    namespaces.append(ns)
    assert refusals(cluster, ns, docs) == {}, f"{chart}:{profile} declares {level}"
    if level != "restricted":
        strict = prepared_namespace(
            cluster, live.dns_label("psa-r", chart.removeprefix("face-"), profile), level_labels("restricted"), docs
        )
        namespaces.append(strict)
        assert refusals(cluster, strict, docs), f"{chart}:{profile} declares {level} but every pod fits restricted"


def test_a_restricted_namespace_refuses_the_privileged_camera(cluster: live.Cluster, helm_any: h.Helm, namespaces: list[str]) -> None:
    """The default rendering is admitted under `restricted`; the same chart with camera.accessMode=privileged is not."""
    edge = ["cloud.host=mqtt.example.com"]
    default = helm_any.template("face-edge", sets=edge)
    privileged = helm_any.template("face-edge", sets=[*edge, "camera.accessMode=privileged", "podSecurity.level=privileged"])
    ns = prepared_namespace(cluster, live.dns_label("psa", "edge", "privileged-camera"), level_labels("restricted"), default)
    namespaces.append(ns)
    assert refusals(cluster, ns, default) == {}
    refused = refusals(cluster, ns, privileged)
    (camera,) = [where for where in refused if where.endswith("-camera")]
    assert list(refused) == [camera], refused
    message = refused[camera]
    assert 'violates PodSecurity "restricted:latest"' in message and "privileged" in message, message


def test_argo_cd_labels_each_devices_namespace_so_its_pods_are_admitted(
    cluster: live.Cluster, helm_any: h.Helm, namespaces: list[str]
) -> None:
    """The namespace Argo CD creates for each generated Application carries managedNamespaceMetadata's labels:
    every pod of that device's rendering is admitted there, and a device at `restricted` refuses a privileged pod."""
    appset = argo.by_kind(argo.manifests(), "ApplicationSet")
    (fleet,) = [m.doc for m in appset if m.doc["metadata"]["name"] == "face-edge"]
    privileged = ["cloud.host=x.example.com", "camera.accessMode=privileged", "podSecurity.level=privileged"]
    (camera_pod,) = [
        pod for where, pod in pods(helm_any.template("face-edge", sets=privileged, release="face-edge")) if where.endswith("-camera")
    ]
    levels = {}
    for generated in argo.generate(fleet):
        app = generated.app
        labels = app["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
        inputs = argo.helm_inputs(app)
        docs = helm_any.template(inputs.chart, inputs.value_files, release=inputs.release, namespace=inputs.namespace)
        ns = prepared_namespace(cluster, live.dns_label("psa-argo", app["metadata"]["name"]), labels, docs)
        namespaces.append(ns)
        assert refusals(cluster, ns, docs) == {}, app["metadata"]["name"]
        level = labels["pod-security.kubernetes.io/enforce"]
        levels[app["metadata"]["name"]] = level
        if level == "restricted":
            status, body = admit(cluster, ns, "privileged camera", camera_pod, 99)
            assert status == 403 and "violates PodSecurity" in body.get("message", ""), body
    assert set(levels.values()) == {"restricted", "privileged"}, levels
