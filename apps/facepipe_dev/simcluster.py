"""A Kubernetes cluster whose pods become Ready without containers: API server, workload
controllers, the real scheduler, and KWOK's fake nodes.

`SimulatedCluster` is a `KubeAPIServer` (etcd + kube-apiserver + kube-controller-manager, here with
the workload and volume controllers too) plus
- kube-scheduler of the same Kubernetes release (`bash .ci/install-kube.sh kube-scheduler`): pods are
  placed by the real scheduler, so a nodeSelector, toleration or extended resource that no node
  satisfies leaves the pod Pending with reason Unschedulable, as on a device;
- KWOK (`bash .ci/install-kwok.sh`, sigs.k8s.io/kwok): it keeps the fake nodes alive and takes each pod
  bound to them through its life cycle (Running, Ready, deleted) with KWOK's own "fast" stages;
- two stages of this project (kwok-stages.yaml) standing in for what k3s adds to a cluster: the
  local-path provisioner (the default StorageClass `local-path`, WaitForFirstConsumer, a volume on
  the node the pod was scheduled to) and ServiceLB (a LoadBalancer Service gets the node's address).

Nothing else is simulated: Deployments, ReplicaSets, StatefulSets, PodDisruptionBudgets, volume
binding and garbage collection are Kubernetes' own controllers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from facepipe_dev.kube import DEFAULT_CONTROLLERS, HOST, KUBE_VERSION, KubeAPIServer, kube_binaries
from facepipe_dev.processes import ChildProcess, free_port

KWOK_VERSION = "v0.8.0"
STORAGE_CLASS = "local-path"  # k3s's default StorageClass, named by argocd/values/cloud.yaml
WORKLOAD_CONTROLLERS: tuple[str, ...] = (
    *DEFAULT_CONTROLLERS,
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "disruption-controller",
    "endpointslice-controller",
    "persistentvolume-binder-controller",
    "pod-garbage-collector-controller",
    # Lifts the not-ready taint that admission puts on every new node, once KWOK reports it Ready.
    "node-lifecycle-controller",
)
# KWOK's own stages (kustomize/stage of its release, copied by install-kwok.sh), as kwokctl uses them.
KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
K3S_STAGES = Path(__file__).with_name("kwok-stages.yaml")
INSTALL_HINT = "run `bash .ci/install-kube.sh kube-scheduler` and `bash .ci/install-kwok.sh`"


def _cache() -> Path:
    return Path(os.environ.get("FACEPIPE_TOOLS_CACHE") or "/var/cache/facepipe-tools")


@dataclass(frozen=True)
class SimTools:
    """Where the binaries are: the control plane's bin dir (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler) and KWOK's bin dir with its stage definitions next to it."""

    kube_bin: Path
    kwok_root: Path

    @property
    def kwok(self) -> Path:
        return self.kwok_root / "bin" / "kwok"

    @property
    def scheduler(self) -> Path:
        return self.kube_bin / "kube-scheduler"

    @classmethod
    def find(cls) -> tuple[SimTools | None, str]:
        """(tools, "") when everything is built, else (None, what is missing and how to build it)."""
        kube_bin, reason = kube_binaries()
        if kube_bin is None:
            return None, reason
        tools = cls(kube_bin, _cache() / f"kwok-{KWOK_VERSION}")
        missing = [str(p) for p in (tools.scheduler, tools.kwok) if not os.access(p, os.X_OK)]
        missing += [str(tools.kwok_root / "stages" / f) for f in KWOK_STAGE_FILES if not (tools.kwok_root / "stages" / f).is_file()]
        if missing:
            return None, f"missing {', '.join(missing)}: {INSTALL_HINT}"
        return tools, ""


@dataclass(frozen=True)
class FakeNode:
    """A node as its kubelet would register it: labels, taints, capacity (extended resources such as a
    device plugin's `squat.ai/video` included)."""

    name: str
    arch: str = "amd64"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    cpu: str = "4"
    memory: str = "8Gi"
    extended_resources: Mapping[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "64Gi"}
        capacity.update(self.extended_resources)
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": self.arch,
            "type": "kwok",
            **self.labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {"taints": [dict(t) for t in self.taints]},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "nodeInfo": {"architecture": self.arch, "operatingSystem": "linux", "kubeletVersion": KUBE_VERSION},
            },
        }


def kwok_config(stages: Path) -> str:
    """KWOK's configuration: its own node and pod stages, then this project's k3s stand-ins."""
    docs = [(stages / f).read_text() for f in KWOK_STAGE_FILES]
    docs.append(K3S_STAGES.read_text())
    return "\n---\n".join(d.strip() for d in docs) + "\n"


class SimulatedCluster:
    """One cluster on loopback with fake nodes; `.api` is its KubeAPIServer (kubeconfig, request())."""

    def __init__(self, name: str, workdir: Path, tools: SimTools, nodes: Sequence[FakeNode], *, start_timeout: float = 180.0) -> None:
        self.name = name
        self.workdir = workdir
        self.tools = tools
        self.nodes = tuple(nodes)
        self.start_timeout = start_timeout
        self.api = KubeAPIServer(workdir / "control-plane", tools.kube_bin, controllers=WORKLOAD_CONTROLLERS, start_timeout=start_timeout)
        self.processes: list[ChildProcess] = []

    @property
    def server(self) -> str:
        return self.api.server

    @property
    def kubeconfig(self) -> Path:
        return self.api.kubeconfig

    def start(self) -> Self:
        """Start everything and register the nodes; on any failure stop what was started and re-raise."""
        try:
            self.api.start()
            self._start_scheduler()
            self._start_kwok()
            self._apply_storage_class()
            for node in self.nodes:
                self.add_node(node)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """KWOK and the scheduler, then the control plane; safe to call twice."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self.api.stop()

    def log_tails(self, lines: int = 20) -> str:
        own = "\n".join(f"--- {p.name} ---\n{p.log_tail(lines)}" for p in self.processes)
        return f"{self.api.log_tails(lines)}\n{own}"

    def add_node(self, node: FakeNode) -> None:
        """Register a node and wait until KWOK reports it Ready."""
        status, body = self.api.request("POST", "/api/v1/nodes", node.manifest())
        if status != 201:
            raise RuntimeError(f"{self.name}: creating node {node.name}: HTTP {status}: {body}")
        deadline = time.monotonic() + self.start_timeout
        while not self.node_ready(node.name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: node {node.name} not Ready:\n{self.log_tails()}")
            time.sleep(0.2)

    def node_ready(self, name: str) -> bool:
        status, body = self.api.request("GET", f"/api/v1/nodes/{name}")
        conditions = (body.get("status") or {}).get("conditions") or [] if status == 200 else []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # --- internals ---------------------------------------------------------------------------

    def _start_scheduler(self) -> None:
        port = free_port(HOST)
        kubeconfig = str(self.api.kubeconfig)
        scheduler = ChildProcess(
            "kube-scheduler",
            [
                str(self.tools.scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
            self.workdir / "logs" / "kube-scheduler.log",
        )
        self.processes.append(scheduler.start())
        scheduler.wait_for_port(HOST, port, timeout=self.start_timeout)

    def _start_kwok(self) -> None:
        config = self.workdir / "kwok.yaml"
        config.write_text(kwok_config(self.tools.kwok_root / "stages"))
        kwok = ChildProcess(
            "kwok",
            [
                str(self.tools.kwok),
                f"--kubeconfig={self.api.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                f"--node-ip={HOST}",
                "--cidr=10.42.0.0/24",
            ],
            self.workdir / "logs" / "kwok.log",
            env={**os.environ, "HOME": str(self.workdir)},
        )
        self.processes.append(kwok.start())

    def _apply_storage_class(self) -> None:
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "rancher.io/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
        status, body = self.api.request("POST", "/apis/storage.k8s.io/v1/storageclasses", storage_class)
        if status not in (201, 409):
            raise RuntimeError(f"{self.name}: creating StorageClass {STORAGE_CLASS}: HTTP {status}: {body}")
