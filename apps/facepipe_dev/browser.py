"""Debian's Chromium driven by Playwright for Python, never a browser download.

Playwright's Python package brings its driver (Node.js inside the wheel) but no browser; the tests
point it at the system Chromium (`apt-get install chromium`, /usr/bin/chromium or FACEPIPE_CHROMIUM).
The flags keep Chromium off the network: without the background-networking ones it opens
connections of its own (updates, safe browsing, sync), which a closed network refuses.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from facepipe_dev.paths import REPO

INSTALL_HINT = "apt-get install chromium (Debian's browser) and pip install playwright (the package's test extra)"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]  # fmt: skip
# Where each test's screenshots go: FACEPIPE_TEST_OUTPUT, else test-output/ at the repository's root.
OUTPUT = Path(os.environ.get("FACEPIPE_TEST_OUTPUT") or REPO / "test-output")


def chromium_path() -> str | None:
    configured = os.environ.get("FACEPIPE_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("chromium") or (shutil.which("chromium-browser"))


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return f"playwright is not importable: {INSTALL_HINT}"
    if chromium_path() is None:
        return f"chromium not found: {INSTALL_HINT}"
    return None
