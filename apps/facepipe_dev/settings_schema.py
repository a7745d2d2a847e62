"""Which chart values feed which app settings, and the schema entry each value gets from its setting's limits.

A template hands a value to a setting as `- name: FACEPIPE_X` then `value: {{ .Values.a.b | quote }}` (or through
`$p := .Values.a`; `| int64 | quote` makes it an integer); the setting's type and limits (`config.Limits`,
`choices`) become that value's values.schema.json entry (facepipe_dev.generate) and its "Allowed" note in the
chart README's values table (facepipe_dev.helm).
"""

from __future__ import annotations

import math
import re
from typing import Any

from facepipe import config
from facepipe.config import Limits, Setting, settings_of
from facepipe_dev.paths import REPO

COMMANDS = {
    "camera": config.CameraSettings,
    "logger": config.LoggerSettings,
    "forwarder": config.ForwarderSettings,
    "processor": config.ProcessorSettings,
    "run": config.RunSettings,
    "probe": config.ProbeSettings,
    "retention": config.RetentionSettings,
    "gallery": config.GallerySettings,
}
# Where a chart allows less than the app, and why; the generated entry is narrowed to this.
NARROWER: dict[tuple[str, str], dict[str, Any]] = {
    # The probes, the monitors and the helm test reach every component on its HTTP port: the charts cannot turn it off.
    ("face-edge", "httpPort"): {"minimum": 1},
    ("face-cloud", "httpPort"): {"minimum": 1},
    # Passed only with gallery.auth.proxy.enabled, which is how the chart turns the proxy port off.
    ("face-cloud", "gallery.auth.proxy.port"): {"minimum": 1},
}
# The keys of a schema entry that come from the setting; any other (a description) is kept as written.
OWNED = ("type", "enum", "pattern", "anyOf", "minimum", "exclusiveMinimum", "maximum")

ALIAS = re.compile(r"\{\{-?\s*\$(\w+)\s*:=\s*\.Values\.([\w.]+)\s*-?\}\}")
BINDING = re.compile(
    r"-\s*name:\s*(?P<env>[A-Z_][A-Z0-9_]*)\s*\n\s*value:\s*\{\{\s*(?P<root>\.Values|\$\w+)\.(?P<path>[\w.]+)\s*"
    r"(?P<int64>\|\s*int64\s*)?\|\s*quote\s*\}\}"
)


def settings_by_env() -> dict[str, Setting]:
    """Every setting of every command, by its (first) environment variable."""
    out: dict[str, Setting] = {}
    for cls in COMMANDS.values():
        for leaf in settings_of(cls):
            out.setdefault(leaf.env[0], leaf)
    return out


def bindings(chart: str) -> dict[str, set[tuple[str, bool]]]:
    """Chart value (dotted) -> the (environment variable, passed as int64) pairs its templates set from it."""
    out: dict[str, set[tuple[str, bool]]] = {}
    templates = REPO / "charts" / chart / "templates"
    for template in sorted([*templates.glob("*.yaml"), *templates.glob("*.tpl")]):
        text = template.read_text()
        aliases = {m.group(1): m.group(2) for m in ALIAS.finditer(text)}
        for m in BINDING.finditer(text):
            root = m.group("root")
            base = "" if root == ".Values" else aliases.get(root[1:])
            if base is None:
                continue  # a variable that is no values subtree
            value = f"{base}.{m.group('path')}" if base else m.group("path")
            out.setdefault(value, set()).add((m.group("env"), m.group("int64") is not None))
    return out


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def schema_entry(leaf: Setting, integer: bool) -> dict[str, Any] | None:
    """The schema keys a setting's type and limits give its chart value; None when its limits are no data."""
    kind = "integer" if integer or leaf.kind is int else {float: "number", bool: "boolean", str: "string"}[leaf.kind]
    if leaf.kind is bool:
        return {"type": kind}
    if leaf.choices:
        return {"type": kind, "enum": list(leaf.choices)}
    limits = leaf.check
    if not isinstance(limits, Limits):
        return None
    entry: dict[str, Any] = {"type": kind}
    if limits.pattern is not None:
        entry["pattern"] = f"^{limits.pattern}$"
        return entry
    low: dict[str, Any] = {}
    if limits.minimum is not None:
        if not limits.exclusive_minimum:
            low["minimum"] = _number(limits.minimum)
        elif kind == "integer":
            low["minimum"] = math.floor(limits.minimum) + 1
        else:
            low["exclusiveMinimum"] = _number(limits.minimum)
    if limits.off is not None:
        entry["anyOf"] = [{"enum": [_number(limits.off)]}, low]
    else:
        entry.update(low)
    if limits.maximum is not None:
        entry["maximum"] = _number(limits.maximum)
    return entry


def chart_entries(chart: str) -> dict[str, dict[str, Any]]:
    """Chart value (dotted) -> its schema entry, for every value a template hands to a setting whose limits are data."""
    settings = settings_by_env()
    out: dict[str, dict[str, Any]] = {}
    for value, uses in sorted(bindings(chart).items()):
        entries = []
        for env, integer in sorted(uses):
            leaf = settings.get(env)
            entry = schema_entry(leaf, integer) if leaf is not None else None
            if entry is not None:
                entries.append((env, entry))
        if not entries:
            continue
        if any(entry != entries[0][1] for _, entry in entries):
            raise ValueError(f"charts/{chart}: {value} feeds settings with different limits: {', '.join(env for env, _ in entries)}")
        out[value] = {**entries[0][1], **NARROWER.get((chart, value), {})}
    return out


def allowed_values(entry: dict[str, Any]) -> str:
    """A schema entry's limits in words ("" for a boolean)."""
    if "enum" in entry:
        return ", ".join(f"`{choice}`" for choice in entry["enum"])
    if "pattern" in entry:
        return f"`{entry['pattern']}`"
    parts = []
    if "minimum" in entry:
        parts.append(f"{entry['minimum']:g}" + (f" to {entry['maximum']:g}" if "maximum" in entry else " or more"))
    elif "exclusiveMinimum" in entry:
        parts.append(f"more than {entry['exclusiveMinimum']:g}" + (f", at most {entry['maximum']:g}" if "maximum" in entry else ""))
    for alternative in entry.get("anyOf", []):
        if "enum" in alternative:
            parts.append(" or ".join(f"{v:g}" for v in alternative["enum"]) + " (off)")
        elif "minimum" in alternative:
            parts.append(f"{alternative['minimum']:g}" + (f" to {entry['maximum']:g}" if "maximum" in entry else " or more"))
    return " or ".join(parts)
