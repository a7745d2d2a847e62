"""Argo CD's core install on a test cluster, its workloads run as processes on this machine.

`bash .ci/install-argocd.sh` builds the `argocd` multi-call binary of the pinned release and keeps
that release's install manifests next to it. `ArgoCD.install()` applies `core-install.yaml` (the
install without UI and API server: application-controller, applicationset-controller, repo-server,
Redis) into namespace `argocd` of a `SimulatedCluster`, exactly as `kubectl apply -n argocd
--server-side -f .../core-install.yaml` does on a real cluster. KWOK then runs those workloads' pods
as fake pods, and `ArgoCD.start()` plays their kubelet for real: for each Deployment or StatefulSet
of the install it starts the container's command here (the `argocd` binary under the name the image
calls it by; Debian's `redis-server` for Redis), with
- the environment its pod spec gives it, resolved from the live ConfigMaps and Secrets (so
  `argocd-cmd-params-cm` and `argocd-cm` configure it as in a cluster),
- its ServiceAccount's token (TokenRequest) in a kubeconfig for its own namespace, so the install's
  RBAC is what it runs with,
- what the pod's volumes and ports would give it: working folders instead of /tmp, /helm-working-dir
  and /app/config, free loopback ports instead of fixed container ports (the addresses the components
  use to reach each other are set in argocd-cmd-params-cm, `repo.server` and `redis.server`, as
  anyone running them outside the cluster does), and the repo-server's `helm` (Helm 4, as in the
  official image of this release) first on PATH.
When a workload's pod template changes (`kubectl rollout restart`, or a patched image), its process
is restarted with the environment resolved again, as a new pod would be.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facepipe_dev import helm as h
from facepipe_dev.kube import HOST, KubeAPIServer
from facepipe_dev.processes import ChildProcess, free_port, port_open

ARGOCD_VERSION = "v3.6.1"
NAMESPACE = "argocd"
INSTALL_HINT = "run `bash .ci/install-argocd.sh` (Argo CD), `apt-get install redis-server`, `bash .ci/install-helm.sh` (Helm 4)"
WORKLOAD_KINDS = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def argocd_root() -> Path:
    cache = os.environ.get("FACEPIPE_TOOLS_CACHE") or "/var/cache/facepipe-tools"
    return Path(cache) / f"argocd-{ARGOCD_VERSION}"


@dataclass(frozen=True)
class ArgoTools:
    bin_dir: Path  # argocd and its links (argocd-repo-server, ...)
    manifests: Path  # the release's manifests/ (core-install.yaml, crds/)
    helm: Path  # Helm 4, the repo-server's helm
    redis_server: Path

    @property
    def argocd(self) -> Path:
        return self.bin_dir / "argocd"

    @classmethod
    def find(cls) -> tuple[ArgoTools | None, str]:
        root = argocd_root()
        helm4 = h.find_helm(4)
        redis = shutil.which("redis-server")
        tools = cls(root / "bin", root / "manifests", Path(helm4) if helm4 else Path("helm4"), Path(redis or "redis-server"))
        missing = [str(p) for p in (tools.argocd, tools.manifests / "core-install.yaml") if not p.exists()]
        if helm4 is None:
            missing.append("helm4")
        if redis is None:
            missing.append("redis-server")
        if missing:
            return None, f"missing {', '.join(missing)}: {INSTALL_HINT}"
        return tools, ""


def load_all(path: Path) -> list[dict[str, Any]]:
    """Every document of a YAML file (C loader: the install manifest is 1.5 MB)."""
    return [d for d in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader) if d]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ escapes; unknown stays)."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text).replace("$$", "$")


@dataclass
class Component:
    """One workload of the install and the process that plays its pod."""

    kind: str
    name: str
    template: dict[str, Any]
    process: ChildProcess | None = None
    started_template: str = ""
    port: int = 0  # the port others reach it on (Redis, repo-server); 0 for the controllers
    health_port: int = 0
    restarts: int = 0


class ArgoCD:
    """Argo CD (core install) on `api`'s cluster; the components run here until `stop()`."""

    def __init__(self, api: KubeAPIServer, workdir: Path, tools: ArgoTools, kubectl: Path, *, start_timeout: float = 120.0) -> None:
        self.api = api
        self.workdir = workdir
        self.tools = tools
        self.kubectl = kubectl
        self.start_timeout = start_timeout
        self.components: dict[str, Component] = {}
        self.redis_port = free_port(HOST)
        self.repo_server_port = free_port(HOST)
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    # --- configuration ----------------------------------------------------------------------------

    @property
    def install_manifest(self) -> Path:
        """core-install.yaml of the built release (`kubectl apply -n argocd --server-side -f` it)."""
        return self.tools.manifests / "core-install.yaml"

    def configure(self, poll_seconds: int) -> None:
        """After the install is applied: the addresses the components reach each other on, and how
        often Argo CD looks at git and the clusters (default 3 min; a webhook makes it immediate)."""
        self.set_params(
            {
                "repo.server": f"{HOST}:{self.repo_server_port}",
                "redis.server": f"{HOST}:{self.redis_port}",
                "reposerver.listen.address": HOST,
                "reposerver.metrics.listen.address": HOST,
                "applicationsetcontroller.requeue.after": f"{poll_seconds}s",
            }
        )
        self.set_params({"timeout.reconciliation": f"{poll_seconds}s", "timeout.reconciliation.jitter": "0s"}, "argocd-cm")

    def set_params(self, data: Mapping[str, str], configmap: str = "argocd-cmd-params-cm") -> None:
        """Merge keys into one of Argo CD's ConfigMaps (`kubectl patch --type merge`)."""
        self.kubectl_run("-n", NAMESPACE, "patch", "configmap", configmap, "--type", "merge", "-p", json.dumps({"data": dict(data)}))

    def kubectl_run(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.api.kubeconfig}", *args], capture_output=True, text=True, check=False, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every workload of the install (Redis first, then the repo-server, then the
        controllers) and a watcher that restarts a component whose pod template changes."""
        order = ["argocd-redis", "argocd-repo-server", "argocd-applicationset-controller", "argocd-application-controller"]
        for doc in load_all(self.install_manifest):
            if doc["kind"] in WORKLOAD_KINDS:
                name = doc["metadata"]["name"]
                self.components[name] = Component(doc["kind"], name, {})
        unknown = sorted(set(self.components) - set(order))
        if unknown:
            raise RuntimeError(f"{self.install_manifest.name} has workloads this fixture does not know how to run: {unknown}")
        try:
            for name in order:
                self._start_component(self.components[name])
        except BaseException:
            self.stop()
            raise
        self._watcher = threading.Thread(target=self._watch_templates, name="argocd-pod-templates", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
            self._watcher = None
        with self._lock:
            for name in reversed(list(self.components)):
                process = self.components[name].process
                if process is not None:
                    process.stop()

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.process.log_tail(lines)}" for c in self.components.values() if c.process is not None)

    def warnings(self, lines: int = 5) -> str:
        """The last warning and error lines of each component's log (JSON lines), for failure messages."""
        out = []
        for component in self.components.values():
            found = [line[:400] for line in self.iter_logs(component.name) if '"level":"warning"' in line or '"level":"error"' in line]
            if found:
                out.append(f"--- {component.name} ---\n" + "\n".join(found[-lines:]))
        return "\n".join(out)

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def restarts(self, name: str) -> int:
        return self.components[name].restarts

    # --- one component ----------------------------------------------------------------------------

    def _live_template(self, component: Component) -> dict[str, Any]:
        plural = WORKLOAD_KINDS[component.kind]
        status, body = self.api.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/{plural}/{component.name}")
        if status != 200:
            raise RuntimeError(f"{component.kind} {component.name}: HTTP {status}: {body}")
        return body["spec"]["template"]

    def _start_component(self, component: Component) -> None:
        template = self._live_template(component)
        component.template = template
        component.started_template = json.dumps(template, sort_keys=True)
        spec = template["spec"]
        sa = spec.get("serviceAccountName") or "default"
        home = self.workdir / component.name
        kubeconfig = self._service_account_kubeconfig(sa, home)
        pod_name = f"{component.name}-0" if component.kind == "StatefulSet" else f"{component.name}-host"
        for init in spec.get("initContainers", []):
            argv = init.get("command") or []
            if argv[:1] == ["argocd"]:  # e.g. `argocd admin redis-initial-password`: makes the Redis Secret
                env = self._environment(init, home, kubeconfig, pod_name)
                self._run_to_completion(f"{component.name}-{init['name']}", [str(self.tools.bin_dir / argv[0]), *argv[1:]], env)
            # others copy the binary for config management plugins (copyutil): nothing to do here
        (main,) = [c for c in spec["containers"] if c["name"] == component.name or len(spec["containers"]) == 1]
        env = self._environment(main, home, kubeconfig, pod_name)
        argv, component.port, component.health_port = self._argv(component, main, env)
        process = ChildProcess(component.name, argv, self.log_path(component.name), env=env, cwd=home, stop_timeout=20.0)
        component.process = process.start()
        self._wait_ready(component)

    def _argv(self, component: Component, container: dict[str, Any], env: Mapping[str, str]) -> tuple[list[str], int, int]:
        """The container's command with the host's binaries and free loopback ports."""
        words = [expand(w, env) for w in (container.get("command") or []) + (container.get("args") or [])]
        if component.name == "argocd-redis":
            # The redis image's entrypoint is redis-server; Debian's binary takes the same arguments.
            port = self.redis_port
            return [str(self.tools.redis_server), *words, "--bind", HOST, "--port", str(port)], port, port
        binary = Path(words[0]).name  # /usr/local/bin/argocd-repo-server -> argocd-repo-server
        argv = [str(self.tools.bin_dir / binary), *words[1:]]
        metrics = free_port(HOST)
        if component.name == "argocd-repo-server":
            return [*argv, f"--port={self.repo_server_port}", f"--metrics-port={metrics}"], self.repo_server_port, metrics
        if component.name == "argocd-applicationset-controller":
            probe = free_port(HOST)
            extra = [f"--metrics-addr={HOST}:{metrics}", f"--probe-addr={HOST}:{probe}", f"--webhook-addr={HOST}:{free_port(HOST)}"]
            return [*argv, *extra], 0, probe
        return [*argv, f"--metrics-port={metrics}"], 0, metrics

    def _environment(self, container: dict[str, Any], home: Path, kubeconfig: Path, pod_name: str) -> dict[str, str]:
        """The container's env, resolved as the kubelet does, plus what its volumes would give."""
        paths = {name: home / name for name in ("tmp", "helm-working-dir", "app-config", "tls", "ssh", "gpg-source", "gpg-keys", "path")}
        for path in paths.values():
            path.mkdir(parents=True, exist_ok=True)
        helm_link = paths["path"] / "helm"
        if not helm_link.exists():
            helm_link.symlink_to(self.tools.helm)
        env: dict[str, str] = {
            "PATH": f"{paths['path']}:{self.tools.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "HOSTNAME": pod_name,
            "KUBECONFIG": str(kubeconfig),
            # The in-cluster destination (https://kubernetes.default.svc) through that kubeconfig.
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "TMPDIR": str(paths["tmp"]),
            "ARGOCD_APP_CONF_PATH": str(paths["app-config"]),
            "ARGOCD_TLS_DATA_PATH": str(paths["tls"]),
            "ARGOCD_SSH_DATA_PATH": str(paths["ssh"]),
            "ARGOCD_GPG_DATA_PATH": str(paths["gpg-source"]),
            "ARGOCD_GNUPGHOME": str(paths["gpg-keys"]),
            # The image runs gpg with a keyring it prepares at start; no signature checks here.
            "ARGOCD_GPG_ENABLED": "false",
        }
        for item in container.get("env", []):
            value = self._env_value(item, pod_name)
            if value is not None:
                env[item["name"]] = expand(value, env)
        for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            if name in env:
                env[name] = str(paths["helm-working-dir"])  # the pod's emptyDir /helm-working-dir
        if "KUBECACHEDIR" in env:
            env["KUBECACHEDIR"] = str(paths["tmp"] / "kubecache")
        return env

    def _env_value(self, item: Mapping[str, Any], pod_name: str) -> str | None:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            return {"metadata.namespace": NAMESPACE, "metadata.name": pod_name}.get(field)
        for ref_kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            ref = source.get(ref_kind)
            if ref is None:
                continue
            status, body = self.api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/{plural}/{ref['name']}")
            data = (body.get("data") or {}) if status == 200 else {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise RuntimeError(f"{item['name']}: {ref_kind} {ref['name']}/{ref['key']} does not exist (HTTP {status})")
            value = data[ref["key"]]
            return base64.b64decode(value).decode() if plural == "secrets" else value
        return None

    def _service_account_kubeconfig(self, service_account: str, home: Path) -> Path:
        """A kubeconfig with a token of the ServiceAccount (TokenRequest, one day), namespace argocd."""
        home.mkdir(parents=True, exist_ok=True)
        status, body = self.api.request(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}},
        )
        if status != 201:
            raise RuntimeError(f"token for ServiceAccount {service_account}: HTTP {status}: {body}")
        ca = base64.b64encode(self.api.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {"server": self.api.server, "certificate-authority-data": ca}}],
            "users": [{"name": service_account, "user": {"token": body["status"]["token"]}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": service_account, "namespace": NAMESPACE}}],
            "current-context": "in-cluster",
        }
        path = home / "kubeconfig"
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def _run_to_completion(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        process = ChildProcess(name, argv, self.log_path(name), env=env)
        process.start()
        deadline = time.monotonic() + self.start_timeout
        while process.running():
            if time.monotonic() > deadline:
                process.stop()
                raise TimeoutError(f"{name} did not finish:\n{process.log_tail()}")
            time.sleep(0.1)
        if process.returncode() != 0:
            raise RuntimeError(f"{name} failed (exit {process.returncode()}):\n{process.log_tail()}")
        process.stop()

    def _wait_ready(self, component: Component) -> None:
        process = component.process
        assert process is not None
        deadline = time.monotonic() + self.start_timeout
        while not port_open(HOST, component.health_port):
            if not process.running():
                raise RuntimeError(f"{component.name} exited (code {process.returncode()}):\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{component.name} did not listen on {component.health_port}:\n{process.log_tail()}")
            time.sleep(0.1)

    def _watch_templates(self) -> None:
        """Restart a component whose pod template changed (a new pod would start with it)."""
        while not self._stopping.wait(1.0):
            for component in list(self.components.values()):
                try:
                    current = json.dumps(self._live_template(component), sort_keys=True)
                except (OSError, RuntimeError):
                    continue
                if current == component.started_template or self._stopping.is_set():
                    continue
                with self._lock:
                    if component.process is not None:
                        component.process.stop()
                    component.restarts += 1
                    self._start_component(component)

    # --- reading Argo CD's objects ------------------------------------------------------------------

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        status, body = self.api.request("GET", f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/{plural}/{name}")
        return body if status == 200 else None

    def items(self, plural: str, selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        status, body = self.api.request("GET", f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/{plural}{query}")
        if status != 200:
            raise RuntimeError(f"listing {plural}: HTTP {status}: {body}")
        return list(body.get("items", []))

    def applications(self, selector: str = "") -> dict[str, dict[str, Any]]:
        return {a["metadata"]["name"]: a for a in self.items("applications", selector)}

    def iter_logs(self, name: str) -> Iterator[str]:
        path = self.log_path(name)
        if path.is_file():
            yield from path.read_text(errors="replace").splitlines()


def app_state(app: Mapping[str, Any]) -> str:
    """One line: sync status, health, operation phase and conditions, for failure messages."""
    status = app.get("status") or {}
    sync = (status.get("sync") or {}).get("status", "?")
    health = (status.get("health") or {}).get("status", "?")
    operation = (status.get("operationState") or {}).get("phase", "-")
    message = (status.get("operationState") or {}).get("message", "")
    conditions = "; ".join(f"{c.get('type')}: {c.get('message')}" for c in status.get("conditions") or [])
    return f"{app['metadata']['name']}: sync={sync} health={health} operation={operation} {message[:300]} {conditions[:600]}".strip()


def synced_and_healthy(app: Mapping[str, Any], revision: str | None = None) -> bool:
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    if sync.get("status") != "Synced" or (status.get("health") or {}).get("status") != "Healthy":
        return False
    if revision is None:
        return True
    revisions = sync.get("revisions") or [sync.get("revision")]
    return revision in revisions
