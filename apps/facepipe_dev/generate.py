"""What the repository generates, each from its one source, and the check that it is current.

- README.md's configuration reference: every setting of apps/facepipe/config.py, its default and limits;
- each chart's values.schema.json, the app-settings part: a value a template hands to a setting
  (`- name: FACEPIPE_X` then `value: {{ .Values.a.b | quote }}`, or through `$p := .Values.a`) gets the
  setting's type and limits (`config.Limits`, `choices`) in its schema entry; the rest of the schema
  (Kubernetes objects, chart-only values, settings checked by a function) is written by hand;
- each chart's README values table, from the `## @param` lines of values.yaml (facepipe_dev.helm);
- charts/face-edge/files/spool.json: the forwarder's spool segment size (facepipe.spool.SEGMENT_BYTES), from which
  the chart derives FACEPIPE_SPOOL_MAX_BYTES and checks forwarder.spool.size.

    python -m facepipe_dev.generate          # rewrite what is stale
    python -m facepipe_dev.generate --check  # name what is stale and exit 1 (tests/unit/test_generated.py)
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facepipe import config
from facepipe.config import Limits, _Leaf, _leaves
from facepipe.spool import SEGMENT_BYTES
from facepipe_dev import helm
from facepipe_dev.paths import REPO

COMMAND = "python -m facepipe_dev.generate"
COMMANDS = {
    "camera": config.CameraSettings,
    "logger": config.LoggerSettings,
    "forwarder": config.ForwarderSettings,
    "processor": config.ProcessorSettings,
    "run": config.RunSettings,
    "probe": config.ProbeSettings,
    "gallery": config.GallerySettings,
}
CHARTS = ("face-edge", "face-cloud")
README = REPO / "README.md"
TABLE_START, TABLE_END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

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


def settings_by_env() -> dict[str, _Leaf]:
    """Every setting of every command, by its (first) environment variable."""
    out: dict[str, _Leaf] = {}
    for cls in COMMANDS.values():
        for leaf in _leaves(cls):
            out.setdefault(leaf.env[0], leaf)
    return out


# --- README configuration reference ----------------------------------------------------------------


def allowed(leaf: _Leaf) -> str:
    """What a setting accepts, in words (empty: anything of its type, or what its check function says)."""
    if leaf.choices:
        return ", ".join(leaf.choices)
    if isinstance(leaf.check, Limits):
        return leaf.check.describe().removeprefix("must ").removeprefix("be ")
    return ""


def config_table() -> str:
    rows: dict[str, tuple[_Leaf, list[str]]] = {}
    for command, cls in COMMANDS.items():
        for leaf in _leaves(cls):
            rows.setdefault(leaf.env[0], (leaf, []))[1].append(command)
    lines = ["| variable | flag | default | allowed | used by | meaning |", "|---|---|---|---|---|---|"]
    for name, (leaf, used) in rows.items():
        if leaf.secret:
            default = "(secret)"
        elif name == "FACEPIPE_DEVICE_ID":
            default = "host name"
        else:
            default = f"`{leaf.default}`" if leaf.default not in ("", None) else "empty"
        names = " / ".join(f"`{e}`" for e in leaf.env)
        limits = allowed(leaf).replace("|", "\\|")
        lines.append(f"| {names} | `{leaf.flag}` | {default} | {limits} | {', '.join(used)} | {leaf.help} |")
    return "\n".join(lines)


def render_readme() -> str:
    text = README.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END)
    return text[: start + len(TABLE_START)] + "\n" + config_table() + "\n" + text[end:]


# --- values.schema.json --------------------------------------------------------------------------


def bindings(chart: str) -> dict[str, set[tuple[str, bool]]]:
    """Chart value (dotted) -> the (environment variable, passed as int64) pairs its templates set from it."""
    out: dict[str, set[tuple[str, bool]]] = {}
    templates = helm.chart_dir(chart) / "templates"
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


def schema_entry(leaf: _Leaf, integer: bool) -> dict[str, Any] | None:
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


def _schema_node(schema: dict[str, Any], dotted: str, chart: str) -> dict[str, Any]:
    """The entry of a value, made when only the value itself is new (its parent object has an entry)."""
    *parents, name = dotted.split(".")
    node = schema
    for part in parents:
        try:
            node = node["properties"][part]
        except KeyError:
            raise KeyError(
                f"charts/{chart}/values.schema.json has no entry for {dotted}'s parent, which a template passes to a setting"
            ) from None
    return node.setdefault("properties", {}).setdefault(name, {})


def render_schema(chart: str) -> str:
    path = helm.chart_dir(chart) / "values.schema.json"
    schema = json.loads(path.read_text())
    settings = settings_by_env()
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
        entry = {**entries[0][1], **NARROWER.get((chart, value), {})}
        node = _schema_node(schema, value, chart)
        kept = {key: item for key, item in node.items() if key not in OWNED}
        node.clear()
        node.update(entry)
        node.update(kept)
    comment = {"$comment": f"The entries of values passed to app settings are generated from apps/facepipe/config.py: {COMMAND}"}
    return json.dumps({**{k: schema[k] for k in ("$schema",) if k in schema}, **comment, **schema}, indent=2) + "\n"


def render_spool_facts() -> str:
    facts = {"comment": f"facepipe.spool.SEGMENT_BYTES, for the chart's spool limit: generated by {COMMAND}", "segmentBytes": SEGMENT_BYTES}
    return json.dumps(facts, indent=2) + "\n"


# --- all of it -----------------------------------------------------------------------------------


def generated() -> dict[Path, str]:
    """Each generated file and the text it should have."""
    out = {README: render_readme(), helm.chart_dir("face-edge") / "files" / "spool.json": render_spool_facts()}
    for chart in CHARTS:
        out[helm.chart_dir(chart) / "values.schema.json"] = render_schema(chart)
        out[helm.chart_dir(chart) / "README.md"] = helm.render_readme(chart)
    return out


def stale() -> list[Path]:
    return [path for path, text in generated().items() if not path.is_file() or path.read_text() != text]


def main(argv: Sequence[str]) -> int:
    if list(argv) not in ([], ["--check"]):
        print(f"usage: {COMMAND} [--check]", file=sys.stderr)
        return 2
    paths = stale()
    if argv:
        for path in paths:
            print(f"stale: {path.relative_to(REPO)} (run {COMMAND})")
        return 1 if paths else 0
    for path, text in generated().items():
        if path in paths:
            path.write_text(text)
            print(f"updated {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
