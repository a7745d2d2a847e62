"""Helpers for the tests against the live API server (tests/kube): helm releases, discovery, Secrets.

The API server comes from the session fixture `kube_api` (tests/conftest.py, apps/facepipe_dev/kube.py).
Helm runs with `--kubeconfig` pointing at it (facepipe_dev.helm.Helm drops KUBECONFIG from its
environment on purpose) and never with `--wait`: there is no kubelet, so no pod ever becomes ready.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facepipe_dev import helm as h
from facepipe_dev.kube import KubeAPIServer

# Objects every namespace has that no release made: the controller-manager's per-namespace
# ServiceAccount and CA bundle. Events are records of what happened, not resources of a release.
BASELINE = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
IGNORED_RESOURCES = {("", "events"), ("events.k8s.io", "events")}
KUBECTL_HINT = "run `bash .ci/install-helm.sh` (it puts kubectl 1.37 next to helm), set FACEPIPE_KUBECTL, or put kubectl on PATH"


def dns_label(*parts: str) -> str:
    """A valid namespace name from parts: lower case, [a-z0-9-], at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return name[:63].rstrip("-")


# --- the cluster ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


class Cluster:
    """The live API server, through its raw REST API and the `kubernetes` Python client."""

    def __init__(self, api: KubeAPIServer) -> None:
        from kubernetes import client, config

        self.api = api
        self.client = config.new_client_from_config(config_file=str(api.kubeconfig))
        self.core = client.CoreV1Api(self.client)
        self.apps = client.AppsV1Api(self.client)
        self._resources: list[Resource] | None = None
        self._dynamic: Any = None

    # --- discovery ---

    def resources(self, refresh: bool = False) -> list[Resource]:
        """Every listable resource the server serves (preferred version of each group)."""
        if self._resources is None or refresh:
            found: list[Resource] = []
            versions = [("", "v1")]
            status, groups = self.api.request("GET", "/apis")
            assert status == 200, groups
            versions += [(g["name"], g["preferredVersion"]["version"]) for g in groups["groups"]]
            for group, version in versions:
                path = f"/apis/{group}/{version}" if group else f"/api/{version}"
                status, body = self.api.request("GET", path)
                assert status == 200, f"GET {path}: {status} {body}"
                for r in body["resources"]:
                    if "/" in r["name"] or "list" not in r.get("verbs", []):
                        continue  # subresources, and what cannot be listed
                    found.append(Resource(group, version, r["name"], r["kind"], r["namespaced"]))
            self._resources = found
        return self._resources

    def resource_for(self, api_version: str, kind: str) -> Resource | None:
        """The resource of (apiVersion, kind), in that exact version; None when not served."""
        group, _, version = api_version.rpartition("/")
        for refresh in (False, True):
            for r in self.resources(refresh=refresh):
                if r.group == group and r.kind == kind:
                    return r if r.version == version else Resource(group, version, r.plural, kind, r.namespaced)
        return None

    def namespace_contents(self, namespace: str) -> list[tuple[str, str]]:
        """(Kind, name) of every object in the namespace, across every namespaced resource type,
        except the namespace's baseline objects and events."""
        found: list[tuple[str, str]] = []
        for r in self.resources():
            if not r.namespaced or (r.group, r.plural) in IGNORED_RESOURCES:
                continue
            status, body = self.api.request("GET", r.path(namespace))
            if status in (404, 405):
                continue
            assert status == 200, f"listing {r.plural} in {namespace}: {status} {body}"
            for item in body.get("items", []):
                key = (r.kind, item["metadata"]["name"])
                if key not in BASELINE:
                    found.append(key)
        return sorted(found)

    def wait_for_empty(self, namespace: str, allowed: Iterable[tuple[str, str]] = (), timeout: float = 30.0) -> list[tuple[str, str]]:
        """Wait until the namespace holds nothing but `allowed`; return what is left after `timeout`
        (a PVC deleted by helm stays Terminating until the protection controller drops its finalizer)."""
        allowed = set(allowed)
        deadline = time.monotonic() + timeout
        while True:
            left = [o for o in self.namespace_contents(namespace) if o not in allowed]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.25)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> tuple[int, Any]:
        resource = self.resource_for(api_version, kind)
        if resource is None:
            return 404, f"{api_version} {kind} is not served"
        return self.api.request("GET", resource.path(namespace, name))

    def create(self, doc: Mapping[str, Any], namespace: str | None = None) -> tuple[int, Any]:
        """POST one object with server-side field validation Strict (unknown or duplicate fields
        are errors, as `kubectl apply --server-side` does by default)."""
        resource = self.resource_for(doc["apiVersion"], doc["kind"])
        if resource is None:
            return 404, f"{doc['apiVersion']} {doc['kind']} is not served by this API server"
        ns = namespace or doc.get("metadata", {}).get("namespace")
        path = resource.path(ns if resource.namespaced else None) + "?fieldValidation=Strict"
        return self.api.request("POST", path, h.strip_source(doc))

    def apply(self, doc: Mapping[str, Any], namespace: str | None = None, *, field_manager: str = "tests") -> dict[str, Any]:
        """Server-side apply of one object with field validation Strict, as
        `kubectl apply --server-side --field-manager=tests` does; raises ApiException when refused."""
        resource = self.dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        body = h.strip_source(doc)
        ns = (namespace or doc.get("metadata", {}).get("namespace")) if resource.namespaced else None
        result = self.dynamic.server_side_apply(
            resource, body=body, namespace=ns, field_manager=field_manager, query_params=[("fieldValidation", "Strict")]
        )
        return result.to_dict()

    @property
    def dynamic(self) -> Any:
        """A kubernetes.dynamic.DynamicClient (discovery cached; invalidate() after adding CRDs)."""
        if self._dynamic is None:
            from kubernetes.dynamic import DynamicClient

            self._dynamic = DynamicClient(self.client)
        return self._dynamic

    def install_crds(self, paths: Iterable[Path], timeout: float = 60.0) -> list[str]:
        """Apply CRDs server-side (too big for client-side apply's annotation), wait until each is
        Established and served, forget discovery; return their names."""
        crds = [yaml.load(path.read_text(), Loader=yaml.CSafeLoader) for path in paths]  # the C loader: 1/10 of the time on 1.4 MB
        for crd in crds:
            self.apply(crd)
        deadline = time.monotonic() + timeout
        for crd in crds:
            spec, name = crd["spec"], crd["metadata"]["name"]
            # Discovery (small) first rather than polling the CRD itself (up to 1.4 MB each GET).
            for version in (v["name"] for v in spec["versions"] if v.get("served", True)):
                while True:
                    status, body = self.api.request("GET", f"/apis/{spec['group']}/{version}")
                    if status == 200 and spec["names"]["plural"] in {r["name"] for r in body.get("resources", [])}:
                        break
                    assert time.monotonic() < deadline, f"{name} {version} not served after {timeout:.0f} s"
                    time.sleep(0.1)
            while True:
                status, body = self.api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conditions = {c["type"]: c["status"] for c in ((body.get("status") or {}).get("conditions") or [] if status == 200 else [])}
                if conditions.get("Established") == "True":
                    break
                assert conditions.get("NamesAccepted") != "False", f"{name}: {body.get('status')}"
                assert time.monotonic() < deadline, f"{name} not Established: {conditions}"
                time.sleep(0.2)
        self.invalidate()
        return [crd["metadata"]["name"] for crd in crds]

    def invalidate(self) -> None:
        """Forget discovery (after CRDs were added)."""
        self._resources = None
        if self._dynamic is not None:
            self._dynamic.resources.invalidate_cache()

    # --- namespaces and Secrets ---

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.api.create_namespace(name, labels=labels)

    def create_secret(self, namespace: str, name: str, data: Mapping[str, str], type_: str = "Opaque") -> None:
        from kubernetes import client

        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, labels={"facepipe.test/made-by": "tests-kube"}),
            type=type_,
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        )
        self.core.create_namespaced_secret(namespace, body)

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.core.read_namespaced_secret(name, namespace)
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.data or {}).items()}

    def delete_namespace(self, name: str) -> None:
        self.api.request("DELETE", f"/api/v1/namespaces/{name}")

    # --- workloads ---

    def workloads(self, namespace: str) -> list[Any]:
        """Deployments, StatefulSets and DaemonSets of the namespace, as client models."""
        found = []
        for kind, items in (
            ("Deployment", self.apps.list_namespaced_deployment(namespace).items),
            ("StatefulSet", self.apps.list_namespaced_stateful_set(namespace).items),
            ("DaemonSet", self.apps.list_namespaced_daemon_set(namespace).items),
        ):
            for item in items:
                item.kind = kind  # list items carry no kind
                found.append(item)
        return found

    def to_dict(self, model: Any) -> dict[str, Any]:
        return self.client.sanitize_for_serialization(model)


# --- what a pod spec references ------------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str | None  # None: the whole Secret (envFrom, a volume without items, imagePullSecrets)
    optional: bool
    where: str


def secret_refs(workload: Any) -> list[SecretRef]:
    """Every Secret a workload's pod template reads (env, envFrom, volumes, projected, pull secrets)."""
    spec = workload.spec.template.spec
    owner = f"{workload.kind or type(workload).__name__}/{workload.metadata.name}"
    refs: list[SecretRef] = []
    for c in [*(spec.init_containers or []), *spec.containers]:
        for e in c.env or []:
            ref = e.value_from.secret_key_ref if e.value_from else None
            if ref:
                refs.append(SecretRef(ref.name, ref.key, bool(ref.optional), f"{owner} {c.name} env {e.name}"))
        for e in c.env_from or []:
            if e.secret_ref:
                refs.append(SecretRef(e.secret_ref.name, None, bool(e.secret_ref.optional), f"{owner} {c.name} envFrom"))
    for v in spec.volumes or []:
        sources = []
        if v.secret:
            sources.append(v.secret)
        if v.projected:
            sources += [s.secret for s in v.projected.sources or [] if s.secret]
        for s in sources:
            name = getattr(s, "secret_name", None) or getattr(s, "name", None)
            keys = [i.key for i in s.items or []] or [None]
            refs += [SecretRef(name, k, bool(s.optional), f"{owner} volume {v.name}") for k in keys]
    for p in spec.image_pull_secrets or []:
        refs.append(SecretRef(p.name, None, False, f"{owner} imagePullSecrets"))
    return refs


def env_of(container: Any) -> dict[str, Any]:
    """name -> V1EnvVar of a container."""
    return {e.name: e for e in container.env or []}


def container(workload: Any, name: str) -> Any:
    (found,) = [c for c in workload.spec.template.spec.containers if c.name == name]
    return found


# --- helm releases -------------------------------------------------------------------------------


@dataclass
class Release:
    """One helm release in its own namespace of the live API server."""

    helm: h.Helm
    cluster: Cluster
    chart: str
    namespace: str
    name: str = h.RELEASE
    profile: str = ""
    uninstalled: bool = False
    made_secrets: set[str] = field(default_factory=set)

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.helm.run(
            *args, "--namespace", self.namespace, "--kubeconfig", str(self.cluster.api.kubeconfig), check=check, timeout=timeout
        )

    @staticmethod
    def _values_args(values: Iterable[str | Path] = (), sets: Iterable[str] = ()) -> list[str]:
        args: list[str] = []
        for v in values:
            args += ["--values", str(v)]
        for s in sets:
            args += ["--set", s]
        return args

    def install(
        self, values: Iterable[str | Path] = (), sets: Iterable[str] = (), *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # No --wait: without a kubelet no pod ever runs (helm 4's default, hookOnly, waits for
        # hooks only, and the charts' only hooks are `helm test` pods, which install never runs).
        args = ["install", self.name, str(h.chart_dir(self.chart)), "--create-namespace", *self._values_args(values, sets)]
        return self.run(*args, check=check)

    def upgrade(
        self, values: Iterable[str | Path] = (), sets: Iterable[str] = (), *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("upgrade", self.name, str(h.chart_dir(self.chart)), *self._values_args(values, sets), check=check)

    def rollback(self, revision: int, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("rollback", self.name, str(revision), check=check)

    def uninstall(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.run("uninstall", self.name, check=check)
        self.uninstalled = self.uninstalled or result.returncode == 0
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.run("status", self.name, "--output", "json").stdout)

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.run("history", self.name, "--output", "json").stdout)

    def user_values(self, revision: int | None = None) -> dict[str, Any]:
        """The values given to a revision (`helm get values`; {} when none)."""
        args = ["get", "values", self.name, "--output", "json"] + (["--revision", str(revision)] if revision else [])
        return json.loads(self.run(*args).stdout) or {}

    def manifest(self, revision: int | None = None) -> list[dict[str, Any]]:
        """The objects of a revision as helm stored them (hooks excluded)."""
        args = ["get", "manifest", self.name] + (["--revision", str(revision)] if revision else [])
        return h.parse_documents(self.run(*args).stdout)

    def kept_objects(self) -> set[tuple[str, str]]:
        """(Kind, name) of the release's objects that `helm uninstall` keeps on purpose."""
        return {
            (d["kind"], d["metadata"]["name"])
            for d in self.manifest()
            if (d["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"
        }


# --- Secrets a profile expects to exist before install (the `existingSecret`s it names) ---------

_DOCKER_CONFIG = json.dumps({"auths": {"registry.example.com": {"auth": base64.b64encode(b"robot:token").decode()}}})
# Contents that satisfy the API server's type checks; no pod ever reads them.
_PEM = "-----BEGIN CERTIFICATE-----\nTUlJQnRlc3Q=\n-----END CERTIFICATE-----\n"
_KEY = "-----BEGIN PRIVATE KEY-----\nTUlJQnRlc3Q=\n-----END PRIVATE KEY-----\n"

# profile -> {Secret name: (type, data)}: what each chart's README asks an operator to create
# beforehand for the `existingSecret` / `passwordFileSecret` / `imagePullSecrets` the profile names.
EXTERNAL_SECRETS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "cloud-s3": {
        # One key per broker user, the processor's and the probe's included (README: existingSecret).
        "facepipe-broker-users": (
            "Opaque",
            {"processor": "processor-pw", "facepipe-probe": "probe-pw", "gallery-prod": "gallery-pw", "pi-kitchen": "kitchen-pw"},
        ),
        "mqtt-faces-example-com-tls": ("kubernetes.io/tls", {"tls.crt": _PEM, "tls.key": _KEY, "ca.crt": _PEM}),
        "facepipe-s3": ("Opaque", {"AWS_ACCESS_KEY_ID": "AKIAFACEPIPE", "AWS_SECRET_ACCESS_KEY": "secret-key"}),
        # The gallery's read-only S3 keys and its users file (README: "The gallery").
        "facepipe-s3-readonly": ("Opaque", {"AWS_ACCESS_KEY_ID": "AKIAGALLERY", "AWS_SECRET_ACCESS_KEY": "readonly-key"}),
        "facepipe-gallery": ("Opaque", {"users": "ann:admin:scrypt$16384$8$1$c2FsdA$a2V5\n", "session-secret": "a-session-key"}),
    },
    "cloud-s3-compatible": {
        "facepipe-passwd": ("Opaque", {"passwd": "processor:$7$101$c2FsdA==$aGFzaA==\n"}),
        "rgw-ca": ("Opaque", {"ca.crt": _PEM}),
    },
    "edge-deviceplugin": {
        "lobby-01-uplink": ("Opaque", {"username": "lobby-01", "password": "lobby-pw"}),
    },
    "edge-file-demo": {
        "facepipe-cloud-ca": ("Opaque", {"ca.crt": _PEM}),
        "demo-1-uplink": ("Opaque", {"username": "demo-1", "password": "demo-pw"}),
    },
    "edge-hostdevice-video2": {
        "facepipe-cloud-ca": ("Opaque", {"ca.crt": _PEM}),
        "gate-2-uplink": ("Opaque", {"user": "gate-2", "pass": "gate-pw"}),
        "gate-2-edge-broker": ("Opaque", {"username": "facepipe", "password": "edge-pw"}),
    },
    "edge-rtsp": {
        "facepipe-cloud-ca": ("Opaque", {"ca.crt": _PEM}),
        "parking-north-client-tls": ("kubernetes.io/tls", {"tls.crt": _PEM, "tls.key": _KEY}),
        "north-gate-rtsp": ("Opaque", {"username": "viewer", "password": "rtsp-pw"}),
        "registry-example": ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": _DOCKER_CONFIG}),
    },
    "edge-usb-privileged": {
        "pi-kitchen-uplink": ("Opaque", {"username": "pi-kitchen", "password": "kitchen-pw"}),
    },
}


def named_secrets(values: Any) -> set[str]:
    """Names of Secrets a values tree asks for: every non-empty `existingSecret` and
    `passwordFileSecret`, and the `imagePullSecrets` names."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in ("existingSecret", "passwordFileSecret") and isinstance(value, str) and value:
                    found.add(value)
                elif key == "imagePullSecrets" and isinstance(value, list):
                    found.update(item["name"] for item in value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(values)
    return found


def make_external_secrets(cluster: Cluster, namespace: str, profile: str) -> set[str]:
    """Create the namespace and the Secrets the profile expects to exist; return their names."""
    secrets = EXTERNAL_SECRETS.get(profile, {})
    if secrets:
        cluster.create_namespace(namespace)
    for name, (type_, data) in secrets.items():
        cluster.create_secret(namespace, name, data, type_)
    return set(secrets)


def install_profile(
    helm: h.Helm,
    cluster: Cluster,
    chart: str,
    profile: str,
    namespace: str,
    *,
    sets: Sequence[str] = (),
    track: list[Release] | None = None,
) -> Release:
    """A release of chart/profile in its own namespace, with the profile's external Secrets made
    first; appended to `track` (for clean-up) before anything is created."""
    release = Release(helm, cluster, chart, namespace, profile=profile)
    if track is not None:
        track.append(release)
    release.made_secrets = make_external_secrets(cluster, namespace, profile)
    files, default_sets = h.profile_args(chart, profile)
    release.install(files, [*default_sets, *sets])
    return release


def remove(release: Release) -> None:
    """Uninstall (unless done) and delete the release's namespace, without waiting."""
    if not release.uninstalled:
        release.uninstall(check=False)
    release.cluster.delete_namespace(release.namespace)


def dump_documents(docs: Iterable[Mapping[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(h.strip_source(d), sort_keys=False) for d in docs)
