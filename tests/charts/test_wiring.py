"""Wiring of the rendered objects: what reaches which container, which port, which Secret."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from facepipe import contract
from facepipe_dev import helm as h
from facepipe.metric_names import FORWARDER_FORWARDED, PROCESSOR_STORED

EDGE = [p for p in h.profile_ids("face-edge")]
CLOUD = [p for p in h.profile_ids("face-cloud")]
ALL = [("face-edge", p) for p in EDGE] + [("face-cloud", p) for p in CLOUD]
ALL_IDS = [f"{c}:{p}" for c, p in ALL]
APP_IMAGE = re.compile(r"(^|/)facepipe/facepipe[:@]")


def app_containers(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in h.containers(doc, init=False) if APP_IMAGE.search(c["image"])]


def env_value(container: Mapping[str, Any], name: str) -> str | None:
    item = h.env_item(container, name)
    return None if item is None else item.get("value")


# --- face-edge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", EDGE)
def test_forwarder_carries_cloud_host_and_uplink(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    values = h.effective_values("face-edge", profile)
    docs = render_cache.get(helm, "face-edge", profile)
    (fwd,) = h.find(docs, "Deployment", "forwarder")["spec"]["template"]["spec"]["containers"]
    cloud = values["cloud"]
    assert env_value(fwd, "REMOTE_MQTT_HOST") == cloud["host"]
    assert env_value(fwd, "REMOTE_MQTT_PORT") == str(cloud["port"])
    assert env_value(fwd, "REMOTE_MQTT_TOPIC") == cloud["topic"]
    assert env_value(fwd, "REMOTE_MQTT_TLS") == str(cloud["tls"]["enabled"]).lower()
    device = values["deviceId"] or h.RELEASE
    assert env_value(fwd, "FACEPIPE_DEVICE_ID") == device
    auth = cloud["auth"]
    if auth["existingSecret"] or auth["password"]:
        for name, key in (("REMOTE_MQTT_USERNAME", auth["usernameKey"]), ("REMOTE_MQTT_PASSWORD", auth["passwordKey"])):
            ref = h.env_item(fwd, name)["valueFrom"]["secretKeyRef"]
            assert ref["key"] == key
            if auth["existingSecret"]:
                assert ref["name"] == auth["existingSecret"]
    else:
        assert h.env_item(fwd, "REMOTE_MQTT_PASSWORD") is None
    mounts = {m["mountPath"]: m["name"] for m in fwd.get("volumeMounts", [])}
    ca_file = env_value(fwd, "REMOTE_MQTT_CA_FILE")
    if cloud["tls"]["enabled"] and (cloud["tls"]["ca"]["existingSecret"] or cloud["tls"]["ca"]["pem"]):
        assert ca_file and ca_file.rsplit("/", 1)[0] in mounts
    else:
        assert ca_file is None
    if cloud["tls"]["enabled"] and cloud["tls"]["clientCert"]["existingSecret"]:
        assert env_value(fwd, "REMOTE_MQTT_CERT_FILE").rsplit("/", 1)[0] in mounts
        assert env_value(fwd, "REMOTE_MQTT_KEY_FILE").rsplit("/", 1)[0] in mounts


@pytest.mark.parametrize("profile", EDGE)
def test_edge_apps_reach_the_broker_by_service_name(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    values = h.effective_values("face-edge", profile)
    docs = render_cache.get(helm, "face-edge", profile)
    svc = h.find(docs, "Service", "broker")
    assert svc["spec"]["type"] == "ClusterIP", "the edge broker stays inside the cluster"
    (port,) = svc["spec"]["ports"]
    assert port["port"] == values["broker"]["port"]
    for doc in h.workloads(docs):
        for c in app_containers(doc):
            assert env_value(c, "LOCAL_MQTT_HOST") == svc["metadata"]["name"], (doc["metadata"]["name"], c["name"])
            assert env_value(c, "LOCAL_MQTT_PORT") == str(port["port"])
            assert env_value(c, "LOCAL_MQTT_TOPIC") == values["mqtt"]["topic"]
            if values["broker"]["auth"]["enabled"]:
                assert "secretKeyRef" in h.env_item(c, "LOCAL_MQTT_PASSWORD")["valueFrom"]
            else:
                assert h.env_item(c, "LOCAL_MQTT_PASSWORD") is None


@pytest.mark.parametrize("profile", EDGE)
def test_camera_device_and_privilege_per_access_mode(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    values = h.effective_values("face-edge", profile)
    cam_values = values["camera"]
    docs = render_cache.get(helm, "face-edge", profile)
    deploy = h.find(docs, "Deployment", "camera")
    spec = deploy["spec"]["template"]["spec"]
    (cam,) = spec["containers"]
    source = cam_values["source"] or cam_values["device"]
    assert env_value(cam, "FACEPIPE_SOURCE") == source
    uses_device = source.startswith("/dev/")
    mode = cam_values["accessMode"]
    host_paths = [v for v in spec["volumes"] if "hostPath" in v]
    devices = [v for v in host_paths if v["hostPath"].get("type") == "CharDevice"]
    resources = cam.get("resources", {})
    plugin = cam_values["devicePlugin"]["resourceName"]
    privileged = cam["securityContext"].get("privileged", False)

    # Privileged only in privileged mode with a device; every other container never.
    assert privileged == (uses_device and mode == "privileged")
    for doc in h.workloads(docs):
        for c in h.containers(doc):
            if c is not cam:
                assert not c.get("securityContext", {}).get("privileged", False), c["name"]

    if uses_device and mode in ("privileged", "hostDevice"):
        # Exactly the configured device, from the node, at the same path.
        assert [v["hostPath"]["path"] for v in devices] == [source]
        mounts = [m for m in cam["volumeMounts"] if m["name"] == devices[0]["name"]]
        assert [m["mountPath"] for m in mounts] == [source]
        assert plugin not in resources.get("limits", {})
    elif uses_device and mode == "devicePlugin":
        assert devices == []
        assert resources["limits"][plugin] == str(cam_values["devicePlugin"]["count"])
    else:
        assert devices == []
        assert plugin not in resources.get("limits", {})
    groups = spec["securityContext"].get("supplementalGroups", [])
    assert groups == ([cam_values["videoGroupId"]] if uses_device else [])
    if mode == "hostDevice" and uses_device:
        assert cam["securityContext"]["allowPrivilegeEscalation"] is False
        assert cam["securityContext"]["capabilities"]["drop"] == ["ALL"]


def spool_volume_type(spool: Mapping[str, Any]) -> str:
    """The forwarder always spools (on a read-only root filesystem): spool.enabled=false is an emptyDir."""
    return spool["type"] if spool["enabled"] else "emptyDir"


@pytest.mark.parametrize("profile", EDGE)
def test_forwarder_spool(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    spool = h.effective_values("face-edge", profile)["forwarder"]["spool"]
    docs = render_cache.get(helm, "face-edge", profile)
    deploy = h.find(docs, "Deployment", "forwarder")
    spec = deploy["spec"]["template"]["spec"]
    (fwd,) = spec["containers"]
    assert deploy["spec"]["strategy"]["type"] == "Recreate", "one forwarder owns the spool"
    assert env_value(fwd, "FACEPIPE_SPOOL_DIR") == spool["mountPath"]
    volume = next(v for v in spec["volumes"] if v["name"] == "spool")
    assert {"name": "spool", "mountPath": spool["mountPath"]} in fwd["volumeMounts"]
    kind = spool_volume_type(spool)
    if kind == "persistentVolumeClaim":
        claim = volume["persistentVolumeClaim"]["claimName"]
        pvcs = {d["metadata"]["name"]: d for d in h.by_kind(docs, "PersistentVolumeClaim")}
        assert claim == spool["existingClaim"] or pvcs[claim]["spec"]["resources"]["requests"]["storage"] == spool["size"]
    elif kind == "hostPath":
        assert volume["hostPath"]["path"] == spool["hostPath"]
        init = spec.get("initContainers", [])
        assert bool(init) == spool["volumePermissions"]["enabled"]
        for c in init:
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    else:
        assert volume["emptyDir"]["sizeLimit"] == spool["size"]


@pytest.mark.parametrize("profile", EDGE)
def test_forwarder_spool_limits(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    """FACEPIPE_SPOOL_MAX_BYTES is maxBytes or derived from size, and stays a segment below the volume."""
    spool = h.effective_values("face-edge", profile)["forwarder"]["spool"]
    docs = render_cache.get(helm, "face-edge", profile)
    (fwd,) = h.find(docs, "Deployment", "forwarder")["spec"]["template"]["spec"]["containers"]
    max_bytes = int(env_value(fwd, "FACEPIPE_SPOOL_MAX_BYTES"))
    assert max_bytes == h.spool_max_bytes(spool)
    assert 0 < max_bytes <= h.quantity_bytes(spool["size"]) - h.SPOOL_SEGMENT_BYTES
    assert env_value(fwd, "FACEPIPE_SPOOL_MAX_AGE_SECONDS") == str(spool["maxAgeSeconds"])


def test_spool_max_bytes_follows_the_size(helm: h.Helm) -> None:
    def max_bytes(*sets: str) -> int:
        docs = helm.template("face-edge", sets=["cloud.host=mqtt.example.com", *sets])
        (fwd,) = h.find(docs, "Deployment", "forwarder")["spec"]["template"]["spec"]["containers"]
        return int(env_value(fwd, "FACEPIPE_SPOOL_MAX_BYTES"))

    assert max_bytes() == int(2 * 1024**3 * 0.9) - 8 * 1024**2
    assert max_bytes("forwarder.spool.size=1.5Gi") == int(1.5 * 1024**3 * 0.9) - 8 * 1024**2
    assert max_bytes("forwarder.spool.size=10G") == 9 * 10**9 - 8 * 1024**2
    assert max_bytes("forwarder.spool.size=10G", "forwarder.spool.maxBytes=5000000000") == 5 * 10**9


def test_disabled_spool_is_an_emptydir(helm: h.Helm) -> None:
    """The forwarder always writes its spool and cannot write its root filesystem: with
    spool.enabled=false it still gets a (throwaway) volume, never a path on the read-only root."""
    docs = helm.template("face-edge", sets=["cloud.host=mqtt.example.com", "forwarder.spool.enabled=false"])
    spec = h.find(docs, "Deployment", "forwarder")["spec"]["template"]["spec"]
    (fwd,) = spec["containers"]
    volume = next(v for v in spec["volumes"] if v["name"] == "spool")
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"
    assert {"name": "spool", "mountPath": env_value(fwd, "FACEPIPE_SPOOL_DIR")} in fwd["volumeMounts"]
    assert not [d for d in h.by_kind(docs, "PersistentVolumeClaim") if d["metadata"]["name"].endswith("-spool")]


def test_edge_notes_say_an_emptydir_spool_is_lost(helm: h.Helm) -> None:
    base = ["cloud.host=mqtt.example.com"]
    lost = "not the pod being deleted or rescheduled"
    default = helm.notes("face-edge", sets=base)
    assert lost not in default
    assert "holding at most 1924346675 bytes" in default and "604800 s" in default
    for extra in ("forwarder.spool.type=emptyDir", "forwarder.spool.enabled=false"):
        assert lost in helm.notes("face-edge", sets=[*base, extra]), extra


@pytest.mark.parametrize("profile", EDGE)
def test_camera_publish_policy_motion_gate_and_stable_rate(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    cam_values = h.effective_values("face-edge", profile)["camera"]
    docs = render_cache.get(helm, "face-edge", profile)
    (cam,) = h.find(docs, "Deployment", "camera")["spec"]["template"]["spec"]["containers"]
    publish, gate, stable = cam_values["publish"], cam_values["motionGate"], cam_values["stableFaces"]
    assert env_value(cam, "FACEPIPE_PUBLISH_POLICY") == publish["policy"]
    assert float(env_value(cam, "FACEPIPE_TRACK_REPUBLISH_SECONDS")) == publish["trackRepublishSeconds"]
    assert env_value(cam, "FACEPIPE_MOTION_GATE") == str(gate["enabled"]).lower()
    assert float(env_value(cam, "FACEPIPE_MOTION_THRESHOLD")) == gate["threshold"]
    assert float(env_value(cam, "FACEPIPE_MOTION_MAX_SKIP_SECONDS")) == gate["maxSkipSeconds"]
    assert float(env_value(cam, "FACEPIPE_STABLE_MAX_FPS")) == stable["maxFps"]
    assert float(env_value(cam, "FACEPIPE_STABLE_AFTER_SECONDS")) == stable["afterSeconds"]


@pytest.mark.parametrize("profile", EDGE)
def test_stream_credentials_come_from_a_secret(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    """The stream's user and password reach the camera by secretKeyRef, never in FACEPIPE_SOURCE."""
    creds = h.effective_values("face-edge", profile)["camera"]["sourceCredentials"]
    (cam,) = h.find(render_cache.get(helm, "face-edge", profile), "Deployment", "camera")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in cam["env"]}
    assert "@" not in env["FACEPIPE_SOURCE"]["value"].split("://", 1)[-1].split("/", 1)[0]
    refs = {
        name: env[name]["valueFrom"]["secretKeyRef"] for name in ("FACEPIPE_SOURCE_USERNAME", "FACEPIPE_SOURCE_PASSWORD") if name in env
    }
    if creds["existingSecret"]:
        assert refs == {
            "FACEPIPE_SOURCE_USERNAME": {"name": creds["existingSecret"], "key": creds["usernameKey"]},
            "FACEPIPE_SOURCE_PASSWORD": {"name": creds["existingSecret"], "key": creds["passwordKey"]},
        }
    else:
        assert refs == {}


def test_profiles_cover_the_camera_and_spool_settings() -> None:
    """Some profile departs from each new default, so the wiring and check-config tests see it."""
    cams = [h.effective_values("face-edge", p)["camera"] for p in EDGE]
    assert any(c["publish"]["policy"] == "every" and c["motionGate"]["enabled"] for c in cams)
    assert any(c["stableFaces"]["maxFps"] and c["stableFaces"]["afterSeconds"] for c in cams)
    assert any(c["sourceCredentials"]["existingSecret"] for c in cams)
    spools = [h.effective_values("face-edge", p)["forwarder"]["spool"] for p in EDGE]
    assert any(s["maxBytes"] for s in spools) and any(s["maxAgeSeconds"] == 0 for s in spools)


@pytest.mark.parametrize("profile", EDGE)
def test_edge_helm_test_proves_forwarding(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    values = h.effective_values("face-edge", profile)
    docs = render_cache.get(helm, "face-edge", profile)
    pod = h.find(docs, "Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (probe,) = pod["spec"]["containers"]
    assert probe["args"] == ["probe"]
    svc = h.find(docs, "Service", "forwarder")
    port = svc["spec"]["ports"][0]["port"]
    assert env_value(probe, "FACEPIPE_PROBE_METRICS_URL") == f"http://{svc['metadata']['name']}:{port}/metrics"
    assert env_value(probe, "FACEPIPE_PROBE_METRIC") == FORWARDER_FORWARDED
    assert env_value(probe, "LOCAL_MQTT_TOPIC") == values["mqtt"]["topic"]


def test_edge_privileged_mode_is_an_explicit_opt_in_said_in_notes(helm: h.Helm) -> None:
    """The default camera is unprivileged (a device plugin) and its pods fit Pod Security "restricted";
    a privileged camera renders only with podSecurity.level=privileged, and NOTES warns about it."""
    edge = ["cloud.host=mqtt.example.com"]
    default = helm.notes("face-edge", sets=edge)
    assert "PRIVILEGED" not in default and "requests 1 x squat.ai/video" in default
    assert "pod-security.kubernetes.io/enforce=restricted" in default and "helm test" in default
    for mode in ("privileged", "hostDevice"):
        with pytest.raises(h.HelmError, match=f'need "privileged":\n  camera.accessMode={mode}'):
            helm.template("face-edge", sets=[*edge, f"camera.accessMode={mode}"])
    opted_in = helm.notes("face-edge", sets=[*edge, "camera.accessMode=privileged", "podSecurity.level=privileged"])
    assert "PRIVILEGED" in opted_in and "pod-security.kubernetes.io/enforce=privileged" in opted_in
    assert 'level "privileged" lets every pod of the namespace run privileged' in opted_in
    rtsp = helm.notes("face-edge", sets=[*edge, "camera.source=rtsp://cam/stream", "camera.accessMode=privileged"])
    assert "PRIVILEGED" not in rtsp, "a stream needs no device: nothing is privileged"
    host_device = helm.notes("face-edge", sets=[*edge, "camera.accessMode=hostDevice", "podSecurity.level=privileged"])
    assert "PRIVILEGED" not in host_device and "Not privileged" in host_device


def test_cloud_notes_say_how_to_verify(helm: h.Helm) -> None:
    notes = helm.notes("face-cloud")
    assert "helm test face" in notes
    assert "broker.tls.hosts" in notes  # a generated certificate without the devices' names


# --- face-cloud -----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", CLOUD)
def test_processor_wiring(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    values = h.effective_values("face-cloud", profile)
    p = values["processor"]
    docs = render_cache.get(helm, "face-cloud", profile)
    sts = h.find(docs, "StatefulSet", "processor")
    (proc,) = sts["spec"]["template"]["spec"]["containers"]
    broker_svc = h.find(docs, "Service", "broker")
    assert env_value(proc, "REMOTE_MQTT_HOST") == broker_svc["metadata"]["name"]
    assert env_value(proc, "REMOTE_MQTT_PORT") == str(values["broker"]["ports"]["mqtt"])
    assert env_value(proc, "REMOTE_MQTT_TOPIC") == values["topic"]
    assert env_value(proc, "FACEPIPE_SHARE_GROUP") == p["shareGroup"]
    assert env_value(proc, "FACEPIPE_RETENTION_DAYS") == str(p["retentionDays"])
    # A stable client id for the persistent session: the StatefulSet pod's name.
    assert h.env_item(proc, "REMOTE_MQTT_CLIENT_ID")["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert sts["spec"]["serviceName"] in {d["metadata"]["name"] for d in h.by_kind(docs, "Service")}
    if p["autoscaling"]["enabled"]:
        assert "replicas" not in sts["spec"]
        hpa = h.find(docs, "HorizontalPodAutoscaler", "processor")
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]}
    else:
        assert sts["spec"]["replicas"] == p["replicaCount"]
    has_pdb = h.maybe_find(docs, "PodDisruptionBudget", "processor") is not None
    assert has_pdb == (p["pdb"]["create"] and (p["autoscaling"]["enabled"] or p["replicaCount"] > 1))

    store = p["store"]
    url = env_value(proc, "FACEPIPE_STORE")
    if store["type"] == "s3":
        s3 = store["s3"]
        assert url == f"s3://{s3['bucket']}/{s3['prefix'].strip('/')}"
        assert env_value(proc, "FACEPIPE_S3_SSE") == s3["sse"]
        assert h.env_item(proc, "FACEPIPE_STORE_SYNC") is None
        assert env_value(proc, "AWS_ENDPOINT_URL") == (s3["endpoint"] or None)
        assert env_value(proc, "AWS_REGION") == (s3["region"] or None)
        assert env_value(proc, "FACEPIPE_S3_KMS_KEY_ID") == (s3["kmsKeyId"] or None)
        ca = s3["caBundle"]
        if ca["existingSecret"]:  # an https endpoint signed by a private CA: processors and gallery trust it
            bundle = f"/etc/facepipe/s3-ca/{ca['key']}"
            for pod in [sts, *filter(None, [h.maybe_find(docs, "Deployment", "gallery")])]:
                (container,) = h.pod_spec(pod)["containers"]
                assert env_value(container, "AWS_CA_BUNDLE") == bundle
                assert {"name": "s3-ca", "mountPath": "/etc/facepipe/s3-ca", "readOnly": True} in container["volumeMounts"]
                (volume,) = [v for v in h.pod_spec(pod)["volumes"] if v["name"] == "s3-ca"]
                assert volume["secret"]["secretName"] == ca["existingSecret"]
        else:
            assert h.env_item(proc, "AWS_CA_BUNDLE") is None
        creds = s3["credentials"]
        if creds["existingSecret"] or creds["accessKeyId"]:
            for name, key in (("AWS_ACCESS_KEY_ID", creds["accessKeyIdKey"]), ("AWS_SECRET_ACCESS_KEY", creds["secretAccessKeyKey"])):
                ref = h.env_item(proc, name)["valueFrom"]["secretKeyRef"]
                assert ref["key"] == key
    else:
        path = store["directory"]["path"]
        assert url == f"file://{path}"
        assert any(m["mountPath"] == path for m in proc["volumeMounts"])
        assert env_value(proc, "FACEPIPE_STORE_SYNC") == store["directory"]["sync"]
        assert h.env_item(proc, "FACEPIPE_S3_SSE") is None


def test_the_examples_expose_no_plain_mqtt() -> None:
    """The review: no example exposes the plain 1883 listener to the devices, or points a device at one."""
    for profile in CLOUD:
        assert not h.effective_values("face-cloud", profile)["broker"]["service"]["exposePlain"], profile
    for profile in EDGE:
        cloud = h.effective_values("face-edge", profile)["cloud"]
        assert cloud["tls"]["enabled"] and cloud["port"] != 1883, profile


def test_the_cloud_broker_keeps_the_devices_addresses_by_default() -> None:
    assert h.effective_values("face-cloud", "default")["broker"]["service"]["externalTrafficPolicy"] == "Local"


def test_s3_encryption_is_on_by_default(helm: h.Helm) -> None:
    docs = helm.template("face-cloud", sets=["processor.store.type=s3", "processor.store.s3.bucket=faces"])
    (proc,) = h.find(docs, "StatefulSet", "processor")["spec"]["template"]["spec"]["containers"]
    assert env_value(proc, "FACEPIPE_S3_SSE") == "AES256"
    assert int(env_value(proc, "FACEPIPE_RETENTION_DAYS")) > 0


@pytest.mark.parametrize("profile", CLOUD)
def test_cloud_broker_config(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    values = h.effective_values("face-cloud", profile)
    b = values["broker"]
    docs = render_cache.get(helm, "face-cloud", profile)
    conf = h.find(docs, "ConfigMap", "broker")["data"]["mosquitto.conf"]
    lines = {line.strip() for line in conf.splitlines()}
    assert f"allow_anonymous {str(b['auth']['allowAnonymous']).lower()}" in lines
    assert "persistence true" in lines
    assert f"listener {b['ports']['mqtt']}" in lines
    assert (f"listener {b['ports']['mqtts']}" in lines) == b["tls"]["enabled"]
    assert f"max_queued_messages {b['maxQueuedMessages']}" in lines
    assert int(re.search(r"^max_packet_size (\d+)$", conf, re.MULTILINE).group(1)) > 2 * 1024 * 1024
    # Access control by the dynamic-security plugin (acl_file does not check subscriptions).
    assert f"plugin {b['dynamicSecurityPlugin']}" in lines and not any(line.startswith("acl_file") for line in lines)
    # The processors subscribe (in their group) and read everything, write nothing; a device writes only its own topics.
    topic, user, group = values["topic"], b["auth"]["processor"]["username"], values["processor"]["shareGroup"]
    access = h.broker_access(docs, [user, "dev-x"])
    assert access["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    shared = {("subscribeLiteral", f"$share/{group}/{topic}/#")} if group else set()
    assert h.grants(access, user) == {
        ("subscribeLiteral", f"{topic}/#"), ("subscribeLiteral", f"{topic}/+/status/+"), ("publishClientReceive", f"{topic}/#"), *shared,
    }  # fmt: skip
    assert h.grants(access, "dev-x") == {("publishClientSend", t) for t in contract.device_topics(topic, "dev-x")}


@pytest.mark.parametrize("profile", CLOUD)
def test_cloud_broker_exposure(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    b = h.effective_values("face-cloud", profile)["broker"]
    docs = render_cache.get(helm, "face-cloud", profile)
    external = next(d for d in h.by_kind(docs, "Service") if d["metadata"]["name"].endswith("-broker-external"))
    assert external["spec"]["type"] == b["service"]["type"]
    ports = {p["name"]: p["port"] for p in external["spec"]["ports"]}
    expected = {}
    if b["tls"]["enabled"]:
        expected["mqtts"] = b["ports"]["mqtts"]
    if b["service"]["exposePlain"]:
        expected["mqtt"] = b["ports"]["mqtt"]
    assert ports == expected
    assert external["spec"]["externalTrafficPolicy"] == b["service"]["externalTrafficPolicy"]
    assert external["spec"].get("loadBalancerSourceRanges", []) == b["service"]["loadBalancerSourceRanges"]
    for p in external["spec"]["ports"]:
        node_port = b["service"]["nodePorts"][p["name"]]
        if b["service"]["type"] == "NodePort" and node_port:
            assert p["nodePort"] == node_port


@pytest.mark.parametrize("profile", CLOUD)
def test_cloud_helm_test_publishes_as_the_probe_device(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    values = h.effective_values("face-cloud", profile)
    docs = render_cache.get(helm, "face-cloud", profile)
    (probe,) = h.find(docs, "Pod", "test")["spec"]["containers"]
    user = values["broker"]["auth"]["probe"]["username"]
    assert env_value(probe, "LOCAL_MQTT_TOPIC") == f"{values['topic']}/{user}"
    assert env_value(probe, "LOCAL_MQTT_USERNAME") == user
    assert h.env_item(probe, "LOCAL_MQTT_PASSWORD")["valueFrom"]["secretKeyRef"]["key"] == user
    assert env_value(probe, "FACEPIPE_PROBE_METRIC") == PROCESSOR_STORED
    users = next((d for d in h.by_kind(docs, "Secret") if d["metadata"]["name"].endswith("-broker-users")), None)
    if users is not None:
        assert user in users["data"] and values["broker"]["auth"]["processor"]["username"] in users["data"]
        for device in values["broker"]["auth"]["devices"]:
            assert device["name"] in users["data"]


def probe_metrics_urls(docs: list[dict[str, Any]]) -> list[str]:
    (probe,) = h.find(docs, "Pod", "test")["spec"]["containers"]
    return env_value(probe, "FACEPIPE_PROBE_METRICS_URL").split(",")


@pytest.mark.parametrize("profile", CLOUD)
def test_cloud_helm_test_reads_every_processor(helm: h.Helm, render_cache: h.RenderCache, profile: str) -> None:
    """The probe sums the stored counter over a list of URLs: one per processor pod, by its stable
    DNS name under the StatefulSet's headless Service; with autoscaling (pods unknown at render
    time) the processors' Service."""
    values = h.effective_values("face-cloud", profile)
    p, port = values["processor"], values["httpPort"]
    docs = render_cache.get(helm, "face-cloud", profile)
    urls = probe_metrics_urls(docs)
    sts = h.find(docs, "StatefulSet", "processor")
    if p["autoscaling"]["enabled"]:
        svc = next(d for d in h.by_kind(docs, "Service") if d["metadata"]["name"] == sts["metadata"]["name"])
        assert urls == [f"http://{svc['metadata']['name']}:{port}/metrics"]
        return
    headless = next(d for d in h.by_kind(docs, "Service") if d["metadata"]["name"] == sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert [p_["port"] for p_ in headless["spec"]["ports"]] == [port]
    assert len(urls) == sts["spec"]["replicas"] == p["replicaCount"]
    assert urls == [f"http://{sts['metadata']['name']}-{i}.{headless['metadata']['name']}:{port}/metrics" for i in range(p["replicaCount"])]


def test_a_cloud_profile_probes_three_processors(helm: h.Helm, render_cache: h.RenderCache) -> None:
    docs = render_cache.get(helm, "face-cloud", "cloud-s3")
    assert h.effective_values("face-cloud", "cloud-s3")["processor"]["replicaCount"] == 3
    urls = probe_metrics_urls(docs)
    assert len(urls) == len(set(urls)) == 3
    assert [re.search(r"-processor-(\d+)\.", u).group(1) for u in urls] == ["0", "1", "2"]


def test_cloud_notes_warn_when_autoscaling_limits_the_test(helm: h.Helm) -> None:
    assert "processor.autoscaling" not in helm.notes("face-cloud")
    assert "processor.autoscaling" in helm.notes("face-cloud", sets=["processor.autoscaling.enabled=true"])


# --- both charts ----------------------------------------------------------------------------------


def _port_numbers(container: Mapping[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


@pytest.mark.parametrize(("chart", "profile"), ALL, ids=ALL_IDS)
def test_service_ports_match_the_apps(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    """Every Service selects pods whose named target port exists, on the port the app is configured with."""
    docs = render_cache.get(helm, chart, profile)
    for svc in h.by_kind(docs, "Service"):
        selector = svc["spec"]["selector"]
        pods = [
            d for d in h.workloads(docs)
            if d["kind"] != "Pod"
            and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]  # fmt: skip
        assert len(pods) == 1, svc["metadata"]["name"]
        named = {}
        for c in h.containers(pods[0], init=False):
            named.update({n: (c, p) for n, p in _port_numbers(c).items()})
        for port in svc["spec"]["ports"]:
            container, number = named[port["targetPort"]]
            if port["targetPort"] == "http":
                assert env_value(container, "FACEPIPE_HTTP_PORT") == str(number)
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    assert container[probe]["httpGet"]["port"] == "http"
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            if port["targetPort"] in ("mqtt", "mqtts"):
                conf = h.find(docs, "ConfigMap", "broker")["data"]["mosquitto.conf"]
                assert f"listener {number}" in conf.splitlines()


SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|ACCESS_KEY")


@pytest.mark.parametrize(("chart", "profile"), ALL, ids=ALL_IDS)
def test_secrets_are_referenced_never_inlined(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    docs = render_cache.get(helm, chart, profile)
    values = h.effective_values(chart, profile)
    rendered = {d["metadata"]["name"]: d for d in h.by_kind(docs, "Secret")}
    existing = {v for v in _strings_under(values) if isinstance(v, str)}
    referenced: set[str] = set()
    for doc in h.workloads(docs):
        spec = h.pod_spec(doc)
        for c in h.containers(doc):
            for item in c.get("env", []):
                if SECRET_ENV.search(item["name"]) and not item["name"].endswith(("_FILE", "_KEY_ID")):
                    assert "value" not in item, f"{c['name']}: {item['name']} is inlined"
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add(ref["name"])
                    if ref["name"] in rendered:
                        assert ref["key"] in rendered[ref["name"]]["data"], ref
                    else:
                        assert ref["name"] in existing, f"{ref['name']} is neither rendered nor an existingSecret value"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                referenced.add(name)
                assert name in rendered or name in existing, name
    assert set(rendered) <= referenced, f"unreferenced Secrets: {set(rendered) - referenced}"
    for secret in rendered.values():
        assert "stringData" not in secret


def _strings_under(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _strings_under(v)]
    if isinstance(node, list):
        return [x for v in node for x in _strings_under(v)]
    return [node]


@pytest.mark.parametrize(("chart", "profile"), ALL, ids=ALL_IDS)
def test_secure_pod_defaults(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    docs = render_cache.get(helm, chart, profile)
    for doc in h.workloads(docs):
        spec = h.pod_spec(doc)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in h.containers(doc):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert "ALL" in sc["capabilities"]["drop"], c["name"]
            assert c["resources"]["limits"]["memory"], c["name"]
            assert c["resources"]["requests"], c["name"]
            if sc.get("runAsUser") == 0:
                assert c["name"] == "spool-permissions" and sc["capabilities"]["add"] == ["CHOWN"]
            elif not sc.get("privileged"):
                assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert not c["image"].endswith(":latest"), c["image"]
        for c in app_containers(doc):
            assert c["command"] == ["facepipe"]
            assert spec["securityContext"]["runAsUser"] == 10001
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


@pytest.mark.parametrize(("chart", "profile"), ALL, ids=ALL_IDS)
def test_config_changes_roll_the_pods(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    docs = render_cache.get(helm, chart, profile)
    broker = h.find(docs, "Deployment", "broker")
    annotations = broker["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    # Every chart-made Secret that a pod reads is in that pod's checksums.
    made = {d["metadata"]["name"] for d in h.by_kind(docs, "Secret")}
    for doc in h.workloads(docs):
        if doc["kind"] == "Pod":
            continue
        reads = {
            item["valueFrom"]["secretKeyRef"]["name"]
            for c in h.containers(doc) for item in c.get("env", []) if "secretKeyRef" in item.get("valueFrom", {})
        } | {v["secret"]["secretName"] for v in h.pod_spec(doc).get("volumes", []) if "secret" in v}  # fmt: skip
        sums = [k for k in doc["spec"]["template"]["metadata"].get("annotations", {}) if k.startswith("checksum/")]
        assert len(sums) >= len(reads & made), (doc["metadata"]["name"], reads & made, sums)


def test_config_change_changes_the_checksum(helm: h.Helm) -> None:
    def checksum(*sets: str) -> str:
        docs = helm.template("face-edge", sets=["cloud.host=mqtt.example.com", *sets])
        return h.find(docs, "Deployment", "broker")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("broker.maxQueuedMessages=50000")


@pytest.mark.parametrize(("chart", "profile"), ALL, ids=ALL_IDS)
def test_network_policies_admit_the_release(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    values = h.effective_values(chart, profile)
    docs = render_cache.get(helm, chart, profile)
    policies = h.by_kind(docs, "NetworkPolicy")
    if not values["networkPolicy"]["enabled"]:
        assert policies == []
        return
    broker_policy = h.find(docs, "NetworkPolicy", "broker")
    broker_labels = h.find(docs, "Deployment", "broker")["spec"]["template"]["metadata"]["labels"]
    assert all(broker_labels[k] == v for k, v in broker_policy["spec"]["podSelector"]["matchLabels"].items())
    # Every pod of the release (including the helm test) may reach the plain MQTT port.
    mqtt_rules = [r for r in broker_policy["spec"]["ingress"] if {"port": "mqtt", "protocol": "TCP"} in r["ports"]]
    assert mqtt_rules
    if any("from" not in r for r in mqtt_rules):
        return  # open to everyone (face-cloud broker.service.exposePlain)
    from_selectors = [
        peer["podSelector"]["matchLabels"]
        for rule in mqtt_rules for peer in rule["from"] if "podSelector" in peer
    ]  # fmt: skip
    for doc in h.workloads(docs):
        labels = doc["metadata"]["labels"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in sel.items()) for sel in from_selectors), doc["metadata"]["name"]


@pytest.mark.parametrize(("chart", "profile"), ALL, ids=ALL_IDS)
def test_checksums_hash_the_rendered_objects(helm: h.Helm, chart: str, profile: str) -> None:
    """Each checksum/* annotation is the hash of a document rendered in the same run: a generated
    password or certificate is drawn once per render, so the first `helm upgrade` (when lookup
    finds the stored Secret) does not change the annotation and restart the pods."""
    import hashlib

    values, sets = h.profile_args(chart, profile)
    text = helm.template_text(chart, values, sets).stdout
    chunks = re.split(r"^---\n", text, flags=re.MULTILINE)
    bodies = [chunk.split("\n", 1)[1] for chunk in chunks if chunk.startswith("# Source:")]
    hashes = set()
    for body in bodies:
        core = body.strip("\n")
        for pre in ("", "\n"):
            for post in ("", "\n"):
                hashes.add(hashlib.sha256(f"{pre}{core}{post}".encode()).hexdigest())
    for doc in h.workloads(h.parse_documents(text)):
        if doc["kind"] == "Pod":
            continue
        for key, value in doc["spec"]["template"]["metadata"].get("annotations", {}).items():
            if key.startswith("checksum/"):
                assert value in hashes, f"{doc['metadata']['name']} {key} hashes no document of this render"


def test_directory_durability_mode_reaches_the_processor(helm: h.Helm) -> None:
    for sync in ("files", "filesystem"):
        docs = helm.template("face-cloud", sets=[f"processor.store.directory.sync={sync}"])
        (proc,) = h.find(docs, "StatefulSet", "processor")["spec"]["template"]["spec"]["containers"]
        assert env_value(proc, "FACEPIPE_STORE_SYNC") == sync


def _egress_rules(docs: list, labels: dict) -> list[dict] | None:
    """The egress rules of the policies selecting a pod with `labels` (None: no policy limits its egress)."""
    rules, limited = [], False
    for policy in h.by_kind(docs, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        selected = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
            (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In") for e in selector.get("matchExpressions", [])
        )
        if selected and "Egress" in policy["spec"]["policyTypes"]:
            limited = True
            rules += policy["spec"].get("egress", [])
    return rules if limited else None


def _url_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or {"http": 80, "https": 443}[urlsplit(url).scheme]


def _reaches(rules: list[dict]) -> set[tuple[str, object]]:
    """What the rules allow, as (peer, port): peer 'component:<c>' for the release's pods, 'any' or 'listed'."""
    found = set()
    for rule in rules:
        peers = rule.get("to") or [None]
        ports = [p["port"] for p in rule.get("ports", [])] or ["all"]
        for peer in peers:
            name = "any" if peer is None else (
                f"component:{peer['podSelector']['matchLabels']['app.kubernetes.io/component']}"
                if "podSelector" in peer and "namespaceSelector" not in peer else "listed"
            )  # fmt: skip
            found |= {(name, port) for port in ports}
    return found


@pytest.mark.parametrize(("chart", "profile"), ALL, ids=ALL_IDS)
def test_network_policies_limit_each_workloads_egress(helm: h.Helm, render_cache: h.RenderCache, chart: str, profile: str) -> None:
    """Default deny for every pod of the release, then each workload reaches exactly its peers: the camera the edge
    broker (and a stream source), the logger the edge broker, the forwarder the edge broker and the cloud's port, the
    processors and the gallery the broker and the store's port, the brokers nothing; name resolution on port 53."""
    values = h.effective_values(chart, profile)
    if not values["networkPolicy"]["enabled"]:
        return
    docs = render_cache.get(helm, chart, profile)
    dns = {("any", 53)} if not values["networkPolicy"]["dnsTo"] else {("listed", 53)}
    broker = {("component:broker", "mqtt")}
    expected: dict[str, set] = {"broker": set()}
    if chart == "face-edge":
        cloud_to = "listed" if values["networkPolicy"]["cloudTo"] else "any"
        source = values["camera"]["source"]
        stream = set()
        if re.match(r"^(rtsps?|https?)://", source):
            stream = {
                (
                    "listed" if values["networkPolicy"]["cameraSourceTo"] else "any",
                    "all" if source.startswith("rtsp") else _url_port(source),
                )
            }
        expected |= {
            "camera": dns | broker | stream,
            "logger": dns | broker,
            "forwarder": dns | broker | {(cloud_to, values["cloud"]["port"])},
            "test": dns | broker | {("component:forwarder", "http")},
        }
    else:
        s3 = values["processor"]["store"]["s3"]
        store = set()
        if values["processor"]["store"]["type"] == "s3":
            port = _url_port(s3["endpoint"] or "https://s3.amazonaws.com")
            store = {("listed" if values["networkPolicy"]["storeTo"] else "any", port)}
        expected |= {
            "processor": dns | broker | store,
            "gallery": dns | (broker if values["gallery"]["live"] else set()) | store,
            "test": dns | broker | {("component:processor", "http")},
            "gallery-test": dns | {("component:gallery", "gallery")},
        }
    deny = next(p for p in h.by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-default-deny"))
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "egress" not in deny["spec"] and "ingress" not in deny["spec"]
    for doc in h.workloads(docs):
        labels = doc["metadata"]["labels"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]["labels"]
        component = labels["app.kubernetes.io/component"]
        rules = _egress_rules(docs, labels)
        assert rules is not None, f"{doc['metadata']['name']}: egress not limited"
        assert _reaches(rules) == expected[component], (component, rules)


@pytest.mark.parametrize("chart", h.CHART_NAMES)
def test_network_policies_can_be_left_out(helm: h.Helm, chart: str) -> None:
    """No profile turns them off (checkov then finds pods without a policy): networkPolicy.enabled=false renders none."""
    sets = ["networkPolicy.enabled=false", *(["cloud.host=mqtt.example.com"] if chart == "face-edge" else [])]
    assert h.by_kind(helm.template(chart, sets=sets), "NetworkPolicy") == []
