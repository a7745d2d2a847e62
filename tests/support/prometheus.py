"""Prometheus and promtool for the monitoring tests.

Built from the Go module proxy by `bash .ci/install-prometheus.sh` into
`${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/prometheus-3.16.0/bin`
(or FACEPIPE_PROMETHEUS_BIN: a directory holding both binaries).
"""

from __future__ import annotations

import os
from pathlib import Path

PROMETHEUS_VERSION = "3.16.0"
INSTALL_HINT = "run bash .ci/install-prometheus.sh (or set FACEPIPE_PROMETHEUS_BIN to a directory with prometheus and promtool)"
REPO = Path(__file__).resolve().parents[2]
RULE_FILES = {
    "face-edge": REPO / "charts" / "face-edge" / "files" / "prometheus-rules.yaml",
    "face-cloud": REPO / "charts" / "face-cloud" / "files" / "prometheus-rules.yaml",
}


def bin_dir() -> Path:
    configured = os.environ.get("FACEPIPE_PROMETHEUS_BIN")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("FACEPIPE_TOOLS_CACHE", "/var/cache/facepipe-tools"))
    return cache / f"prometheus-{PROMETHEUS_VERSION}" / "bin"


def binaries() -> tuple[Path | None, str]:
    """(bin dir, "") when prometheus and promtool are there, else (None, why not) for pytest.skip."""
    directory = bin_dir()
    missing = [name for name in ("prometheus", "promtool") if not os.access(directory / name, os.X_OK)]
    if missing:
        return None, f"{', '.join(missing)} not in {directory}: {INSTALL_HINT}"
    return directory, ""
