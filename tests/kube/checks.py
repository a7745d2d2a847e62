"""Assertions on a release installed into the live API server, shared by the install and upgrade tests."""

from __future__ import annotations

from typing import Any

from facepipe_dev import helm as h
from tests.kube import live


def assert_deployed_and_on_server(release: live.Release) -> None:
    """helm calls the release deployed, and every object of its manifest is on the server, carrying
    Helm's ownership metadata (what a later upgrade or uninstall relies on)."""
    status = release.status()
    assert status["info"]["status"] == "deployed", status["info"]
    docs = release.manifest()
    assert docs, "the release has no objects"
    for doc in docs:
        meta = doc["metadata"]
        code, body = release.cluster.get(doc["apiVersion"], doc["kind"], release.namespace, meta["name"])
        assert code == 200, f"{doc['kind']}/{meta['name']} from {doc['_source']} is not on the server: {code} {body}"
        annotations = body["metadata"].get("annotations") or {}
        assert annotations.get("meta.helm.sh/release-name") == release.name, (doc["kind"], meta["name"])
        assert annotations.get("meta.helm.sh/release-namespace") == release.namespace, (doc["kind"], meta["name"])
        assert body["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "Helm", (doc["kind"], meta["name"])


def assert_referenced_secrets_exist(release: live.Release) -> list[live.SecretRef]:
    """Every Secret (and key) the workloads' pod templates read exists on the server, and every
    Secret the test made for the profile's existingSecret values is read by some workload."""
    cluster = release.cluster
    refs = [ref for w in cluster.workloads(release.namespace) for ref in live.secret_refs(w)]
    problems = []
    for ref in refs:
        try:
            data = cluster.secret_data(release.namespace, ref.name)
        except Exception as exc:  # kubernetes.client.ApiException: 404
            if not ref.optional:
                problems.append(f"{ref.where}: Secret {ref.name} not found ({getattr(exc, 'status', exc)})")
            continue
        if ref.key is not None and ref.key not in data and not ref.optional:
            problems.append(f"{ref.where}: Secret {ref.name} has no key {ref.key!r} (keys: {sorted(data)})")
    assert not problems, "\n".join(problems)
    unread = release.made_secrets - {ref.name for ref in refs}
    assert not unread, f"the profile names these Secrets but no workload reads them: {sorted(unread)}"
    return refs


def workload(release: live.Release, component: str) -> Any:
    """The one Deployment/StatefulSet/DaemonSet of a component (app.kubernetes.io/component)."""
    found = [
        w for w in release.cluster.workloads(release.namespace) if (w.metadata.labels or {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"{len(found)} workloads with component={component} in {release.namespace}"
    return found[0]


def env_value(container: Any, name: str) -> str | None:
    item = live.env_of(container).get(name)
    return None if item is None else item.value


def secret_key_ref(container: Any, name: str) -> Any:
    item = live.env_of(container).get(name)
    assert item is not None and item.value_from is not None and item.value_from.secret_key_ref is not None, (
        f"{name} is not read from a Secret"
    )
    return item.value_from.secret_key_ref


def assert_edge_wiring(release: live.Release, values: dict[str, Any]) -> None:
    """The camera reads the configured device (hostPath at the same path) and is privileged only in
    privileged mode; the forwarder's env carries cloud.host and reads its credentials from Secrets."""
    cam_values = values["camera"]
    camera = workload(release, "camera")
    spec = camera.spec.template.spec
    cam = live.container(camera, "camera")
    source = cam_values["source"] or cam_values["device"]
    uses_device = source.startswith("/dev/")
    mode = cam_values["accessMode"]
    assert env_value(cam, "FACEPIPE_SOURCE") == source

    devices = [v for v in spec.volumes or [] if v.host_path is not None and v.host_path.type == "CharDevice"]
    if uses_device and mode in ("privileged", "hostDevice"):
        assert [v.host_path.path for v in devices] == [source]
        assert [m.mount_path for m in cam.volume_mounts if m.name == devices[0].name] == [source]
    else:
        assert devices == [], f"{mode} / {source}: no device from the node expected"
    if uses_device and mode == "devicePlugin":
        resource = cam_values["devicePlugin"]["resourceName"]
        assert cam.resources.limits[resource] == str(cam_values["devicePlugin"]["count"])
        assert cam.resources.requests[resource] == str(cam_values["devicePlugin"]["count"])

    privileged = bool(cam.security_context and cam.security_context.privileged)
    assert privileged == (uses_device and mode == "privileged"), f"mode {mode}, source {source}: privileged={privileged}"
    for w in release.cluster.workloads(release.namespace):
        pod = w.spec.template.spec
        for c in [*(pod.init_containers or []), *pod.containers]:
            if not (w.metadata.name == camera.metadata.name and c.name == "camera"):
                assert not (c.security_context and c.security_context.privileged), f"{w.metadata.name}/{c.name} is privileged"

    forwarder = live.container(workload(release, "forwarder"), "forwarder")
    assert env_value(forwarder, "REMOTE_MQTT_HOST") == values["cloud"]["host"]
    assert env_value(forwarder, "REMOTE_MQTT_PORT") == str(values["cloud"]["port"])
    assert env_value(forwarder, "FACEPIPE_DEVICE_ID") == (values["deviceId"] or release.name)
    auth = values["cloud"]["auth"]
    if auth["existingSecret"] or auth["password"]:
        for env, key in (("REMOTE_MQTT_USERNAME", auth["usernameKey"]), ("REMOTE_MQTT_PASSWORD", auth["passwordKey"])):
            ref = secret_key_ref(forwarder, env)
            assert ref.key == key
            if auth["existingSecret"]:
                assert ref.name == auth["existingSecret"]
            else:
                assert ("Secret", ref.name) in {(d["kind"], d["metadata"]["name"]) for d in release.manifest()}
    else:
        assert "REMOTE_MQTT_PASSWORD" not in live.env_of(forwarder)


def assert_cloud_wiring(release: live.Release, values: dict[str, Any]) -> None:
    """The processors read the broker user's password and the S3 keys through secretKeyRef, from
    the existingSecret the profile names or the Secret the chart made; the broker mounts its TLS
    and users Secrets."""
    processor_set = workload(release, "processor")
    assert processor_set.kind == "StatefulSet"
    processor = live.container(processor_set, "processor")
    governing = release.cluster.core.read_namespaced_service(processor_set.spec.service_name, release.namespace)
    assert governing.spec.cluster_ip == "None", "the StatefulSet's serviceName must be a headless Service"
    auth = values["broker"]["auth"]
    made = {d["metadata"]["name"] for d in release.manifest() if d["kind"] == "Secret"}

    ref = secret_key_ref(processor, "REMOTE_MQTT_PASSWORD")
    assert ref.key == auth["processor"]["username"]
    assert ref.name == (auth["existingSecret"] or f"{release.name}-face-cloud-broker-users")
    if not auth["existingSecret"]:
        assert ref.name in made

    store = values["processor"]["store"]
    if store["type"] == "s3":
        assert env_value(processor, "FACEPIPE_STORE").startswith(f"s3://{store['s3']['bucket']}")
        creds = store["s3"]["credentials"]
        if creds["existingSecret"] or creds["accessKeyId"]:
            for env, key in (("AWS_ACCESS_KEY_ID", creds["accessKeyIdKey"]), ("AWS_SECRET_ACCESS_KEY", creds["secretAccessKeyKey"])):
                s3 = secret_key_ref(processor, env)
                assert s3.key == key
                assert s3.name == (creds["existingSecret"] or f"{release.name}-face-cloud-s3")
    else:
        assert env_value(processor, "FACEPIPE_STORE") == f"file://{store['directory']['path']}"

    broker = workload(release, "broker")
    volumes = {v.name: v for v in broker.spec.template.spec.volumes}
    tls = values["broker"]["tls"]
    if tls["enabled"]:
        assert volumes["tls"].secret.secret_name == (tls["existingSecret"] or f"{release.name}-face-cloud-broker-tls")
    users = volumes["users"].secret.secret_name
    assert users == (auth["passwordFileSecret"] or auth["existingSecret"] or f"{release.name}-face-cloud-broker-users")


def pod_template(workload_model: Any, cluster: live.Cluster) -> dict[str, Any]:
    return cluster.to_dict(workload_model.spec.template)


def templates(release: live.Release) -> dict[str, dict[str, Any]]:
    """'Kind/name' -> pod template of every workload of the release."""
    return {f"{w.kind}/{w.metadata.name}": pod_template(w, release.cluster) for w in release.cluster.workloads(release.namespace)}


def effective(release: live.Release, *sets: str) -> dict[str, Any]:
    """The profile's effective values with extra --set a.b=c strings merged over them."""
    return h.merge_sets(h.effective_values(release.chart, release.profile), sets)
