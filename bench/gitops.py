"""7. GitOps: from a commit to every Application Synced and Healthy, for a fleet of 3 and of 10 devices.

The fleet is tests/argocd's (facepipe_dev.gitops): the real Argo CD v3.6.1 core install on the
cloud's API server, the git repository served by `git http-backend`, and one API server per device
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK with the device's fake node),
bootstrapped by argocd/README.md's commands. The device files are generated: N RTSP devices, the
first N/5 (at least one) in the canary ring, the rest stable; RollingSync as in argocd/apps.

Measured for each size: starting the clusters; the bootstrap (the README's commands, then until
every Application is Synced and Healthy); a commit to argocd/values/edge-common.yaml, which changes
every device and rolls out through the rings (canaries, then a quarter of the stable devices at a
time, each batch Healthy before the next); a commit to one device file (until that device, and
until every Application, is Synced and Healthy at it); and the RSS of the whole fleet.

Each commit's time is split, from Argo CD's own records (each Application's sync history), into
polling (the push until the first sync starts: no webhook, so the application controller only sees
the commit on its next refresh, every POLL_SECONDS here instead of the default 180 s), the sync
operations themselves (work: render with Helm, diff, apply), and the rest (pods becoming Ready on
KWOK's nodes, Argo CD's health assessment, RollingSync moving to its next step). A size that does
not start or settle on this machine is reported as such, with the reason, and larger sizes are not
tried.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench.report import Row
from bench.support import Context
from facepipe_dev import gitops
from facepipe_dev.argocd import ArgoTools, synced_and_healthy
from facepipe_dev.processes import wait_until
from facepipe_dev.simcluster import FakeNode, SimTools

NAME = "7 gitops"
SIZES = (3, 10)
QUICK_SIZES = (3,)
TIMEOUT = 1800.0
POLLING = (
    f"the rig shortens Argo CD's polling: timeout.reconciliation {gitops.POLL_SECONDS} s (default 180 s), "
    f"jitter 0, ApplicationSet requeue {gitops.POLL_SECONDS} s (default 180 s); no webhook"
)


def device_file(device_id: str) -> str:
    """A device of the fleet: an IP camera's stream (no video device, restricted pods)."""
    return (
        f"deviceId: {device_id}\n"
        "podSecurity:\n  level: restricted\n"
        f"cloud:\n  auth:\n    existingSecret: {device_id}-uplink\n"
        f"camera:\n  source: rtsp://{device_id}.lan:554/stream1\n"
    )


def fleet_files(root: Path, devices: list[str]) -> None:
    """Replace argocd/devices/ with one file per device, the first fifth (at least one) canaries."""
    folder = root / "argocd" / "devices"
    shutil.rmtree(folder)
    canaries = max(1, len(devices) // 5)
    for index, device_id in enumerate(devices):
        ring = folder / ("canary" if index < canaries else "stable")
        ring.mkdir(parents=True, exist_ok=True)
        (ring / f"{device_id}.yaml").write_text(device_file(device_id))


def fleet_rss() -> int:
    """Resident memory of every process this bench started (clusters, Argo CD, Redis, git)."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def stamp(text: str) -> float:
    """An Argo CD timestamp (RFC 3339, whole seconds) as a Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Commit:
    """One commit's way through Argo CD: seconds after the push (or the bootstrap's last command)."""

    total: float  # until every Application awaited was Synced at it and Healthy
    noticed: float  # the first Application was compared at it: until then, git polling
    first_start: float  # the first sync of it started: from `noticed`, the ApplicationSet's reaction
    syncing: float  # wall time during which at least one sync operation of it ran: work
    syncs: int

    def note(self, starter: str = f"the ApplicationSet controller (RollingSync, requeued every {gitops.POLL_SECONDS} s) started") -> str:
        rest = max(0.0, self.total - self.first_start - self.syncing)
        return (
            f"polling: {self.noticed:.0f} s until an Application was compared at the commit (refresh every "
            f"{gitops.POLL_SECONDS} s), {max(0.0, self.first_start - self.noticed):.0f} s more until {starter} the first sync; "
            f"work: {self.syncing:.0f} s in {self.syncs} sync operation(s) (render, diff, apply, pods Ready); "
            f"{rest:.0f} s between and after them (Health, RollingSync's next step)"
        )


class Watch:
    """Waits for a revision to settle, noting when each Application was first compared at it."""

    def __init__(self, fleet: gitops.Fleet, apps: Iterable[str]) -> None:
        self.fleet = fleet
        self.apps = set(apps)
        self.seen: dict[str, float] = {}

    def look(self, sha: str, settled: Callable[[dict[str, dict[str, Any]]], bool]) -> bool:
        current = self.fleet.applications()
        now = time.time()
        for name in self.apps & set(current):
            sync = (current[name].get("status") or {}).get("sync") or {}
            if name not in self.seen and sha in (sync.get("revisions") or [sync.get("revision")]):
                self.seen[name] = now
        return settled(current)

    def commit(self, since: float, sha: str, what: str, settled: Callable[[dict[str, dict[str, Any]]], bool]) -> Commit:
        wait_until(lambda: self.look(sha, settled), TIMEOUT, gitops.PROBE_INTERVAL, what, self.fleet.fleet_state)
        total = time.time() - since
        windows = sync_windows(self.fleet, sha, self.apps)
        if not windows:
            raise AssertionError(f"{what}: settled at {sha} without any sync of it in the history of {sorted(self.apps)}")
        noticed = min(self.seen.values(), default=since) - since
        return Commit(total, noticed, min(w[0] for w in windows) - since, covered(windows), len(windows))


def sync_windows(fleet: gitops.Fleet, sha: str, apps: Iterable[str]) -> list[tuple[float, float]]:
    """(started, finished) of each Application's first sync of `sha` (its history entry)."""
    windows = []
    for name in apps:
        app = fleet.argocd.get("applications", name) or {}
        entries = [h for h in (app.get("status") or {}).get("history") or [] if sha in (h.get("revisions") or [h.get("revision")])]
        if entries:
            first = min(entries, key=lambda h: h["id"])
            windows.append((stamp(first["deployStartedAt"]), stamp(first["deployedAt"])))
    return windows


def covered(windows: list[tuple[float, float]]) -> float:
    """Seconds in the union of the intervals."""
    total, end = 0.0, float("-inf")
    for start, finish in sorted(windows):
        if finish > end:
            total += finish - max(start, end)
            end = finish
    return total


def timed_commit(fleet: gitops.Fleet, message: str, change: Callable[[Path], None], what: str, apps: list[str], everything: bool) -> Commit:
    """Push a commit; wait until `apps` (with `everything`, every Application) are Synced at it and Healthy."""
    watch = Watch(fleet, apps)
    sha = fleet.commit(message, change)
    pushed = time.time()
    awaited = fleet.expected_applications() if everything else set(apps)
    return watch.commit(pushed, sha, what, lambda current: all(synced_and_healthy(current.get(name) or {}, sha) for name in awaited))


def replace_in(path: Path, old: str, new: str) -> Callable[[Path], None]:
    """A change for `Fleet.commit`: `old` replaced by `new` in one file of the checkout."""

    def change(root: Path) -> None:
        text = path.read_text()
        if old not in text:
            raise AssertionError(f"{path}: {old!r} not in it")
        path.write_text(text.replace(old, new))

    return change


def measure(ctx: Context, sim: SimTools, argo: ArgoTools, size: int) -> list[Row]:
    devices = [f"device-{i:02d}" for i in range(size)]
    canaries = max(1, size // 5)
    apps = [f"face-edge-{d}" for d in devices]
    label = f"{size} devices"
    t0 = time.monotonic()
    fleet = gitops.start_fleet(ctx.scratch(f"gitops-{size}"), sim, argo, {d: FakeNode(d) for d in devices})
    try:
        clusters_s = time.monotonic() - t0
        fleet.commit(f"a fleet of {size} devices", lambda root: fleet_files(root, devices))
        t0 = time.monotonic()
        gitops.bootstrap(fleet)
        commands_s = time.monotonic() - t0
        everything = fleet.expected_applications()
        initial = Watch(fleet, everything).commit(
            time.time(), fleet.head(), f"{label}: bootstrap", lambda current: set(current) == everything and fleet.settled(fleet.head())
        )
        bootstrap_s = time.monotonic() - t0
        checkout = fleet.checkout.path / "argocd"
        upgrade = timed_commit(
            fleet,
            "edge-common: log level debug",
            replace_in(checkout / "values" / "edge-common.yaml", "\nlogLevel: info\n", "\nlogLevel: debug\n"),
            f"{label}: upgrade through the rings",
            apps,
            everything=True,
        )
        last = devices[-1]
        one_file = checkout / "devices" / "stable" / f"{last}.yaml"
        one = timed_commit(
            fleet,
            f"{last}: realtime stream",
            replace_in(one_file, "/stream1\n", "/stream1\n  realtime: true\n"),
            f"{label}: one device file changed",
            [f"face-edge-{last}"],
            everything=False,
        )
        t1 = time.monotonic()
        fleet.wait_settled(f"{label}: every Application at the device file's commit", fleet.head(), TIMEOUT)
        one_all_s = one.total + time.monotonic() - t1
        rss = fleet_rss()
    finally:
        fleet.stop()
    stable = size - canaries
    batch = max(1, stable // 4)
    rings = f"{canaries} canary, then {stable} stable {batch} at a time (maxUpdate 25%)"
    return [
        Row(
            NAME,
            f"{label}: start {size + 1} clusters (etcd, API server, controller-manager, scheduler, KWOK each)",
            f"{clusters_s:.0f} s",
            note="work, in parallel (3 at a time)",
        ),
        Row(
            NAME,
            f"{label}: bootstrap (README commands, Argo CD started) -> every Application Synced and Healthy",
            f"{bootstrap_s:.0f} s",
            note=f"README commands, Argo CD start, cluster Secrets: {commands_s:.0f} s (work); then {initial.note('the automated sync policy started')}; {POLLING}",
        ),
        Row(
            NAME,
            f"{label}: edge-common.yaml commit -> every Application Synced and Healthy",
            f"{upgrade.total:.0f} s",
            note=f"{rings}; {upgrade.note()}",
        ),
        Row(NAME, f"{label}: one device file commit -> that device Synced and Healthy", f"{one.total:.0f} s", note=one.note()),
        Row(
            NAME,
            f"{label}: one device file commit -> every Application Synced and Healthy at it",
            f"{one_all_s:.0f} s",
            note=f"the other Applications only need a refresh (no sync): polling, every {gitops.POLL_SECONDS} s",
        ),
        Row(NAME, f"{label}: RSS of the fleet (every cluster, Argo CD, Redis, git)", f"{rss / 2**30:.1f} GiB"),
    ]


def run(ctx: Context) -> list[Row]:
    sim, sim_reason = SimTools.find()
    argo, argo_reason = ArgoTools.find()
    if sim is None or argo is None:
        return [Row(NAME, "fleet", "skipped", note="; ".join(r for r in (sim_reason, argo_reason) if r))]
    rows: list[Row] = []
    for size in QUICK_SIZES if ctx.quick else SIZES:
        load = os.getloadavg()[0]
        started = time.monotonic()
        try:
            rows += measure(ctx, sim, argo, size)
        except Exception as exc:  # the size that does not fit on this machine, and why
            spent = time.monotonic() - started
            note = f"load average {load:.1f} before it, failed after {spent:.0f} s: {type(exc).__name__}: {exc}"
            rows.append(Row(NAME, f"{size} devices", "did not fit", note=note[:600]))
            break
        rows.append(Row(NAME, f"{size} devices: machine load average (1 min)", f"{load:.1f} before, {os.getloadavg()[0]:.1f} at the end"))
    return rows
