"""What Argo CD would do with argocd/, computed offline.

- CRD schemas: the OpenAPI v3 schemas of the Argo CD CRDs in ../shared/schemas/argocd/, turned into
  strict JSON schemas (unknown fields are errors, as with `kubectl apply --validate=strict`).
- Go templates: the subset the manifests use (`{{.a.b}}` field chains, `{{-`/`-}}` trimming), with
  Go's `missingkey=error`; anything else raises `UnsupportedTemplate`, so a template that outgrows
  this emulation fails the tests instead of being emulated wrongly.
- The ApplicationSet git files generator and the template rendering of the ApplicationSet
  controller (every string and map key of the template is a Go template; a resources finalizer is
  added unless the template has finalizers or preserveResourcesOnDeletion is set).
- The Helm inputs of a generated Application: chart directory, value files (`$values/...`
  references resolved against this checkout), release name and namespace.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from facepipe_dev import crds

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "argocd"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CRD_DIR = SHARED / "schemas" / "argocd"
CRD_FILES = {
    "Application": "application-crd.yaml",
    "ApplicationSet": "applicationset-crd.yaml",
    "AppProject": "appproject-crd.yaml",
}
API_VERSION = "argoproj.io/v1alpha1"
FINALIZER = "resources-finalizer.argocd.argoproj.io"
IN_CLUSTER = "https://kubernetes.default.svc"

# Files of argocd/ that are not Kubernetes manifests: Helm values read through `$values`.
VALUES_DIRS = ("devices", "values")


def _load_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as fh:
        return yaml.load(fh, Loader=loader)


def _load_all(path: Path) -> list[Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as fh:
        return [d for d in yaml.load_all(fh, Loader=loader) if d is not None]


# --- manifests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    path: Path
    index: int
    doc: dict[str, Any]

    @property
    def id(self) -> str:
        rel = self.path.relative_to(REPO)
        return f"{rel}#{self.index}" if self.index else str(rel)

    @property
    def kind(self) -> str:
        return self.doc.get("kind", "?")

    @property
    def name(self) -> str:
        return self.doc.get("metadata", {}).get("name", "?")


def yaml_files(root: Path = ARGOCD) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def is_values_file(path: Path, root: Path = ARGOCD) -> bool:
    return path.relative_to(root).parts[0] in VALUES_DIRS


def manifests(root: Path = ARGOCD) -> list[Manifest]:
    """Every YAML document of argocd/ outside the values folders (devices/, values/)."""
    out = []
    for path in yaml_files(root):
        if is_values_file(path, root):
            continue
        for i, doc in enumerate(_load_all(path)):
            out.append(Manifest(path, i, doc))
    return out


def by_kind(items: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [m for m in items if m.kind == kind]


# --- CRD schemas as strict JSON schemas -----------------------------------------------------------


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The strict JSON schema of an Argo CD kind (the CRD's served storage version)."""
    path = CRD_DIR / CRD_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(f"Argo CD CRD not found: {path} (expected ../shared/schemas/argocd/ next to the repository)")
    return crds.object_schema(_load_yaml(path), "v1alpha1")


@functools.cache
def _validator(kind: str) -> Any:
    return crds.validator(crd_schema(kind))


def schema_errors(doc: Mapping[str, Any]) -> list[str]:
    """Every schema error of an Argo CD object, as `<json path>: <message>`; [] when it is valid."""
    kind = doc.get("kind")
    if kind not in CRD_FILES:
        return [f"kind: {kind!r} is not an Argo CD kind ({', '.join(CRD_FILES)})"]
    errors = sorted(_validator(kind).iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]


# --- Go text/template, the subset used here -------------------------------------------------------


class TemplateError(ValueError):
    """A template that Go (text/template) would refuse to execute, worded like Argo CD reports it."""


class MissingKeyError(TemplateError):
    def __init__(self, template: str, action: str, key: str) -> None:
        super().__init__(
            f'failed to execute go template {template}: template: :1: executing "" at <{action}>: map has no entry for key "{key}"'
        )
        self.key = key


class UnsupportedTemplate(TemplateError):
    """A construct this emulation does not implement (functions, pipelines, if/range, ...)."""


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_FIELD_CHAIN = re.compile(r"^(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _go_format(value: Any) -> str:
    """A value as text/template prints it (fmt's %v). YAML numbers reach the template as float64,
    which %v prints with the shortest digits, in exponent form from 1e+06 on (1000000 -> 1e+06)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        f = float(value)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "+Inf" if f > 0 else "-Inf"
        if f == 0:
            return "0"
        d = Decimal(repr(f)).normalize()
        sign, digits, e = d.as_tuple()
        exp = len(digits) + int(e) - 1
        neg = "-" if sign else ""
        if exp < -4 or exp >= 6:  # strconv 'g' with the shortest precision uses 6 for this decision
            mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
            return f"{neg}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
        return neg + format(abs(d), "f")
    raise UnsupportedTemplate(f"printing a {type(value).__name__} ({value!r}) is not emulated")


def render(template: str, params: Mapping[str, Any], options: Sequence[str] = ()) -> str:
    """Execute a Go template made of text and `{{.a.b}}` actions against `params`."""
    missingkey_error = "missingkey=error" in options
    unknown = [o for o in options if o not in ("missingkey=error", "missingkey=default", "missingkey=zero", "missingkey=invalid")]
    if unknown:
        raise UnsupportedTemplate(f"goTemplateOptions {unknown} are not emulated")
    if "missingkey=zero" in options:
        raise UnsupportedTemplate("missingkey=zero is not emulated")
    out: list[str] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(text)
        action = m.group(2).strip()
        if action.startswith("/*"):
            value = ""
        elif not _FIELD_CHAIN.match(action):
            raise UnsupportedTemplate(f"template action {{{{{m.group(2)}}}}} in {template!r}: only .field chains are emulated")
        else:
            value = _lookup(template, action, params, missingkey_error)
        out.append(value)
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
    if "{{" in template[pos:]:
        raise TemplateError(f"failed to parse template {template}: unclosed action")
    out.append(template[pos:])
    return "".join(out)


def _lookup(template: str, action: str, params: Mapping[str, Any], missingkey_error: bool) -> str:
    node: Any = params
    for key in action.lstrip(".").split("."):
        if isinstance(node, Mapping):
            if key not in node:
                if missingkey_error:
                    raise MissingKeyError(template, action, key)
                return "<no value>"
            node = node[key]
        elif node is None:
            raise TemplateError(f"failed to execute go template {template}: at <{action}>: nil pointer evaluating interface {{}}.{key}")
        else:
            raise TemplateError(
                f"failed to execute go template {template}: at <{action}>: can't evaluate field {key} in type {type(node).__name__}"
            )
    return _go_format(node)


def render_deep(node: Any, params: Mapping[str, Any], options: Sequence[str]) -> Any:
    """The ApplicationSet controller's deeplyReplace: every string value and map key is a template."""
    if isinstance(node, str):
        return render(node, params, options)
    if isinstance(node, Mapping):
        return {
            render(k, params, options) if isinstance(k, str) else k: render_deep(v, params, options)
            for k, v in node.items()
            if v is not None
        }
    if isinstance(node, list):
        return [render_deep(v, params, options) for v in node]
    return node


# --- the git files generator and the template -----------------------------------------------------


def _glob(root: Path, pattern: str) -> list[Path]:
    """Files under root matching a git files generator path; `*` stays within one path segment
    (doublestar semantics; the manifests only use patterns where both of Argo CD's glob modes agree)."""
    parts = pattern.split("/")
    return sorted(p for p in root.glob(pattern) if p.is_file() and len(p.relative_to(root).parts) == len(parts))


def git_files(generator: Mapping[str, Any], root: Path = REPO) -> list[Path]:
    """The files a git files generator reads: matching an include entry and no exclude entry."""
    entries = generator["git"].get("files") or []
    include = [e["path"] for e in entries if not e.get("exclude")]
    exclude = [e["path"] for e in entries if e.get("exclude")]
    found = {p for pattern in include for p in _glob(root, pattern)}
    return sorted(p for p in found if not any(fnmatch.fnmatchcase(p.relative_to(root).as_posix(), x) for x in exclude))


def file_params(
    path: Path, root: Path = REPO, values: Mapping[str, str] | None = None, options: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Parameter sets of one file (goTemplate mode): its keys, `path` and the generator's `values`."""
    content = _load_yaml(path)
    objects = content if isinstance(content, list) else [content if content is not None else {}]
    rel = path.relative_to(root).as_posix()
    directory = rel.rsplit("/", 1)[0] if "/" in rel else "."
    out = []
    for obj in objects:
        if not isinstance(obj, dict):
            raise TemplateError(f"{rel}: unable to parse file: expected a mapping, got {type(obj).__name__}")
        params: dict[str, Any] = dict(obj)
        params["path"] = {
            "path": directory,
            "basename": directory.rsplit("/", 1)[-1],
            "filename": rel.rsplit("/", 1)[-1],
            "basenameNormalized": sanitize_name(directory.rsplit("/", 1)[-1]),
            "filenameNormalized": sanitize_name(rel.rsplit("/", 1)[-1]),
            "segments": directory.split("/"),
        }
        if values:
            params["values"] = {k: render(v, params, options) for k, v in values.items()}
        out.append(params)
    return out


def sanitize_name(name: str) -> str:
    """Argo CD's SanitizeName: lower case, each invalid character becomes '-', at most 253, then
    '-' and '.' trimmed from both ends."""
    name = re.sub(r"[^-a-z0-9.]", "-", name.lower())[:253]
    return name.strip("-.")


@dataclass
class Generated:
    """One Application the ApplicationSet would create, and the file it came from."""

    source: Path
    params: dict[str, Any]
    app: dict[str, Any]

    @property
    def name(self) -> str:
        return self.app["metadata"]["name"]


def generate(appset: Mapping[str, Any], root: Path = REPO) -> list[Generated]:
    """The Applications an ApplicationSet with git files generators would create from `root`."""
    spec = appset["spec"]
    if not spec.get("goTemplate"):
        raise UnsupportedTemplate("only goTemplate: true ApplicationSets are emulated")
    options = tuple(spec.get("goTemplateOptions") or ())
    preserve = bool((spec.get("syncPolicy") or {}).get("preserveResourcesOnDeletion"))
    if spec.get("templatePatch"):
        raise UnsupportedTemplate("templatePatch is not emulated")
    out: list[Generated] = []
    for generator in spec["generators"]:
        if set(generator) - {"git", "selector"} or "git" not in generator or generator.get("selector"):
            raise UnsupportedTemplate(f"only git files generators without selector are emulated: {sorted(generator)}")
        git = generator["git"]
        if git.get("directories") or git.get("template"):
            raise UnsupportedTemplate("git directories generators and per-generator templates are not emulated")
        for path in git_files(generator, root):
            for params in file_params(path, root, git.get("values"), options):
                out.append(Generated(path, params, render_application(spec["template"], appset, params, options, preserve)))
    return out


def render_application(
    template: Mapping[str, Any], appset: Mapping[str, Any], params: Mapping[str, Any], options: Sequence[str], preserve: bool
) -> dict[str, Any]:
    rendered = render_deep(copy.deepcopy(dict(template)), params, options)
    meta = dict(rendered.get("metadata") or {})
    meta.setdefault("namespace", appset["metadata"].get("namespace"))
    if not meta.get("finalizers") and not preserve:
        meta["finalizers"] = [FINALIZER]
    return {"apiVersion": API_VERSION, "kind": "Application", "metadata": meta, "spec": rendered["spec"]}


# --- RollingSync ----------------------------------------------------------------------------------


def expression_matches(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    op, key, values = expr["operator"], expr["key"], expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown matchExpressions operator {op!r}")


def rolling_steps(appset: Mapping[str, Any], app: Mapping[str, Any]) -> list[int]:
    """Indexes of the RollingSync steps that select an Application (all expressions must match)."""
    labels = app["metadata"].get("labels") or {}
    steps = appset["spec"]["strategy"]["rollingSync"]["steps"]
    return [i for i, step in enumerate(steps) if all(expression_matches(labels, e) for e in step.get("matchExpressions") or [])]


# --- projects -------------------------------------------------------------------------------------


def _glob_match(pattern: str, value: str) -> bool:
    """Argo CD's globMatch with negation: `!x` matches what `x` does not."""
    if pattern.startswith("!"):
        return not fnmatch.fnmatchcase(value, pattern[1:])
    return fnmatch.fnmatchcase(value, pattern)


def destination_permitted(project: Mapping[str, Any], destination: Mapping[str, Any]) -> bool:
    """AppProject.isDestinationMatched: some entry matches (server or name, and namespace) and no
    deny entry (a `!` pattern) fails."""
    any_match, denied = False, False
    for item in project["spec"].get("destinations") or []:
        name_ok = bool(destination.get("name")) and _glob_match(item.get("name", ""), destination["name"])
        server_ok = bool(destination.get("server")) and _glob_match(item.get("server", ""), destination["server"])
        ns_ok = _glob_match(item.get("namespace", ""), destination.get("namespace", ""))
        if (name_ok or server_ok) and ns_ok:
            any_match = True
        elif (
            (not name_ok and item.get("name", "").startswith("!"))
            or (not server_ok and item.get("server", "").startswith("!"))
            or (not ns_ok and item.get("namespace", "").startswith("!"))
        ):
            denied = True
    return any_match and not denied


def source_permitted(project: Mapping[str, Any], repo_url: str) -> bool:
    repos = project["spec"].get("sourceRepos") or []
    return any(_glob_match(r, repo_url) for r in repos) and not any(r.startswith("!") and not _glob_match(r, repo_url) for r in repos)


def resource_permitted(project: Mapping[str, Any], group: str, kind: str, namespaced: bool) -> bool:
    spec = project["spec"]
    allow = spec.get("namespaceResourceWhitelist" if namespaced else "clusterResourceWhitelist")
    deny = spec.get("namespaceResourceBlacklist" if namespaced else "clusterResourceBlacklist") or []

    def hit(items: Sequence[Mapping[str, str]]) -> bool:
        return any(_glob_match(i["group"], group) and _glob_match(i["kind"], kind) for i in items)

    if hit(deny):
        return False
    if allow is None:  # no whitelist: namespaced resources are allowed, cluster-scoped ones are not
        return namespaced
    return hit(allow)


# --- Helm inputs of an Application ----------------------------------------------------------------


@dataclass
class HelmInputs:
    chart: Path
    value_files: list[Path]
    release: str
    namespace: str
    values_object: dict[str, Any] | None = None
    repo_urls: set[str] = field(default_factory=set)
    revision: str = "HEAD"


def helm_inputs(app: Mapping[str, Any], root: Path = REPO) -> HelmInputs:
    """What Argo CD passes to `helm template` for a (multi-source) Helm Application, resolved
    against this checkout. Raises if a value file is missing or a `$ref` is unknown."""
    spec = app["spec"]
    sources = spec.get("sources") or [spec["source"]]
    refs = {s["ref"]: s for s in sources if s.get("ref")}
    charts = [s for s in sources if s.get("path") and not s.get("ref")]
    if len(charts) != 1:
        raise ValueError(f"{app['metadata']['name']}: expected one chart source, found {len(charts)}")
    src = charts[0]
    helm = src.get("helm") or {}
    chart = root / src["path"]
    files = []
    for item in helm.get("valueFiles") or []:
        if item.startswith("$"):
            ref, _, rel = item[1:].partition("/")
            if ref not in refs:
                raise ValueError(f"{app['metadata']['name']}: value file {item} refers to unknown source ref ${ref}")
            path = root / rel
        else:
            path = chart / item
        if not path.is_file() and not helm.get("ignoreMissingValueFiles"):
            raise FileNotFoundError(f"{app['metadata']['name']}: value file {item} does not exist ({path})")
        files.append(path)
    if helm.get("values") or helm.get("parameters") or helm.get("fileParameters"):
        raise UnsupportedTemplate("helm.values, parameters and fileParameters are not emulated")
    return HelmInputs(
        chart=chart,
        value_files=files,
        release=helm.get("releaseName") or app["metadata"]["name"],
        namespace=helm.get("namespace") or spec["destination"].get("namespace", ""),
        values_object=helm.get("valuesObject"),
        repo_urls={s["repoURL"] for s in sources},
        revision=src.get("targetRevision", "HEAD"),
    )


def iter_repo_urls(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(json path, URL) of every repoURL and sourceRepos entry in a manifest."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "repoURL" and isinstance(v, str):
                yield f"{where}.{k}", v
            elif k == "sourceRepos" and isinstance(v, list):
                for i, url in enumerate(v):
                    yield f"{where}.{k}[{i}]", url
            else:
                yield from iter_repo_urls(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_repo_urls(v, f"{where}[{i}]")
