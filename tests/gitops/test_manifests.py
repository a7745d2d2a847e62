"""Every manifest in argocd/ against the Argo CD CRD schemas (strict: unknown fields are errors),
and the wiring between them: projects, repository URL, sync waves, sync policies, bootstrap."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.gitops import argo

if not argo.CRD_DIR.is_dir():
    pytest.skip(f"Argo CD CRD schemas not found at {argo.CRD_DIR}", allow_module_level=True)

MANIFESTS = argo.manifests()
README = argo.ARGOCD / "README.md"


def one(kind: str, name: str) -> dict[str, Any]:
    (hit,) = [m.doc for m in MANIFESTS if m.kind == kind and m.name == name]
    return hit


def wave(doc: dict[str, Any]) -> int:
    return int(doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.id for m in MANIFESTS])
def test_manifest_validates_against_crd(manifest: argo.Manifest) -> None:
    errors = argo.schema_errors(manifest.doc)
    assert not errors, f"{manifest.id} ({manifest.kind} {manifest.name}):\n" + "\n".join(errors)


def test_expected_objects_exist() -> None:
    kinds = {(m.kind, m.name) for m in MANIFESTS}
    assert {
        ("Application", "facepipe"),
        ("Application", "face-cloud"),
        ("ApplicationSet", "face-edge"),
        ("AppProject", "facepipe-root"),
        ("AppProject", "facepipe-cloud"),
        ("AppProject", "facepipe-edge"),
    } <= kinds
    assert all(m.path.parent.name == "projects" for m in MANIFESTS if m.kind == "AppProject" and m.path.parent.name != "standalone")


def test_every_yaml_file_is_a_manifest_or_a_values_file() -> None:
    """Nothing in argocd/ escapes validation: values files live in devices/ and values/, everything
    else is Argo CD objects in the argocd namespace (plain YAML that `kubectl apply -f` takes)."""
    for path in argo.yaml_files():
        if argo.is_values_file(path):
            continue
        docs = [m for m in MANIFESTS if m.path == path]
        assert docs, f"{path}: no documents"
        for m in docs:
            assert m.doc.get("apiVersion") == argo.API_VERSION, m.id
            assert m.doc["metadata"].get("namespace") == "argocd", f"{m.id}: metadata.namespace must be argocd"


# --- strictness -----------------------------------------------------------------------------------

MUTATIONS: list[tuple[str, str, str, Callable[[dict[str, Any]], None], str]] = [
    ("Application", "face-cloud", "typo in automated", lambda d: d["spec"]["syncPolicy"]["automated"].update(selfheal=True), "selfheal"),
    ("Application", "face-cloud", "unknown spec field", lambda d: d["spec"].update(replicas=2), "replicas"),
    ("Application", "face-cloud", "helm valueFile", lambda d: d["spec"]["sources"][0]["helm"].update(valueFile="x.yaml"), "valueFile"),
    ("Application", "facepipe", "destination cluster", lambda d: d["spec"]["destination"].update(cluster="in-cluster"), "cluster"),
    ("Application", "face-cloud", "metadata field", lambda d: d["metadata"].update(label={"a": "b"}), "label"),
    ("Application", "face-cloud", "wrong type", lambda d: d["spec"]["syncPolicy"]["retry"].update(limit="ten"), "ten"),
    (
        "ApplicationSet",
        "face-edge",
        "template typo",
        lambda d: d["spec"]["template"]["spec"]["syncPolicy"].update(automatic={}),
        "automatic",
    ),
    ("ApplicationSet", "face-edge", "generator typo", lambda d: d["spec"]["generators"][0]["git"].update(file=[]), "file"),
    (
        "ApplicationSet",
        "face-edge",
        "rollingSync typo",
        lambda d: d["spec"]["strategy"]["rollingSync"]["steps"][1].update(maxUpdates=1),
        "maxUpdates",
    ),
    ("AppProject", "facepipe-edge", "destination singular", lambda d: d["spec"].update(destination=[]), "destination"),
]


@pytest.mark.parametrize(("kind", "name", "case", "mutate", "field"), MUTATIONS, ids=[f"{m[0]}:{m[2]}" for m in MUTATIONS])
def test_unknown_or_wrong_fields_are_rejected(
    kind: str, name: str, case: str, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    """The schema validation is strict: a deliberately unknown field in an Application (and in the
    other kinds) is an error that names the field."""
    doc = copy.deepcopy(one(kind, name))
    assert not argo.schema_errors(doc)
    mutate(doc)
    errors = argo.schema_errors(doc)
    assert errors, f"{case}: accepted"
    assert any(field in e for e in errors), errors


def test_free_form_fields_stay_free() -> None:
    """Only where the CRD keeps unknown fields (helm valuesObject) are arbitrary keys accepted."""
    doc = copy.deepcopy(one("Application", "face-cloud"))
    doc["spec"]["sources"][0]["helm"]["valuesObject"] = {"anything": {"nested": [1, 2]}}
    assert not argo.schema_errors(doc)


def test_not_an_argo_kind_is_reported() -> None:
    assert argo.schema_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})


# --- wiring ---------------------------------------------------------------------------------------


def test_one_repository_url_everywhere() -> None:
    """Every repoURL and sourceRepos entry in argocd/ is the same URL (replace it in one go, as the
    README says), and the README names it."""
    urls: dict[str, set[str]] = {}
    for m in MANIFESTS:
        for where, url in argo.iter_repo_urls(m.doc):
            urls.setdefault(url, set()).add(f"{m.id}{where}")
    assert len(urls) == 1, f"repository URLs differ: {urls}"
    (url,) = urls
    assert url.startswith("https://") and url.endswith(".git"), url
    assert url in README.read_text(), "argocd/README.md must name the repository URL to replace"


def test_projects_exist_and_permit_their_applications() -> None:
    projects = {m.name: m.doc for m in MANIFESTS if m.kind == "AppProject"}
    apps = [m.doc for m in MANIFESTS if m.kind == "Application"]
    for app in apps:
        project = projects[app["spec"]["project"]]
        assert argo.destination_permitted(project, app["spec"]["destination"]), app["metadata"]["name"]
        for src in app["spec"]["sources"]:
            assert argo.source_permitted(project, src["repoURL"]), (app["metadata"]["name"], src["repoURL"])
    for appset in (m.doc for m in MANIFESTS if m.kind == "ApplicationSet"):
        assert appset["spec"]["template"]["spec"]["project"] in projects


def test_root_app_of_apps_syncs_projects_and_apps() -> None:
    root = one("Application", "facepipe")
    paths = sorted(s["path"] for s in root["spec"]["sources"])
    assert paths == ["argocd/apps", "argocd/projects"]
    for p in paths:
        assert (argo.REPO / p).is_dir()
    synced = {m.path.parent.name for m in MANIFESTS if m.path.parent.name in ("apps", "projects")}
    assert synced == {"apps", "projects"}
    assert root["spec"]["project"] == "facepipe-root"
    root_project = one("AppProject", "facepipe-root")
    kinds = {(w["group"], w["kind"]) for w in root_project["spec"]["namespaceResourceWhitelist"]}
    for m in MANIFESTS:
        if m.path.parent.name in ("apps", "projects"):
            assert ("argoproj.io", m.kind) in kinds, m.id
    assert root_project["spec"]["clusterResourceWhitelist"] == []


def test_bootstrap_is_documented() -> None:
    text = README.read_text()
    assert "kubectl apply -f argocd/projects/" in text and "argocd/root.yaml" in text


def test_sync_waves_projects_then_cloud_then_fleet() -> None:
    projects = [wave(m.doc) for m in MANIFESTS if m.kind == "AppProject" and m.path.parent.name == "projects"]
    cloud, fleet = wave(one("Application", "face-cloud")), wave(one("ApplicationSet", "face-edge"))
    assert max(projects) < cloud < fleet


def test_sync_policies() -> None:
    root = one("Application", "facepipe")["spec"]["syncPolicy"]
    cloud = one("Application", "face-cloud")["spec"]["syncPolicy"]
    edge = one("ApplicationSet", "face-edge")["spec"]
    assert root["automated"] == {"selfHeal": True, "prune": False}, "root: deleting a file must not cascade"
    assert cloud["automated"] == {"selfHeal": True, "prune": False}, "cloud: stored faces are never pruned automatically"
    assert edge["template"]["spec"]["syncPolicy"]["automated"] == {"selfHeal": True, "prune": True}
    assert "CreateNamespace=true" in cloud["syncOptions"]
    assert "CreateNamespace=true" in edge["template"]["spec"]["syncPolicy"]["syncOptions"]
    assert argo.FINALIZER in one("Application", "face-cloud")["metadata"]["finalizers"]
    assert "finalizers" not in one("Application", "facepipe")["metadata"], "deleting the root must not cascade"
    assert not (edge.get("syncPolicy") or {}).get("preserveResourcesOnDeletion"), "deleting a device file removes its resources"


def test_edge_applicationset_shape() -> None:
    spec = one("ApplicationSet", "face-edge")["spec"]
    assert spec["goTemplate"] is True
    assert spec["goTemplateOptions"] == ["missingkey=error"]
    (gen,) = spec["generators"]
    assert [f["path"] for f in gen["git"]["files"]] == ["argocd/devices/*/*.yaml"]
    assert spec["strategy"]["type"] == "RollingSync"
    steps = spec["strategy"]["rollingSync"]["steps"]
    assert [s["matchExpressions"] for s in steps] == [
        [{"key": "facepipe.io/ring", "operator": "In", "values": ["canary"]}],
        [{"key": "facepipe.io/ring", "operator": "In", "values": ["stable"]}],
    ]
    sources = spec["template"]["spec"]["sources"]
    assert any(s.get("ref") == "values" for s in sources)
    chart = next(s for s in sources if s.get("path"))
    assert chart["path"] == "charts/face-edge"
    assert all(v.startswith("$values/") for v in chart["helm"]["valueFiles"])


def test_cloud_application_shape() -> None:
    spec = one("Application", "face-cloud")["spec"]
    chart = next(s for s in spec["sources"] if s.get("path"))
    assert chart["path"] == "charts/face-cloud"
    assert chart["helm"]["valueFiles"] == ["$values/argocd/values/cloud.yaml"]
    assert spec["destination"] == {"server": argo.IN_CLUSTER, "namespace": "facepipe"}


def test_readme_covers_the_walkthrough() -> None:
    text = README.read_text().lower()
    for topic in (
        "bootstrap",
        "add a device",
        "change a device",
        "remove a device",
        "prune",
        "canary",
        "nat",
        "argocd-agent",
        "standalone",
    ):
        assert topic in text, f"argocd/README.md does not cover {topic!r}"
    for path in re.findall(r"`(argocd/[\w./*-]+)`", README.read_text()):
        if "*" not in path and not path.startswith("argocd/devices/"):  # devices: new ones as examples
            assert (argo.REPO / path).exists(), f"README mentions {path}, which does not exist"
    for device in (argo.ARGOCD / "devices").glob("*/*.yaml"):
        assert f"{device.parent.name}/{device.name}" in README.read_text(), f"README's layout lacks {device}"
