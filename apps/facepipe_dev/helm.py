"""Run the real helm (3 and 4) on the charts, parse what they render, and check it.

Binaries: `bash .ci/install-helm.sh` puts helm3, helm4 and kubectl into
`${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/helm/`; `FACEPIPE_HELM3` / `FACEPIPE_HELM4`
point elsewhere. checkov: `bash .ci/install-checkov.sh` (or `FACEPIPE_CHECKOV`).

Also the README values tables: `python -m facepipe_dev.helm readme charts/face-edge` rewrites the
table between the README's markers from the `## @param` comments of values.yaml.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facepipe.spool import SEGMENT_BYTES
from facepipe_dev import crds
from facepipe_dev.paths import REPO
from facepipe_dev.settings_schema import allowed_values, chart_entries

# The Kubernetes version the rendered manifests are validated against: current k3s.
K8S_VERSION = "1.36"
KUBE_VERSION_FLAG = f"v{K8S_VERSION}.0"  # helm template --kube-version

T = TypeVar("T")
R = TypeVar("R")

CHARTS = REPO / "charts"
VALUES_DIR = REPO / "tests" / "values"
RELEASE = "face"
NAMESPACE = "facepipe"

# What `helm template` needs besides each chart's defaults: face-edge has no default cloud.host.
DEFAULT_SETS: dict[str, tuple[str, ...]] = {
    "face-edge": ("cloud.host=mqtt.example.com",),
    "face-cloud": (),
}
PROFILE_PREFIX = {"face-edge": "edge-", "face-cloud": "cloud-"}
CHART_NAMES = tuple(DEFAULT_SETS)
INSTALL_HINT = "run `bash .ci/install-helm.sh` (or set FACEPIPE_HELM3 / FACEPIPE_HELM4)"


def tools_dir() -> Path:
    return Path(os.environ.get("FACEPIPE_TOOLS_CACHE", "/var/cache/facepipe-tools")) / "helm"


def find_kubectl() -> Path | None:
    """FACEPIPE_KUBECTL, else the helm tools cache's kubectl (1.37.1), else kubectl on PATH."""
    env = os.environ.get("FACEPIPE_KUBECTL")
    for candidate in (Path(env) if env else None, tools_dir() / "kubectl"):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("kubectl")
    return Path(found) if found else None


def find_helm(major: int) -> Path | None:
    """helm<major> from FACEPIPE_HELM<major>, else the tools cache; None when absent."""
    env = os.environ.get(f"FACEPIPE_HELM{major}")
    candidate = Path(env) if env else tools_dir() / f"helm{major}"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def find_checkov() -> Path | None:
    env = os.environ.get("FACEPIPE_CHECKOV")
    candidate = Path(env) if env else tools_dir() / "checkov-venv" / "bin" / "checkov"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


class HelmError(RuntimeError):
    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
        self.result = result
        self.stderr = result.stderr
        self.output = result.stderr + result.stdout


@dataclass(frozen=True)
class Helm:
    """One helm binary, run with private, empty helm home directories."""

    name: str  # "helm3" or "helm4"
    path: Path
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="facepipe-helm-")))

    @functools.cached_property
    def version(self) -> str:
        return self.run("version", "--short").stdout.strip()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{name}_HOME"] = str(self.home / name.lower())
        env.pop("KUBECONFIG", None)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.path), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise HelmError(cmd, result)
        return result

    def template_text(
        self,
        chart: str | Path,
        values: Iterable[str | Path] = (),
        sets: Iterable[str] = (),
        *,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        check: bool = True,
        extra: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        args = [*extra, "template", release, str(chart_dir(chart)), "--namespace", namespace, "--kube-version", KUBE_VERSION_FLAG]
        for v in values:
            args += ["--values", str(v)]
        for s in sets:
            args += ["--set", s]
        return self.run(*args, check=check)

    def template(self, chart: str | Path, values: Iterable[str | Path] = (), sets: Iterable[str] = (), **kw: Any) -> list[dict[str, Any]]:
        return parse_documents(self.template_text(chart, values, sets, **kw).stdout)

    def notes(self, chart: str | Path, sets: Iterable[str] = (), values: Iterable[str | Path] = ()) -> str:
        """NOTES.txt as `helm install` would print it (helm template skips NOTES: a copy renders it)."""
        with tempfile.TemporaryDirectory(prefix="facepipe-notes-") as tmp:
            copy = Path(tmp) / chart_dir(chart).name
            shutil.copytree(chart_dir(chart), copy)
            notes = (copy / "templates" / "NOTES.txt").read_text()
            (copy / "templates" / "_zz_notes.tpl").write_text('{{- define "zz.notes" -}}' + notes + "{{- end -}}")
            (copy / "templates" / "zz-notes.yaml").write_text('notes: {{ include "zz.notes" . | toJson }}\n')
            text = self.template_text(copy, values, sets, extra=["--show-only", "templates/zz-notes.yaml"]).stdout
        return yaml.safe_load(text.split("\n", 2)[2])["notes"]

    def lint(self, chart: str | Path, sets: Iterable[str] = (), values: Iterable[str | Path] = ()) -> subprocess.CompletedProcess[str]:
        args = ["lint", "--strict", str(chart_dir(chart)), "--kube-version", KUBE_VERSION_FLAG]
        for v in values:
            args += ["--values", str(v)]
        for s in sets:
            args += ["--set", s]
        return self.run(*args, check=False)


def chart_dir(chart: str | Path) -> Path:
    path = Path(chart)
    return path if path.is_absolute() else CHARTS / path


def parse_documents(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document of helm's output, each with `_source` (its template path)."""
    docs: list[dict[str, Any]] = []
    for chunk in re.split(r"^---\s*$", text, flags=re.MULTILINE):
        source = re.search(r"^# Source: (.+)$", chunk, flags=re.MULTILINE)
        doc = yaml.safe_load(chunk)
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise TypeError(f"a rendered document is not a mapping: {chunk[:200]!r}")
        doc["_source"] = source.group(1) if source else "?"
        docs.append(doc)
    return docs


def strip_source(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_source"}


def profiles(chart: str) -> list[Path]:
    """The tests/values profiles of a chart: edge-*.yaml for face-edge, cloud-*.yaml for face-cloud."""
    return sorted(VALUES_DIR.glob(f"{PROFILE_PREFIX[chart]}*.yaml"))


def profile_ids(chart: str) -> list[str]:
    """'default' (the chart's values plus DEFAULT_SETS) and one id per profile file."""
    return ["default", *(p.stem for p in profiles(chart))]


def profile_args(chart: str, profile: str) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """(values files, --set values) of a profile id."""
    if profile == "default":
        return (), DEFAULT_SETS[chart]
    return (VALUES_DIR / f"{profile}.yaml",), ()


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def effective_values(chart: str, profile: str) -> dict[str, Any]:
    """values.yaml with the profile's values (and --set a.b=c strings) merged over it."""
    values = yaml.safe_load((chart_dir(chart) / "values.yaml").read_text())
    files, sets = profile_args(chart, profile)
    for f in files:
        values = deep_merge(values, yaml.safe_load(Path(f).read_text()) or {})
    return merge_sets(values, sets)


def merge_sets(values: Mapping[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """`values` with --set a.b=c strings merged over them, as helm does."""
    out = dict(values)
    for item in sets:
        dotted, raw = item.split("=", 1)
        override: dict[str, Any] = {}
        node = override
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(raw)
        out = deep_merge(out, override)
    return out


def all_cases() -> list[tuple[str, str]]:
    """(chart, profile id) of every chart's defaults and profiles."""
    return [(chart, profile) for chart in CHART_NAMES for profile in profile_ids(chart)]


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int = 4) -> list[R]:
    """fn over items on a few threads (helm and facepipe runs are separate processes)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


class RenderCache:
    """Each (helm, chart, profile) rendered once per test session; the first use of a helm renders
    every chart and profile at once, in parallel."""

    def __init__(self) -> None:
        self._docs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}

    def _render(self, helm: Helm, chart: str, profile: str) -> list[dict[str, Any]]:
        values, sets = profile_args(chart, profile)
        return helm.template(chart, values, sets)

    def get(self, helm: Helm, chart: str, profile: str) -> list[dict[str, Any]]:
        key = (helm.name, chart, profile)
        if key not in self._docs:
            cases = [c for c in all_cases() if (helm.name, *c) not in self._docs]
            for case, docs in zip(cases, parallel(lambda c: self._render(helm, *c), cases), strict=True):
                self._docs[(helm.name, *case)] = docs
        return self._docs[key]


# --- looking into rendered objects -----------------------------------------------------------------


def by_kind(docs: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def find(docs: Iterable[Mapping[str, Any]], kind: str, component: str) -> Mapping[str, Any]:
    """The one object of `kind` whose app.kubernetes.io/component label is `component`
    (among several, the one named `<fullname>-<component>`)."""
    hits = [d for d in by_kind(docs, kind) if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    if len(hits) > 1:  # e.g. the broker's Service and its -external sibling: the plain name wins
        hits = [d for d in hits if d["metadata"]["name"].endswith(f"-{component}")]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind} with component={component}, found {len(hits)}")
    return hits[0]


def maybe_find(docs: Iterable[Mapping[str, Any]], kind: str, component: str) -> Mapping[str, Any] | None:
    try:
        return find(docs, kind, component)
    except LookupError:
        return None


def pod_spec(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec of a Pod, Deployment, StatefulSet, DaemonSet or Job."""
    if doc["kind"] == "Pod":
        return doc["spec"]
    return doc["spec"]["template"]["spec"]


def workloads(docs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [d for d in docs if d.get("kind") in ("Pod", "Deployment", "StatefulSet", "DaemonSet", "Job")]


def containers(doc: Mapping[str, Any], init: bool = True) -> list[Mapping[str, Any]]:
    spec = pod_spec(doc)
    return list(spec.get("initContainers", []) if init else []) + list(spec["containers"])


def facepipe_containers(docs: Iterable[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every container that runs `facepipe` from the app image, named `Kind/name/container`."""
    out = []
    for doc in workloads(docs):
        for c in containers(doc):
            if "facepipe/facepipe" in c["image"] and c.get("command") == ["facepipe"]:
                out.append((f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", c))
    return out


def env_map(container: Mapping[str, Any], placeholder: str = "placeholder") -> dict[str, str]:
    """A container's env as a process would see it: `value`s as is, valueFrom as `placeholder`.

    fieldRef metadata.name becomes a valid pod-name-like string, so id checks still apply.
    """
    out: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = str(item["value"])
        elif "valueFrom" in item:
            ref = item["valueFrom"]
            if "fieldRef" in ref and ref["fieldRef"]["fieldPath"] == "metadata.name":
                out[item["name"]] = "face-face-cloud-processor-0"
            elif "fieldRef" in ref and ref["fieldRef"]["fieldPath"] == "metadata.namespace":
                out[item["name"]] = NAMESPACE
            else:
                out[item["name"]] = placeholder
        else:
            out[item["name"]] = ""
    return out


def env_item(container: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((e for e in container.get("env", []) if e["name"] == name), None)


_QUANTITY = re.compile(r"^[+]?(?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)(?P<suffix>[numkMGTPE]|[KMGTPE]i)?$")
_QUANTITY_FACTORS = {
    "": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip

# The forwarder's spool drops whole segments of this size (face-edge reads it from files/spool.json, generated).
SPOOL_SEGMENT_BYTES = SEGMENT_BYTES
# face-edge's derived spool limit takes this share of forwarder.spool.size, less one segment (the chart reads it from
# files/spool.json, generated from here).
SPOOL_VOLUME_SHARE = 0.9


def broker_access(docs: Iterable[Mapping[str, Any]], users: Sequence[str]) -> dict[str, Any]:
    """The dynamic-security configuration the cloud broker's init container writes for `users` (a password
    file naming them is given to its rendered access-control.sh, run by the shell)."""
    import json
    import subprocess
    import tempfile

    script = find(docs, "ConfigMap", "broker")["data"]["access-control.sh"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "passwd").write_text("".join(f"{user}:$7$hash\n" for user in users))
        (root / "access-control.sh").write_text(script)
        subprocess.run(
            ["sh", str(root / "access-control.sh"), str(root / "passwd"), str(root / "out.json")], check=True, capture_output=True
        )
        return dict(json.loads((root / "out.json").read_text()))


def grants(access: Mapping[str, Any], user: str) -> set[tuple[str, str]]:
    """(ACL type, topic) of everything `user`'s roles allow in a dynamic-security configuration."""
    (client,) = [c for c in access["clients"] if c["username"] == user]
    names = {r["rolename"] for r in client["roles"]}
    return {(a["acltype"], a["topic"]) for r in access["roles"] if r["rolename"] in names for a in r["acls"] if a["allow"]}


def quantity_bytes(quantity: str | int | float) -> int:
    """A Kubernetes quantity ("2Gi", "500M", "1.5e9") in whole bytes."""
    m = _QUANTITY.match(str(quantity))
    if m is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return int(float(m["number"]) * _QUANTITY_FACTORS[m["suffix"] or ""])


def spool_max_bytes(spool: Mapping[str, Any]) -> int:
    """face-edge's FACEPIPE_SPOOL_MAX_BYTES: forwarder.spool.maxBytes, or SPOOL_VOLUME_SHARE of size less one segment."""
    if spool["maxBytes"]:
        return int(spool["maxBytes"])
    return int(quantity_bytes(spool["size"]) * SPOOL_VOLUME_SHARE) - SPOOL_SEGMENT_BYTES


# --- the apps' view of a rendered container's env (facepipe <component> --check-config) --------------

# Read by something other than facepipe.config (boto3: its credential chain, its CA bundle): not in the report.
READ_ELSEWHERE = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CA_BUNDLE"})
# The facepipe.config settings class of each component the charts run.
COMPONENT_SETTINGS = {
    "camera": "CameraSettings",
    "logger": "LoggerSettings",
    "forwarder": "ForwarderSettings",
    "processor": "ProcessorSettings",
    "probe": "ProbeSettings",
    "gallery": "GallerySettings",
}


def environment_names(component: str) -> set[str]:
    """The environment variables `facepipe <component>` reads (imports facepipe: call it in a test)."""
    from facepipe import config

    return set(config.environment_names(getattr(config, COMPONENT_SETTINGS[component])))


def same_setting(rendered: str, effective: Any) -> bool:
    """Whether the app's effective value is the one the chart rendered (as an env string)."""
    if isinstance(effective, bool):
        return rendered.strip().lower() in (("1", "true", "yes", "on") if effective else ("0", "false", "no", "off", ""))
    if isinstance(effective, int | float):
        return float(rendered) == float(effective)
    return rendered == str(effective)


def check_config_problems(container: Mapping[str, Any], effective: Mapping[str, Any], reader: str = "the app") -> list[str]:
    """A rendered container's env against the effective configuration `facepipe <its args>
    --check-config` printed (the report's "config"): every variable set is one the component reads,
    and a `value` it shows (secrets show as ***) is the value it reads."""
    component = container["args"][0]
    known = environment_names(component)
    problems = []
    for item in container.get("env", []):
        name = item["name"]
        if name in READ_ELSEWHERE:
            continue
        if name not in known:
            problems.append(f"sets {name}, which `facepipe {component}` does not read")
            continue
        shown = effective.get(name, "***")  # an alias (AWS_DEFAULT_REGION) shows under its first name
        if "value" in item and shown != "***" and not same_setting(str(item["value"]), shown):
            problems.append(f"{name}={item['value']!r} but {reader} reads {shown!r}")
    return problems


# --- Argo CD sync waves ----------------------------------------------------------------------------------

SYNC_WAVE = "argocd.argoproj.io/sync-wave"
# The Argo CD sync wave of each template (argocd/README.md, "Sync waves"); "0": no annotation.
# Every template of a chart is listed, so a new one needs a decision here (tests/charts/test_sync_waves.py).
SYNC_WAVES: dict[str, dict[str, str]] = {
    "face-edge": {
        **dict.fromkeys(
            [
                "serviceaccount.yaml",
                "broker-configmap.yaml",
                "broker-secret.yaml",
                "broker-pvc.yaml",
                "broker-service.yaml",
                "broker-deployment.yaml",
                "broker-networkpolicy.yaml",
                "apps-networkpolicy.yaml",
                "egress-networkpolicy.yaml",
            ],
            "-1",
        ),
        **dict.fromkeys(
            [
                "logger-deployment.yaml",
                "logger-service.yaml",
                "forwarder-deployment.yaml",
                "forwarder-service.yaml",
                "forwarder-pvc.yaml",
                "uplink-secret.yaml",
                "uplink-ca-secret.yaml",
                "servicemonitor.yaml",
                "podmonitor.yaml",
                "prometheusrule.yaml",
            ],
            "0",
        ),
        "camera-deployment.yaml": "1",
        "camera-service.yaml": "1",
    },
    "face-cloud": {
        **dict.fromkeys(
            [
                "serviceaccount.yaml",
                "broker-configmap.yaml",
                "broker-users-secret.yaml",
                "broker-tls-secret.yaml",
                "broker-pvc.yaml",
                "broker-service.yaml",
                "broker-deployment.yaml",
                "broker-networkpolicy.yaml",
                "processor-networkpolicy.yaml",
                "gallery-networkpolicy.yaml",
                "egress-networkpolicy.yaml",
            ],
            "-1",
        ),
        **dict.fromkeys(
            [
                "broker-service-external.yaml",
                "processor-statefulset.yaml",
                "processor-service.yaml",
                "processor-faces-pvc.yaml",
                "processor-s3-secret.yaml",
                "processor-hpa.yaml",
                "processor-pdb.yaml",
                "gallery-deployment.yaml",
                "gallery-service.yaml",
                "gallery-secret.yaml",
                "gallery-ingress.yaml",
                "servicemonitor.yaml",
                "podmonitor.yaml",
                "prometheusrule.yaml",
                "grafana-dashboard-configmap.yaml",
            ],
            "0",
        ),
    },
}


# --- Kubernetes schema and typed objects --------------------------------------------------------------


OPERATOR_CRDS = REPO / "tests" / "schemas" / "prometheus-operator"  # ServiceMonitor, PodMonitor, PrometheusRule


def is_operator_object(doc: Mapping[str, Any]) -> bool:
    """A Prometheus Operator custom resource (no typed client model: checked against its CRD)."""
    return str(doc.get("apiVersion", "")).startswith("monitoring.coreos.com/")


def validate_strict(doc: Mapping[str, Any]) -> str | None:
    """None when `doc` validates strictly against the Kubernetes K8S_VERSION schema (a Prometheus
    Operator object: against the Operator's CRDs), else the error."""
    import kubernetes_validate

    if is_operator_object(doc):
        problems = crds.errors(OPERATOR_CRDS, strip_source(doc))
        return f"{doc['kind']}/{doc['metadata'].get('name')}: {'; '.join(problems)}" if problems else None

    try:
        kubernetes_validate.validate(strip_source(doc), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return f"{doc['kind']}/{doc['metadata'].get('name')} at {path}: {exc.message}"
    return None


_TYPED = {
    ("v1", "Pod"): "V1Pod",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("batch/v1", "Job"): "V1Job",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("networking.k8s.io/v1", "Ingress"): "V1Ingress",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
}


def typed(doc: Mapping[str, Any]) -> Any:
    """The object as a `kubernetes` client model (V1Deployment, ...)."""
    from kubernetes.client import ApiClient

    model = _TYPED.get((doc["apiVersion"], doc["kind"]))
    if model is None:
        raise KeyError(f"no typed model for {doc['apiVersion']} {doc['kind']}")
    return ApiClient().deserialize(json.dumps(strip_source(doc)), model, "application/json")


# --- README values table ------------------------------------------------------------------------------

PARAM = re.compile(r"^\s*## @param (\S+) (.*)$")
SECTION = re.compile(r"^\s*## @section (.*)$")
TABLE_BEGIN = "<!-- values-table:begin (generated: python -m facepipe_dev.helm readme charts/<chart>) -->"
TABLE_END = "<!-- values-table:end -->"


def values_params(chart: str | Path) -> list[tuple[str, str, str]]:
    """(section, key, description) of every `## @param` in values.yaml, in order."""
    section = ""
    out = []
    for line in (chart_dir(chart) / "values.yaml").read_text().splitlines():
        if m := SECTION.match(line):
            section = m.group(1).strip()
        elif m := PARAM.match(line):
            out.append((section, m.group(1), m.group(2).strip()))
    return out


def lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def leaf_keys(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of values.yaml down to leaves (a non-empty mapping is descended into)."""
    out = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += leaf_keys(value, dotted + ".")
        else:
            out.append(dotted)
    return out


def _default_cell(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": ")) if not isinstance(value, str) else json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`"


def values_table(chart: str | Path) -> str:
    values = yaml.safe_load((chart_dir(chart) / "values.yaml").read_text())
    lines: list[str] = []
    current = None
    limits = {value: allowed_values(entry) for value, entry in chart_entries(chart_dir(chart).name).items()}
    for section, key, description in values_params(chart):
        if section != current:
            lines += ["", f"### {section}", "", "| Key | Default | Description |", "| --- | --- | --- |"]
            current = section
        if limits.get(key):
            description = f"{description}. Allowed: {limits[key]}"
        cell = description.replace("|", "\\|")
        lines.append(f"| `{key}` | {_default_cell(lookup(values, key))} | {cell} |")
    return "\n".join(lines).strip() + "\n"


def render_readme(chart: str | Path) -> str:
    readme = (chart_dir(chart) / "README.md").read_text()
    begin, end = readme.index(TABLE_BEGIN), readme.index(TABLE_END)
    return readme[: begin + len(TABLE_BEGIN)] + "\n\n" + values_table(chart) + "\n" + readme[end:]


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "readme":
        path = chart_dir(argv[1]) if Path(argv[1]).is_absolute() else REPO / argv[1]
        (path / "README.md").write_text(render_readme(path))
        print(f"updated {path / 'README.md'}")
        return 0
    print("usage: python -m facepipe_dev.helm readme charts/<chart>", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
