"""Print the configuration reference table of every component (the README embeds its output).

    .venv/bin/python scripts/config_reference.py
"""

from facepipe import config
from facepipe.config import _leaves

COMMANDS = {
    "camera": config.CameraSettings,
    "logger": config.LoggerSettings,
    "forwarder": config.ForwarderSettings,
    "processor": config.ProcessorSettings,
    "run": config.RunSettings,
    "probe": config.ProbeSettings,
    "gallery": config.GallerySettings,
}


def table() -> str:
    rows: dict[str, tuple[object, list[str]]] = {}
    for command, cls in COMMANDS.items():
        for leaf in _leaves(cls):
            rows.setdefault(leaf.env[0], (leaf, []))[1].append(command)
    lines = ["| variable | flag | default | used by | meaning |", "|---|---|---|---|---|"]
    for name, (leaf, used) in rows.items():
        if leaf.secret:
            default = "(secret)"
        elif name == "FACEPIPE_DEVICE_ID":
            default = "host name"
        else:
            default = f"`{leaf.default}`" if leaf.default not in ("", None) else "empty"
        names = " / ".join(f"`{e}`" for e in leaf.env)
        choices = " (" + ", ".join(leaf.choices) + ")" if leaf.choices else ""
        lines.append(f"| {names} | `{leaf.flag}` | {default} | {', '.join(used)} | {leaf.help}{choices} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
