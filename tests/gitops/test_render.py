"""The values Argo CD would pass to the charts, rendered with the real helm (3 and 4) and validated
exactly as the chart tests do (strict Kubernetes schema + typed parse): every device of the fleet
(argocd/values/edge-common.yaml, then the device's file) and the cloud (argocd/values/cloud.yaml).
Also: the projects permit every kind the charts render, and the charts' sync waves (if any) put
each broker before its clients."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml

from facepipe_dev import helm as h
from tests.gitops import argo

if not argo.CRD_DIR.is_dir():
    pytest.skip(f"Argo CD CRD schemas not found at {argo.CRD_DIR}", allow_module_level=True)

MANIFESTS = argo.manifests()
PROJECTS = {m.name: m.doc for m in MANIFESTS if m.kind == "AppProject"}
(APPSET,) = [m.doc for m in MANIFESTS if m.kind == "ApplicationSet" and m.name == "face-edge"]
(CLOUD_APP,) = [m.doc for m in MANIFESTS if m.kind == "Application" and m.name == "face-cloud"]
GENERATED = argo.generate(APPSET)
APPS = {g.name: g.app for g in GENERATED} | {"face-cloud": CLOUD_APP}
EDGE_COMMON = yaml.safe_load((argo.ARGOCD / "values" / "edge-common.yaml").read_text())
WAVE = h.SYNC_WAVE

_renders: dict[tuple[str, str], list[dict[str, Any]]] = {}


def rendered(helm: h.Helm, app_name: str) -> list[dict[str, Any]]:
    """`helm template` with the Application's chart, value files, release name and namespace."""
    key = (helm.name, app_name)
    if key not in _renders:
        inputs = argo.helm_inputs(APPS[app_name])
        assert inputs.values_object is None
        _renders[key] = helm.template(inputs.chart, inputs.value_files, release=inputs.release, namespace=inputs.namespace)
    return _renders[key]


def is_test_hook(doc: Mapping[str, Any]) -> bool:
    """helm test hooks: not rendered under Argo CD (helm.skipTests), never run by it anyway."""
    hooks = doc["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return any(t.strip().startswith("test") for t in hooks.split(","))


_validated: dict[str, str | None] = {}


def validate_strict(doc: Mapping[str, Any]) -> str | None:
    """h.validate_strict, once per distinct object (helm 3 and 4 render the same ones)."""
    key = json.dumps(h.strip_source(doc), sort_keys=True)
    if key not in _validated:
        _validated[key] = h.validate_strict(doc)
    return _validated[key]


def check_objects(docs: Sequence[Mapping[str, Any]], project: Mapping[str, Any]) -> None:
    assert docs, "nothing rendered"
    errors = [e for d in docs if (e := validate_strict(d))]
    assert not errors, "\n".join(errors)
    for doc in docs:
        obj = h.typed(doc)
        assert obj.metadata.name == doc["metadata"]["name"]
        assert doc["metadata"].get("namespace") == "facepipe", (doc["kind"], doc["metadata"]["name"])
        if not is_test_hook(doc):
            group = doc["apiVersion"].rpartition("/")[0]
            assert argo.resource_permitted(project, group, doc["kind"], namespaced=True), (
                f"project {project['metadata']['name']} refuses {doc['kind']}"
            )
    assert argo.resource_permitted(project, "", "Namespace", namespaced=False), (
        "CreateNamespace=true needs Namespace in clusterResourceWhitelist"
    )


@pytest.mark.parametrize("gen", GENERATED, ids=[g.name for g in GENERATED])
def test_device_renders_and_validates(helm: h.Helm, gen: argo.Generated) -> None:
    docs = rendered(helm, gen.name)
    check_objects(docs, PROJECTS[gen.app["spec"]["project"]])
    device_id = gen.params["deviceId"]
    seen = 0
    for doc in h.workloads(docs):
        for container in h.containers(doc):
            env = h.env_map(container)
            if "FACEPIPE_DEVICE_ID" in env:
                assert env["FACEPIPE_DEVICE_ID"] == device_id, (doc["metadata"]["name"], container["name"])
                seen += 1
    assert seen, "no container got the device id"
    (fwd,) = h.find(docs, "Deployment", "forwarder")["spec"]["template"]["spec"]["containers"]
    assert h.env_map(fwd)["REMOTE_MQTT_HOST"] == EDGE_COMMON["cloud"]["host"]


def test_cloud_renders_and_validates(helm: h.Helm) -> None:
    docs = rendered(helm, "face-cloud")
    check_objects(docs, PROJECTS[CLOUD_APP["spec"]["project"]])
    generated_secrets = [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    assert not generated_secrets, f"under Argo CD every render would generate these anew: {generated_secrets}"


# --- project whitelists against the charts' templates ---------------------------------------------

KIND_LINE = re.compile(r"^apiVersion:\s*(\S+)\s*\nkind:\s*(\w+)", re.MULTILINE)


def template_kinds(chart: str) -> set[tuple[str, str]]:
    """(group, kind) of every object a chart can render (its templates and those of the library charts it depends on,
    helm tests aside)."""
    out = set()
    root = h.CHARTS / chart
    for path in [*(root / "templates").glob("*.yaml"), *(root / "charts").glob("*/templates/*.tpl")]:
        for api, kind in KIND_LINE.findall(path.read_text()):
            out.add((api.rpartition("/")[0], kind))
    return out


@pytest.mark.parametrize(
    ("chart", "project"), [("face-edge", "facepipe-edge"), ("face-edge", "facepipe-device"), ("face-cloud", "facepipe-cloud")]
)
def test_project_permits_every_kind_the_chart_can_render(chart: str, project: str) -> None:
    kinds = template_kinds(chart)
    assert ("apps", "Deployment") in kinds
    refused = sorted(k for k in kinds if not argo.resource_permitted(PROJECTS[project], *k, namespaced=True))
    assert not refused, f"{project} would refuse {refused} rendered by {chart}"


# --- sync waves inside the charts -----------------------------------------------------------------


def wave(doc: Mapping[str, Any]) -> int:
    return int(doc["metadata"].get("annotations", {}).get(WAVE, "0"))


def dependencies(docs: Sequence[Mapping[str, Any]], workload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Rendered objects a workload's pods need before they can start."""
    spec = h.pod_spec(workload)
    wanted = {("ServiceAccount", spec.get("serviceAccountName", "default"))}
    for vol in spec.get("volumes", []):
        if "configMap" in vol:
            wanted.add(("ConfigMap", vol["configMap"]["name"]))
        if "secret" in vol:
            wanted.add(("Secret", vol["secret"]["secretName"]))
        if "persistentVolumeClaim" in vol:
            wanted.add(("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]))
    for c in h.containers(workload):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {})
            if "secretKeyRef" in ref:
                wanted.add(("Secret", ref["secretKeyRef"]["name"]))
            if "configMapKeyRef" in ref:
                wanted.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
    return [d for d in docs if (d["kind"], d["metadata"]["name"]) in wanted]


def wave_problems(docs: Sequence[Mapping[str, Any]], clients: Sequence[str]) -> list[str]:
    """Why these waves would not start the broker before its clients (or would stall a sync)."""
    problems = []
    broker = h.find(docs, "Deployment", "broker")
    for name in clients:
        client = h.maybe_find(docs, "Deployment", name) or h.maybe_find(docs, "StatefulSet", name)
        if client and wave(broker) >= wave(client):
            problems.append(f"{client['metadata']['name']} (wave {wave(client)}) must come after the broker (wave {wave(broker)})")
    camera, forwarder = h.maybe_find(docs, "Deployment", "camera"), h.maybe_find(docs, "Deployment", "forwarder")
    if camera and forwarder and wave(forwarder) > wave(camera):
        problems.append("the forwarder's MQTT session must exist before the camera publishes: camera wave >= forwarder wave")
    for workload in h.workloads(docs):
        for dep in dependencies(docs, workload):
            what = f"{dep['kind']}/{dep['metadata']['name']} (wave {wave(dep)}) for {workload['metadata']['name']} (wave {wave(workload)})"
            if wave(dep) > wave(workload):
                problems.append(f"{what}: needed before it")
            elif dep["kind"] == "PersistentVolumeClaim" and wave(dep) != wave(workload):
                problems.append(f"{what}: a WaitForFirstConsumer PVC stays Pending until its pod exists, so same wave")
    return problems


CLIENTS = {"face-edge": ("forwarder", "logger", "camera"), "face-cloud": ("processor",)}


def chart_of(app_name: str) -> str:
    return "face-cloud" if app_name == "face-cloud" else "face-edge"


def with_waves(docs: Sequence[Mapping[str, Any]], waves: Mapping[str, str]) -> list[dict[str, Any]]:
    out = []
    for doc in docs:
        doc = copy.deepcopy(dict(doc))
        template = doc["_source"].rpartition("/templates/")[2]
        if template in waves:
            doc["metadata"].setdefault("annotations", {})[WAVE] = waves[template]
        out.append(doc)
    return out


@pytest.mark.parametrize("app_name", [GENERATED[0].name, "face-cloud"])
def test_charts_sync_waves_start_brokers_before_clients(helm: h.Helm, app_name: str) -> None:
    docs = [d for d in rendered(helm, app_name) if not is_test_hook(d)]
    problems = wave_problems(docs, CLIENTS[chart_of(app_name)])
    assert not problems, "\n".join(problems)


def test_recommended_waves_are_sound(helm: h.Helm) -> None:
    """The waves the README asks the charts for (h.SYNC_WAVES, the table tests/charts/test_sync_waves.py
    holds the charts to) satisfy the checks above on every rendered app (all devices, the cloud),
    and the checks do catch a PVC or a client in the wrong wave."""
    for app_name in APPS:
        chart = chart_of(app_name)
        docs = [d for d in rendered(helm, app_name) if not is_test_hook(d)]
        assert not wave_problems(with_waves(docs, h.SYNC_WAVES[chart]), CLIENTS[chart]), app_name
        bad = with_waves(docs, {**h.SYNC_WAVES[chart], "broker-pvc.yaml": "-2"})
        assert any("same wave" in p for p in wave_problems(bad, CLIENTS[chart])), app_name
    docs = [d for d in rendered(helm, GENERATED[0].name) if not is_test_hook(d)]
    early_camera = with_waves(docs, {**h.SYNC_WAVES["face-edge"], "camera-deployment.yaml": "-1"})
    assert any("camera" in p for p in wave_problems(early_camera, CLIENTS["face-edge"]))
