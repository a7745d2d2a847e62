"""Custom resources checked offline against their CustomResourceDefinitions, strictly: the CRD's
OpenAPI v3 schema as a JSON schema in which unknown fields are errors (as the API server's strict
field validation and `kubectl apply --validate=strict` treat them)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# ObjectMeta as far as rendered manifests may use it; CRDs leave metadata to the API server, which
# rejects unknown metadata fields under strict field validation too.
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}


def strict_schema(node: Any) -> Any:
    """An OpenAPI v3 (structural CRD) schema as a JSON schema in which unknown fields are errors.

    An object schema gets `additionalProperties: false` unless it is a map (has its own
    additionalProperties) or keeps unknown fields (x-kubernetes-preserve-unknown-fields); an
    int-or-string without anyOf gets one; `nullable` allows null; Go regexp flags move to the front."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items() if k != "nullable"}
    if isinstance(node.get("pattern"), str) and node["pattern"].startswith("^(?i)"):
        out["pattern"] = "(?i)^" + node["pattern"][len("^(?i)") :]  # Go allows flags after ^, Python only at the start
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out.pop("type", None)
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def object_schema(crd: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The strict JSON schema of the CRD's kind in `version` (a served one), apiVersion and kind pinned."""
    versions = [v for v in crd["spec"]["versions"] if v.get("name") == version and v.get("served", True)]
    if not versions:
        raise LookupError(f"{crd['metadata']['name']}: no served version {version}")
    schema = strict_schema(versions[0]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema


def validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator of `schema` (checked to be a valid schema itself)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


@functools.cache
def _validators(directory: Path) -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> a validator, for every CRD (*.yaml) of `directory`."""
    found = {}
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            found[key] = validator(object_schema(crd, version["name"]))
    return found


def errors(directory: Path, doc: Mapping[str, Any]) -> list[str]:
    """Every schema error of a custom object, as `<json path>: <message>`, against the CRDs of `directory`."""
    validator = _validators(directory).get((doc.get("apiVersion"), doc.get("kind")))
    if validator is None:
        return [f"{doc.get('apiVersion')} {doc.get('kind')} is defined by none of the CRDs in {directory}"]
    return [f"{e.json_path}: {e.message}" for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))]
