"""The Applications the face-edge ApplicationSet would generate from the device files (git files
generator + goTemplate with missingkey=error, emulated in tests/gitops/argo.py): unique names,
valid and permitted destinations, one ring each, and a clear error for a device file without its
key. Also the per-device (standalone) ApplicationSet: same Application, deployed in-cluster."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitops import argo

if not argo.CRD_DIR.is_dir():
    pytest.skip(f"Argo CD CRD schemas not found at {argo.CRD_DIR}", allow_module_level=True)

MANIFESTS = argo.manifests()
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RINGS = ("canary", "stable")
DEVICE_FILES = sorted((argo.ARGOCD / "devices").glob("*/*.yaml"))


def one(kind: str, name: str) -> dict[str, Any]:
    (hit,) = [m.doc for m in MANIFESTS if m.kind == kind and m.name == name]
    return hit


APPSET = one("ApplicationSet", "face-edge")
STANDALONE = one("ApplicationSet", "face-edge-device")
PROJECTS = {m.name: m.doc for m in MANIFESTS if m.kind == "AppProject"}
GENERATED = argo.generate(APPSET)


def device(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


# --- the device files ----------------------------------------------------------------------------


def test_device_files_are_laid_out_by_ring() -> None:
    """argocd/devices/<ring>/<deviceId>.yaml and nothing else: the generator's glob reads exactly
    these (also under Argo CD's older glob, where * crosses /), and the ring is the folder."""
    devices = argo.ARGOCD / "devices"
    for path in devices.rglob("*"):
        rel = path.relative_to(devices)
        if path.is_dir():
            assert len(rel.parts) == 1 and rel.parts[0] in RINGS, f"unexpected folder {path}"
        else:
            assert len(rel.parts) == 2 and path.suffix == ".yaml", f"unexpected file {path}"
    assert {g.source for g in GENERATED} == set(DEVICE_FILES)


def test_examples_cover_the_fleet() -> None:
    """At least three devices: both rings, different video devices, an RTSP camera, each access mode."""
    docs = [device(p) for p in DEVICE_FILES]
    assert len(docs) >= 3
    assert {p.parent.name for p in DEVICE_FILES} == set(RINGS)
    cameras = [d.get("camera", {}) for d in docs]
    assert any(c.get("source", "").startswith("rtsp://") for c in cameras)
    assert len({c["device"] for c in cameras if "device" in c and not c.get("source")}) >= 2
    assert {c.get("accessMode") for c in cameras if not c.get("source")} >= {"privileged", "hostDevice", "devicePlugin"}


@pytest.mark.parametrize("path", DEVICE_FILES, ids=[p.stem for p in DEVICE_FILES])
def test_device_file_is_named_after_its_device(path: Path) -> None:
    """The file name is the deviceId (the standalone bootstrap finds a device's file by it), and the
    id is a DNS label: it names the Application and the device's cluster or agent."""
    doc = device(path)
    assert doc.get("deviceId") == path.stem
    assert DNS_LABEL.match(path.stem) and len(f"face-edge-{path.stem}") <= 63, path.stem
    assert "path" not in doc and "values" not in doc, "keys the generator sets itself"


def test_device_files_hold_no_plaintext_secrets() -> None:
    for path in [*DEVICE_FILES, argo.ARGOCD / "values" / "edge-common.yaml", argo.ARGOCD / "values" / "cloud.yaml"]:
        text = path.read_text()
        assert not re.search(r"^\s*(password|secretAccessKey|accessKeyId):\s*\S", text, re.MULTILINE), path


# --- the generated Applications -------------------------------------------------------------------


def test_one_application_per_device_with_unique_names() -> None:
    names = [g.name for g in GENERATED]
    assert len(names) == len(DEVICE_FILES)
    assert len(set(names)) == len(names), names
    others = [m.name for m in MANIFESTS if m.kind == "Application"]
    assert not set(names) & set(others), "a device Application would collide with face-cloud or the root"
    for g in GENERATED:
        assert g.name == f"face-edge-{g.params['deviceId']}"
        assert g.app["metadata"]["namespace"] == "argocd"
        assert g.app["metadata"]["labels"]["facepipe.io/device"] == g.params["deviceId"]


@pytest.mark.parametrize("gen", GENERATED, ids=[g.name for g in GENERATED])
def test_generated_application_validates(gen: argo.Generated) -> None:
    errors = argo.schema_errors(gen.app)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("gen", GENERATED, ids=[g.name for g in GENERATED])
def test_destination_is_valid_and_permitted(gen: argo.Generated) -> None:
    dst = gen.app["spec"]["destination"]
    assert bool(dst.get("name")) != bool(dst.get("server")), f"exactly one of name and server: {dst}"
    if dst.get("name"):
        assert DNS_LABEL.match(dst["name"]) and len(dst["name"]) <= 63, dst
    else:
        assert re.match(r"^https://[^\s/]+(:\d+)?(/.*)?$", dst["server"]), dst
    assert DNS_LABEL.match(dst["namespace"]), dst
    project = PROJECTS[gen.app["spec"]["project"]]
    assert argo.destination_permitted(project, dst)
    assert not argo.destination_permitted(project, {"server": argo.IN_CLUSTER, "namespace": "facepipe"}), (
        "edge apps must not reach the cloud cluster by URL"
    )
    assert not argo.destination_permitted(project, {**dst, "namespace": "kube-system"})
    assert project["spec"]["permitOnlyProjectScopedClusters"] is True
    for src in gen.app["spec"]["sources"]:
        assert argo.source_permitted(project, src["repoURL"])


@pytest.mark.parametrize("gen", GENERATED, ids=[g.name for g in GENERATED])
def test_each_device_is_in_exactly_one_rollout_step(gen: argo.Generated) -> None:
    """An Application that no RollingSync step selects is never synced by the rollout."""
    assert gen.app["metadata"]["labels"]["facepipe.io/ring"] == gen.source.parent.name
    assert len(argo.rolling_steps(APPSET, gen.app)) == 1


def test_canary_ring_goes_first() -> None:
    first = [g.source.parent.name for g in GENERATED if argo.rolling_steps(APPSET, g.app) == [0]]
    assert first and set(first) == {"canary"}


@pytest.mark.parametrize("gen", GENERATED, ids=[g.name for g in GENERATED])
def test_values_are_common_then_device(gen: argo.Generated) -> None:
    inputs = argo.helm_inputs(gen.app)
    assert inputs.chart == argo.REPO / "charts" / "face-edge"
    assert inputs.value_files == [argo.ARGOCD / "values" / "edge-common.yaml", gen.source]
    assert (inputs.release, inputs.namespace) == ("face-edge", "facepipe")


# --- a device file missing its key ----------------------------------------------------------------


def fleet_copy(tmp_path: Path) -> Path:
    shutil.copytree(argo.ARGOCD / "devices", tmp_path / "argocd" / "devices")
    return tmp_path


def test_device_file_without_device_id_fails_naming_the_key(tmp_path: Path) -> None:
    root = fleet_copy(tmp_path)
    broken = root / "argocd" / "devices" / "stable" / "new-device.yaml"
    broken.write_text("# forgot deviceId\ncamera:\n  device: /dev/video1\n")
    with pytest.raises(argo.MissingKeyError) as err:
        argo.generate(APPSET, root)
    assert err.value.key == "deviceId"
    assert 'map has no entry for key "deviceId"' in str(err.value)
    assert "face-edge-{{.deviceId}}" in str(err.value), "the message shows the template that failed"


def test_without_missingkey_error_the_same_file_would_slip_through(tmp_path: Path) -> None:
    """Why the option matters: Go's default prints <no value> and generation goes on."""
    root = fleet_copy(tmp_path)
    (root / "argocd" / "devices" / "stable" / "new-device.yaml").write_text("camera: {device: /dev/video1}\n")
    lax = copy.deepcopy(APPSET)
    del lax["spec"]["goTemplateOptions"]
    names = [g.name for g in argo.generate(lax, root)]
    assert "face-edge-<no value>" in names


def test_empty_device_file_fails_too(tmp_path: Path) -> None:
    root = fleet_copy(tmp_path)
    (root / "argocd" / "devices" / "canary" / "empty.yaml").write_text("")
    with pytest.raises(argo.MissingKeyError, match="deviceId"):
        argo.generate(APPSET, root)


def test_adding_and_removing_a_file_adds_and_removes_an_application(tmp_path: Path) -> None:
    root = fleet_copy(tmp_path)
    before = {g.name for g in argo.generate(APPSET, root)}
    (root / "argocd" / "devices" / "stable" / "dock-3.yaml").write_text("deviceId: dock-3\npodSecurity: {level: restricted}\ncamera: {device: /dev/video1}\n")
    (root / "argocd" / "devices" / "stable" / "gate-2.yaml").unlink()
    after = {g.name for g in argo.generate(APPSET, root)}
    assert after == (before - {"face-edge-gate-2"}) | {"face-edge-dock-3"}


def test_exclude_entry_leaves_a_device_out() -> None:
    """A device run by its own Argo CD is excluded from the central ApplicationSet by one entry."""
    appset = copy.deepcopy(APPSET)
    appset["spec"]["generators"][0]["git"]["files"].append({"path": "argocd/devices/*/pi-kitchen.yaml", "exclude": True})
    assert not argo.schema_errors(appset)
    names = {g.name for g in argo.generate(appset)}
    assert names == {g.name for g in GENERATED} - {"face-edge-pi-kitchen"}


# --- the Go template emulation itself -------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    ["{{ .deviceId | lower }}", "{{ lower .deviceId }}", "{{ if .x }}a{{ end }}", '{{ index .path "basename" }}', "{{ $x := 1 }}"],
)
def test_unsupported_template_constructs_are_refused(template: str) -> None:
    with pytest.raises(argo.UnsupportedTemplate):
        argo.render(template, {"deviceId": "a", "path": {"basename": "b"}, "x": 1}, ["missingkey=error"])


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a", "a"),
        (8883, "8883"),
        (123456, "123456"),
        (1000000, "1e+06"),
        (0.6, "0.6"),
        (1e-05, "1e-05"),
        (True, "true"),
        (None, "<no value>"),
    ],
)
def test_values_print_like_go(value: Any, text: str) -> None:
    assert argo.render("{{.v}}", {"v": value}) == text


def test_trim_markers_and_nested_keys() -> None:
    params = {"path": {"basename": "canary"}, "a": {"b": {"c": "deep"}}}
    assert argo.render("x {{- .path.basename -}} y", params) == "xcanaryy"
    assert argo.render("{{.a.b.c}}", params, ["missingkey=error"]) == "deep"
    with pytest.raises(argo.MissingKeyError, match='"d"'):
        argo.render("{{.a.b.d}}", params, ["missingkey=error"])


# --- the standalone (per-device Argo CD) ApplicationSet -------------------------------------------


def standalone_for(device_id: str) -> dict[str, Any]:
    text = yaml.safe_dump(STANDALONE).replace("DEVICE_ID", device_id)
    return yaml.safe_load(text)


def test_standalone_unedited_matches_nothing() -> None:
    assert argo.generate(STANDALONE) == []


@pytest.mark.parametrize("gen", GENERATED, ids=[g.name for g in GENERATED])
def test_standalone_makes_the_same_application_in_cluster(gen: argo.Generated) -> None:
    appset = standalone_for(gen.params["deviceId"])
    assert not argo.schema_errors(appset)
    (local,) = argo.generate(appset)
    assert local.name == gen.name
    assert local.app["metadata"]["labels"] == gen.app["metadata"]["labels"]
    central, own = argo.helm_inputs(gen.app), argo.helm_inputs(local.app)
    assert (own.chart, own.value_files, own.release, own.namespace) == (
        central.chart,
        central.value_files,
        central.release,
        central.namespace,
    )
    assert local.app["spec"]["destination"] == {"server": argo.IN_CLUSTER, "namespace": "facepipe"}
    assert own.revision == ("HEAD" if gen.source.parent.name == "canary" else "stable")
    project = PROJECTS[local.app["spec"]["project"]]
    assert argo.destination_permitted(project, local.app["spec"]["destination"])
    assert local.app["spec"]["syncPolicy"] == gen.app["spec"]["syncPolicy"]
    assert not argo.schema_errors(local.app)
