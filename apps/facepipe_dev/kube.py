"""A real Kubernetes control plane on loopback for tests: etcd + kube-apiserver (+ kube-controller-manager).

The binaries are built from the Go module proxy by `bash .ci/install-kube.sh` into
`${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/kube-v1.36.3/bin`. There is no kubelet and no
scheduler: objects are stored, validated, defaulted and admitted exactly as on a cluster, but no pod
ever runs.

kube-controller-manager runs by default with a few controllers only (`DEFAULT_CONTROLLERS`):
- serviceaccount-controller: the "default" ServiceAccount in each namespace. Without it the
  ServiceAccount admission plugin rejects every pod in a new namespace (403 "error looking up
  service account NS/default: serviceaccount "default" not found", after ~1 s of retries).
- namespace-controller: finalizes deleted namespaces; without it they stay Terminating forever.
- persistentvolume(claim)-protection-controller: admission puts a protection finalizer on every PVC
  and PV; without these a deleted PVC (helm uninstall of a chart with one) stays Terminating.
- garbage-collector-controller: deletes dependents through ownerReferences.
- serviceaccount-token, root-ca-certificate-publisher, clusterrole-aggregation: the
  kube-root-ca.crt ConfigMap, token Secrets and aggregated admin/edit/view roles of a real cluster.
Workload controllers (deployment, replicaset, job, ...) are left out so that no Pending pods appear
(there is no scheduler or kubelet); pass `controllers=` to add them, or `controllers=()` to run
without kube-controller-manager.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from facepipe_dev.processes import ChildProcess, free_port

KUBE_VERSION = "v1.36.3"
SERVICE_CIDR = "10.43.0.0/16"  # k3s's default --service-cidr
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
)
HOST = "127.0.0.1"

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:10.43.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
"""


def kube_bin_dir() -> Path:
    """Where .ci/install-kube.sh puts the binaries (FACEPIPE_TOOLS_CACHE moves it)."""
    cache = os.environ.get("FACEPIPE_TOOLS_CACHE") or "/var/cache/facepipe-tools"
    return Path(cache) / f"kube-{KUBE_VERSION}" / "bin"


def kube_binaries() -> tuple[Path | None, str]:
    """Return (bin dir, "") when etcd and kube-apiserver are built, else (None, why not) for pytest.skip."""
    bin_dir = kube_bin_dir()
    missing = [name for name in ("etcd", "kube-apiserver") if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        return None, f"{', '.join(missing)} not in {bin_dir}: run bash .ci/install-kube.sh"
    if shutil.which("openssl") is None:
        return None, "openssl is not on PATH (it makes the test certificates): apt-get install openssl"
    return bin_dir, ""


def _openssl(args: str, subject: str | None, cwd: Path) -> None:
    """Run `openssl ARGS [-subj SUBJECT]` in cwd (args: space-separated, no spaces inside one)."""
    argv = ["openssl", *args.split(), *(["-subj", subject] if subject else [])]
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class KubeAPIServer:
    """etcd + kube-apiserver (+ kube-controller-manager) on free loopback ports, as a context manager.

    After `start()` (or `with`): `.server` is the https URL, `.kubeconfig` a kubeconfig file for a
    cluster admin (client certificate with O=system:masters; RBAC is on), `.ca_cert` the CA.
    """

    def __init__(
        self,
        workdir: Path,
        bin_dir: Path,
        *,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        start_timeout: float = 120.0,
    ) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.controllers = tuple(controllers)
        self.start_timeout = start_timeout
        self.certs = workdir / "pki"
        self.ca_cert = self.certs / "ca.crt"
        self.kubeconfig = workdir / "kubeconfig"
        self.etcd_url = ""
        self.server = ""
        self.processes: list[ChildProcess] = []

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start everything and wait for /readyz; on any failure stop what was started and re-raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop in reverse order (controller-manager, apiserver, etcd); safe to call twice."""
        while self.processes:
            self.processes.pop().stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG pointing at this server, for kubectl/helm subprocesses."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every process's log, for failure messages."""
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}" for p in self.processes)

    # --- a minimal admin client (no dependency on the kubernetes package) -------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """One API call as cluster admin; returns (HTTP status, decoded JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def create_namespace(self, name: str, timeout: float = 30.0, labels: dict[str, str] | None = None) -> None:
        """Create a namespace (with `labels`) and, with the serviceaccount controller, wait for its default SA."""
        status, body = self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels or {}}})
        if status not in (201, 409):
            raise RuntimeError(f"creating namespace {name}: HTTP {status}: {body}")
        if "serviceaccount-controller" not in self.controllers:
            return
        deadline = time.monotonic() + timeout
        while self.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no default ServiceAccount in {name} after {timeout:.0f}s\n{self.log_tails()}")
            time.sleep(0.1)

    # --- internals --------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(self.certs / "admin.crt"), str(self.certs / "admin.key"))
        return ctx

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_certs()
        logs = self.workdir / "logs"

        etcd_port, peer_port = free_port(HOST), free_port(HOST)
        self.etcd_url = f"http://{HOST}:{etcd_port}"
        peer_url = f"http://{HOST}:{peer_port}"
        etcd_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        etcd = ChildProcess(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",  # test data: skip fsync, much faster on a busy disk
                "--log-level=warn",
            ],
            logs / "etcd.log",
            env=etcd_env,
        )
        self.processes.append(etcd.start())
        etcd.wait_for_port(HOST, etcd_port, timeout=self.start_timeout)

        port = free_port(HOST)
        self.server = f"https://{HOST}:{port}"
        pki = self.certs
        apiserver = ChildProcess(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # A loopback address is not a valid Endpoints address: don't reconcile the
                # "kubernetes" Service's endpoints (nothing in the cluster could reach it anyway).
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
            logs / "kube-apiserver.log",
            stop_timeout=20.0,
        )
        self.processes.append(apiserver.start())
        apiserver.wait_for_port(HOST, port, timeout=self.start_timeout)
        self._write_kubeconfig()
        self._wait_ready(apiserver, "/readyz")

        if self.controllers:
            self._start_controller_manager(logs)

    def _wait_ready(self, proc: ChildProcess, path: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.running():
                raise RuntimeError(f"{proc.name} exited (code {proc.returncode()}):\n{proc.log_tail()}")
            try:
                status, body = self.request("GET", path, timeout=5.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {body}"
            except OSError as err:
                last = repr(err)
            time.sleep(0.2)
        raise TimeoutError(f"{proc.name} not ready within {self.start_timeout:.0f}s ({last}):\n{self.log_tails()}")

    def _start_controller_manager(self, logs: Path) -> None:
        binary = self.bin_dir / "kube-controller-manager"
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(f"{binary} is missing: run bash .ci/install-kube.sh, or pass controllers=()")
        port = free_port(HOST)
        kcm = ChildProcess(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                f"--controllers={','.join(self.controllers)}",
                f"--service-account-private-key-file={self.certs / 'sa.key'}",
                f"--root-ca-file={self.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--profiling=false",
                "--v=1",
            ],
            logs / "kube-controller-manager.log",
        )
        self.processes.append(kcm.start())
        kcm.wait_for_port(HOST, port, timeout=self.start_timeout)
        # Its /healthz is served by itself with a self-signed cert: poll it without verification.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not kcm.running():
                raise RuntimeError(f"kube-controller-manager exited (code {kcm.returncode()}):\n{kcm.log_tail()}")
            try:
                with urllib.request.urlopen(f"https://{HOST}:{port}/healthz", context=ctx, timeout=5.0) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"kube-controller-manager not healthy:\n{kcm.log_tail()}")
            time.sleep(0.2)

    def _make_certs(self) -> None:
        pki = self.certs
        pki.mkdir(parents=True, exist_ok=True)
        cnf = pki / "openssl.cnf"
        cnf.write_text(_OPENSSL_CONFIG)
        ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        days = "-days 3650 -config openssl.cnf"
        _openssl(f"req -x509 -new {ec} {days} -extensions ca -keyout ca.key -out ca.crt", "/CN=facepipe-test-ca", pki)
        for name, subject, ext in (
            ("apiserver", "/CN=kube-apiserver", "server"),
            ("admin", "/O=system:masters/CN=facepipe-admin", "client"),
        ):
            _openssl(f"req -new {ec} -config openssl.cnf -keyout {name}.key -out {name}.csr", subject, pki)
            serial = int.from_bytes(os.urandom(8), "big")
            _openssl(
                f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -set_serial {serial} -days 3650"
                f" -extfile openssl.cnf -extensions {ext} -out {name}.crt",
                None,
                pki,
            )
        # Service-account token signing key pair (ES256).
        _openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out sa.key", None, pki)
        _openssl("pkey -in sa.key -pubout -out sa.pub", None, pki)

    def _write_kubeconfig(self) -> None:
        # JSON is YAML: kubectl, helm and the kubernetes Python client all read it.
        pki = self.certs
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "facepipe-test",
                    "cluster": {"server": self.server, "certificate-authority-data": _b64(self.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "facepipe-admin",
                    "user": {
                        "client-certificate-data": _b64(pki / "admin.crt"),
                        "client-key-data": _b64(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "facepipe-test",
                    "context": {"cluster": "facepipe-test", "user": "facepipe-admin", "namespace": "default"},
                }
            ],
            "current-context": "facepipe-test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")
        self.kubeconfig.chmod(0o600)
