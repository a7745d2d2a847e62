"""Argo CD sync waves (argocd/README.md, "Sync waves"): every object carries the wave of the table
below, by the template that renders it, in every profile; nothing else carries one; the waves merge
with commonAnnotations and the objects' own annotations, and argocd.syncWaves.enabled=false removes
them. Whether the waves are sound (broker before clients, PVC with its pod) is checked against the
Argo CD values in tests/gitops/test_render.py."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from facepipe_dev import helm as h

WAVE = h.SYNC_WAVE
WAVES = h.SYNC_WAVES
SYNC_OPTIONS = "argocd.argoproj.io/sync-options"

# Templates that render no object Argo CD syncs: the values check, and the helm test hooks.
NOT_SYNCED = {"validate.yaml"}

CASES = [(chart, profile) for chart in h.CHART_NAMES for profile in h.profile_ids(chart)]
CASE_IDS = [f"{chart}:{profile}" for chart, profile in CASES]


def template(doc: Mapping[str, Any]) -> str:
    return doc["_source"].rpartition("/templates/")[2]


def synced(docs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [d for d in docs if not template(d).startswith("tests/")]


def annotations(doc: Mapping[str, Any]) -> dict[str, str]:
    return doc["metadata"].get("annotations") or {}


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_every_template_has_a_wave(chart: str) -> None:
    templates = {p.name for p in (h.chart_dir(chart) / "templates").glob("*.yaml")}
    assert templates - NOT_SYNCED == set(WAVES[chart])


@pytest.mark.parametrize(("chart", "profile"), CASES, ids=CASE_IDS)
def test_objects_carry_their_wave(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    docs = render_cache.get(helm, chart, profile)
    wrong = {
        f"{doc['kind']}/{doc['metadata']['name']} ({template(doc)})": annotations(doc).get(WAVE)
        for doc in synced(docs)
        if annotations(doc).get(WAVE, "0") != WAVES[chart][template(doc)]
        or (WAVES[chart][template(doc)] == "0" and WAVE in annotations(doc))
    }
    assert not wrong, wrong
    assert {annotations(d).get(WAVE) for d in synced(docs)} >= {"-1", None}
    # The pods carry no wave: Argo CD syncs the objects, not what their controllers make.
    for doc in h.workloads(docs):
        if doc["kind"] != "Pod":
            assert WAVE not in (doc["spec"]["template"]["metadata"].get("annotations") or {})
    # helm test hooks: never synced by Argo CD (skipTests), so no wave.
    assert not [d for d in docs if template(d).startswith("tests/") and WAVE in annotations(d)]


def comparable(docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The synced objects without their sync waves, and without what differs on every render:
    generated passwords and certificates, and the checksums that hash them (and the waves)."""
    out = []
    for doc in synced(docs):
        doc = copy.deepcopy(h.strip_source(doc))
        doc["metadata"].get("annotations", {}).pop(WAVE, None)
        if doc["metadata"].get("annotations") == {}:
            del doc["metadata"]["annotations"]
        if doc["kind"] == "Secret":
            doc["data"] = sorted(doc.get("data", {}))
        for key in doc.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}):
            if key.startswith("checksum/"):
                doc["spec"]["template"]["metadata"]["annotations"][key] = "*"
        out.append(doc)
    return sorted(out, key=lambda d: (d["kind"], d["metadata"]["name"]))


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_disabled_waves_change_nothing_else(helm: h.Helm, chart: str) -> None:
    sets = h.DEFAULT_SETS[chart]
    off = helm.template(chart, sets=[*sets, "argocd.syncWaves.enabled=false"])
    assert not [d["metadata"]["name"] for d in off if WAVE in annotations(d)]
    assert comparable(helm.template(chart, sets=sets)) == comparable(off)


def test_waves_merge_with_common_and_own_annotations(helm: h.Helm, tmp_path: Path) -> None:
    edge = synced(
        helm.template(
            "face-edge",
            sets=[*h.DEFAULT_SETS["face-edge"], "commonAnnotations.team=vision", "serviceAccount.annotations.owner=edge"],
        )
    )
    for doc in edge:
        assert annotations(doc)["team"] == "vision", doc["metadata"]["name"]
        assert annotations(doc).get(WAVE, "0") == WAVES["face-edge"][template(doc)]
    assert annotations(h.by_kind(edge, "ServiceAccount")[0]) == {"team": "vision", "owner": "edge", WAVE: "-1"}

    values = tmp_path / "cloud.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "commonAnnotations": {"team": "faces"},
                "broker": {"service": {"annotations": {"lb": "internal"}}},
                # An object's own annotations win over the chart's wave and commonAnnotations.
                "serviceAccount": {"annotations": {WAVE: "-5", "team": "sa"}},
            }
        )
    )
    cloud = synced(helm.template("face-cloud", [values]))
    for doc in cloud:
        assert "team" in annotations(doc), doc["metadata"]["name"]
        if doc["kind"] != "ServiceAccount":
            assert annotations(doc).get(WAVE, "0") == WAVES["face-cloud"][template(doc)]
    assert annotations(h.by_kind(cloud, "ServiceAccount")[0]) == {"team": "sa", WAVE: "-5"}
    external = next(d for d in cloud if template(d) == "broker-service-external.yaml")
    assert annotations(external) == {"team": "faces", "lb": "internal"}


@pytest.mark.parametrize("waves", ["true", "false"])
def test_faces_claim_is_never_pruned(helm: h.Helm, waves: str) -> None:
    docs = helm.template("face-cloud", sets=[f"argocd.syncWaves.enabled={waves}", "commonAnnotations.team=faces"])
    (claim,) = [d for d in docs if template(d) == "processor-faces-pvc.yaml"]
    assert annotations(claim) == {"helm.sh/resource-policy": "keep", SYNC_OPTIONS: "Prune=false", "team": "faces"}
    assert not [d["metadata"]["name"] for d in docs if SYNC_OPTIONS in annotations(d) and d is not claim]
