"""Write the Prometheus Operator CRDs the chart tests validate against, without their descriptions.

    .venv/bin/python scripts/trim_crds.py CRD.yaml... OUT_DIR

The inputs are example/prometheus-operator-crd/monitoring.coreos.com_<plural>.yaml of a
prometheus-operator release (tests/schemas/prometheus-operator/README.md names the one used).
Only `description` texts are removed (about 80% of the bytes); every type, enum, pattern and
required list stays, so the result is still a CRD a Kubernetes API server accepts.
"""

import sys
from pathlib import Path
from typing import Any

import yaml


def strip_descriptions(node: Any, in_properties: bool = False) -> Any:
    """The schema without `description` keys (a property that is itself named `description` stays)."""
    if isinstance(node, list):
        return [strip_descriptions(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {
        k: strip_descriptions(v, in_properties=k == "properties" and not in_properties)
        for k, v in node.items()
        if in_properties or not (k == "description" and isinstance(v, str))
    }


def main(paths: list[str], out_dir: str) -> None:
    for path in map(Path, paths):
        crd = yaml.safe_load(path.read_text())
        out = Path(out_dir) / f"{crd['spec']['names']['plural']}.yaml"
        header = f"# {path.name} of prometheus-operator, descriptions removed by scripts/trim_crds.py\n"
        out.write_text(header + yaml.safe_dump(strip_descriptions(crd), sort_keys=False, width=200))
        print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:-1], sys.argv[-1])
