"""The gallery in face-cloud: off by default; its objects, wiring, Secret, NetworkPolicy, helm test and refusals.

The helm test pod is also run for real: its command, with the env and the Secret the chart renders,
against a real gallery that reads the users file from that Secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from facepipe import contract
from facepipe.config import StoreSettings
from facepipe.contract import FaceMeta
from facepipe.gallery.auth import parse_users
from facepipe.probe import synthetic_face
from facepipe.storage import open_store
from facepipe_dev import helm as h
from facepipe_dev.gallery import start_gallery, unreachable_store

CHART = "face-cloud"
HASH = "scrypt$16384$8$1$c2FsdA$a2V5"
USERS = (
    "gallery.enabled=true", "gallery.auth.users[0].name=ann", "gallery.auth.users[0].role=admin",
    f"gallery.auth.users[0].passwordHash={HASH}",
)  # fmt: skip


def render(helm: h.Helm, *sets: str) -> list[dict[str, Any]]:
    return helm.template(CHART, sets=sets)


def gallery_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = h.containers(h.find(docs, "Deployment", "gallery"))
    return h.env_map(container)


def test_the_gallery_is_off_by_default(helm: h.Helm) -> None:
    docs = render(helm)
    assert not [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in ("gallery", "gallery-test")]
    access = h.broker_access(docs, ["gallery"])
    assert h.grants(access, "gallery") == {("publishClientSend", "cam_bin_remote/gallery"), ("publishClientSend", "cam_bin_remote/gallery/status/+")}


def test_the_gallery_reads_the_store_and_subscribes_read_only(helm: h.Helm) -> None:
    docs = render(helm, *USERS, "processor.store.type=s3", "processor.store.s3.bucket=faces", "processor.store.s3.credentials.existingSecret=s3-keys")
    env = gallery_env(docs)
    assert env["FACEPIPE_STORE"] == "s3://faces/faces" and env["FACEPIPE_GALLERY_USERS_FILE"] == "/etc/facepipe/gallery/users"
    assert (env["REMOTE_MQTT_USERNAME"], env["REMOTE_MQTT_QOS"], env["REMOTE_MQTT_TOPIC"]) == ("gallery", "0", "cam_bin_remote")
    assert "FACEPIPE_SHARE_GROUP" not in env, "a plain subscription: every replica sees every face"
    (container,) = h.containers(h.find(docs, "Deployment", "gallery"))
    assert h.env_item(container, "AWS_ACCESS_KEY_ID")["valueFrom"]["secretKeyRef"]["name"] == "s3-keys"
    access = h.broker_access(docs, ["processor", "gallery"])
    assert h.grants(access, "gallery") == {("subscribeLiteral", "cam_bin_remote/#"), ("publishClientReceive", "cam_bin_remote/#")}
    users = next(d for d in h.by_kind(docs, "Secret") if d["metadata"]["name"].endswith("-broker-users"))
    assert "gallery" in users["data"]
    own = render(helm, *USERS, "processor.store.type=s3", "processor.store.s3.bucket=faces", "gallery.store.s3.credentials.existingSecret=read-only")
    (container,) = h.containers(h.find(own, "Deployment", "gallery"))
    assert h.env_item(container, "AWS_SECRET_ACCESS_KEY")["valueFrom"]["secretKeyRef"]["name"] == "read-only"


def test_the_chart_made_secret_holds_hashes_and_a_kept_session_key(helm: h.Helm) -> None:
    docs = render(helm, *USERS)
    secret = h.find(docs, "Secret", "gallery")["data"]
    users = parse_users(base64.b64decode(secret["users"]).decode())
    assert users["ann"].role == "admin" and users["ann"].hash == HASH
    token = base64.b64decode(secret["probe-token"]).decode()
    assert users["facepipe-probe"].role == "viewer" and users["facepipe-probe"].hash == "sha256$" + hashlib.sha256(token.encode()).hexdigest()
    assert token not in base64.b64decode(secret["users"]).decode(), "the users file holds hashes only"
    assert len(base64.b64decode(secret["session-secret"])) >= 32
    pod = h.find(docs, "Pod", "gallery-test")
    env = h.env_map(pod["spec"]["containers"][0])
    assert env["FACEPIPE_PROBE_GALLERY_URL"].startswith("http://") and env["FACEPIPE_PROBE_GALLERY_USER"] == "facepipe-probe"
    deployment = h.find(docs, "Deployment", "gallery")
    assert "checksum/gallery" in deployment["spec"]["template"]["metadata"]["annotations"]


def test_the_proxy_port_admits_the_proxy_alone(helm: h.Helm) -> None:
    proxy_from = "gallery.auth.proxy.from[0].podSelector.matchLabels.app=oauth2-proxy"
    docs = render(helm, *USERS, "gallery.auth.proxy.enabled=true", proxy_from, "gallery.auth.proxy.adminGroups[0]=officers")
    policy = h.find(docs, "NetworkPolicy", "gallery")["spec"]["ingress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in policy}
    assert by_port["proxy"]["from"] == [{"podSelector": {"matchLabels": {"app": "oauth2-proxy"}}}]
    assert "from" not in by_port["gallery"], "the pages: whoever reaches them through the Ingress (and logs in)"
    env = gallery_env(docs)
    assert (env["FACEPIPE_GALLERY_PROXY_PORT"], env["FACEPIPE_GALLERY_ADMIN_GROUPS"]) == ("8082", "officers")
    service_ports = {p["name"]: p for p in h.find(docs, "Service", "gallery")["spec"]["ports"]}
    assert set(service_ports) == {"gallery", "proxy", "http"}


def test_the_ingress_goes_to_the_gallery_port(helm: h.Helm) -> None:
    docs = render(helm, *USERS, "gallery.ingress.enabled=true", "gallery.ingress.className=traefik", "gallery.ingress.tls[0].secretName=faces-tls")
    ingress = h.by_kind(docs, "Ingress")[0]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["port"] == {"name": "gallery"} and ingress["spec"]["ingressClassName"] == "traefik"
    assert "https://faces.example.com/" in helm.notes(CHART, sets=[*USERS, "gallery.ingress.enabled=true", "gallery.ingress.tls[0].secretName=faces-tls"])


def test_notes_say_how_to_open_the_gallery(helm: h.Helm) -> None:
    notes = helm.notes(CHART, sets=USERS)
    assert "port-forward svc/" in notes and "gallery" in notes and "ann (admin)" in notes
    assert "WARNING: gallery.auth.anonymous=viewer" in helm.notes(CHART, sets=["gallery.enabled=true", "gallery.auth.anonymous=viewer"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("gallery.enabled=true",), "the gallery would let nobody in"),
        ((*USERS, "gallery.auth.proxy.enabled=true"), "needs gallery.auth.proxy.from"),
        ((*USERS, "gallery.auth.proxy.enabled=true", "gallery.auth.proxy.from[0].podSelector.matchLabels.a=b", "networkPolicy.enabled=false"), "needs networkPolicy.enabled"),
        ((*USERS, "gallery.auth.existingSecret=mine"), "is ignored with gallery.auth.existingSecret"),
        ((*USERS, "gallery.port=8080"), "must differ from httpPort"),
        ((*USERS, "broker.auth.devices[0].name=gallery", "broker.auth.devices[0].password=long-enough-1"), "processor, probe or gallery user"),
    ],
)
def test_contradictions_are_refused(helm: h.Helm, sets: tuple[str, ...], message: str) -> None:
    result = helm.run("template", "t", str(h.chart_dir(CHART)), *[arg for s in sets for arg in ("--set", s)], check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("gallery.auth.users[0].passwordHash=plain-text", "passwordHash"),
        ("gallery.auth.users[0].role=root", "role"),
        ("gallery.pageSize=5000", "pageSize"),
        ("gallery.auth.anonymous=everyone", "anonymous"),
        ("gallery.auth.proxy.userHeader=X Bad Header", "userHeader"),
        ("gallery.ingress.hosts[0].paths[0].pathType=Regex", "pathType"),
    ],
)
def test_the_schema_rejects_bad_gallery_values(helm: h.Helm, value: str, field: str) -> None:
    result = helm.run("template", "t", str(h.chart_dir(CHART)), *[arg for s in (*USERS, value) for arg in ("--set", s)], check=False)
    assert result.returncode != 0 and field in result.stderr and "schema" in result.stderr.lower(), result.stderr


def run_test_pod(pod: dict[str, Any], secret: dict[str, str], gallery_url: str, timeout: str) -> tuple[int, list[dict[str, Any]]]:
    """The helm test pod's container as a local process: its command and env, the password from the rendered Secret,
    the gallery's Service address replaced by `gallery_url`; (exit status, JSON log lines)."""
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["facepipe"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPIPE_", "AWS_"))}
    env.update(h.env_map(container))
    password = h.env_item(container, "FACEPIPE_PROBE_GALLERY_PASSWORD")["valueFrom"]["secretKeyRef"]  # type: ignore[index]
    env["FACEPIPE_PROBE_GALLERY_PASSWORD"] = base64.b64decode(secret[password["key"]]).decode()
    env.update(FACEPIPE_PROBE_GALLERY_URL=gallery_url, FACEPIPE_PROBE_TIMEOUT=timeout)
    done = subprocess.run([sys.executable, "-m", "facepipe", *container["args"]], env=env, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    return done.returncode, lines


def test_the_helm_test_pod_signs_in_to_a_real_gallery_and_reads_its_api(helm_any: h.Helm, tmp_path: Path) -> None:
    docs = render(helm_any, *USERS)
    secret = h.find(docs, "Secret", "gallery")["data"]
    pod = h.find(docs, "Pod", "gallery-test")
    users = tmp_path / "users"
    users.write_bytes(base64.b64decode(secret["users"]))
    storage = StoreSettings(store=f"file://{tmp_path / 'faces'}")
    store = open_store(storage)
    meta = FaceMeta("edge-1", "cam0", "b0", 1, datetime.now(UTC), 1, 0, (0, 0, 96, 96), 0.9, "yunet/2023mar")
    store.put(contract.object_key(store.prefix, meta), synthetic_face(), meta.storage_metadata())
    store.sync()
    gallery = start_gallery(tmp_path / "up", storage, users_file=str(users))
    try:
        status, lines = run_test_pod(pod, secret, gallery.gallery_url, "30")  # type: ignore[attr-defined]
        assert status == 0, lines
        assert [(line["event"], line["devices"]) for line in lines if line["event"] == "probe.ok"] == [("probe.ok", 1)]
        wrong = {**secret, "probe-token": base64.b64encode(b"not-the-token").decode()}
        status, lines = run_test_pod(pod, wrong, gallery.gallery_url, "2")  # type: ignore[attr-defined]
        assert status == 1 and "401" in lines[-1]["error"], lines
    finally:
        gallery.stop()
    down, env = unreachable_store()
    gallery = start_gallery(tmp_path / "down", down, users_file=str(users), extra_env=env)
    try:
        status, lines = run_test_pod(pod, secret, gallery.gallery_url, "2")  # type: ignore[attr-defined]
        assert status == 1 and "cannot read its store" in lines[-1]["error"], lines
    finally:
        gallery.stop()
