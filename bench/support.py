"""What every benchmark shares: data paths, models, the run context, RSS sampling, one-core pinning, py-spy."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.report import Report
from facepipe import config, models
from facepipe_dev.loadgen import Face, LoadGenerator
from facepipe_dev.paths import SHARED_DATA, fetched_models

VIDEO_FRAMES_CSV = SHARED_DATA / "video" / "short_hamilton_clip.yunet2023mar_frames.csv"
WIDER = SHARED_DATA / "benchmark" / "wider_val_subset416"
DEVICE = "bench-edge"
WINDOW = 100  # messages the bench publisher keeps in flight


def find_model_dir(configured: str, workdir: Path) -> Path:
    """FACEPIPE_MODEL_DIR / --model-dir, else the cache `make models` fills, else fetched from ../shared/models."""
    return fetched_models(workdir / "models", configured, os.environ.get("FACEPIPE_MODEL_DIR", ""), str(models.DEFAULT_MODEL_DIR))


def publisher(host: str, port: int, topic: str, crops: list[Face], qos: int = 1) -> LoadGenerator:
    """The bench's face publisher: real crops, flat out or at a rate, WINDOW messages in flight, connected."""
    return LoadGenerator(
        host, port, topic=topic, device=DEVICE, faces=crops, detector="yunet/bench-crops", window=WINDOW, qos=qos, ack_timeout=120.0
    ).connect()


def camera_setting(env_name: str) -> Any | None:
    """The settings leaf of the camera variable `env_name` (None while the camera has no such setting)."""
    for leaf in config.settings_of(config.CameraSettings):
        if env_name in leaf.env:
            return leaf
    return None


class RssSampler:
    """Samples the resident set size of watched processes (and their children) every `interval` s; keeps each peak."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.where: dict[str, str] = {}
        self.phase = ""
        self._watched: dict[str, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        with self._lock:
            self._watched[name] = process

    def unwatch(self, name: str) -> None:
        self.sample()
        with self._lock:
            self._watched.pop(name, None)

    def sample(self) -> None:
        with self._lock:
            watched = list(self._watched.items())
        for name, process in watched:
            try:
                rss = process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            if rss > self.peaks.get(name, 0):
                self.peaks[name] = rss
                self.where[name] = self.phase

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


@dataclass
class Context:
    """One bench run: options, scratch directory, report, the shared S3 server and RSS sampler."""

    quick: bool
    workdir: Path
    model_dir: Path
    report: Report
    profile: bool = True
    rss: RssSampler = field(default_factory=RssSampler)
    _rgw: Any = None
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def rgw(self) -> Any:
        """The run's Ceph RADOS Gateway, started on first use (None, with a note, where Ceph is absent)."""
        if self._rgw is None:
            from facepipe_dev.rgw import RadosGateway, rgw_available  # the test extra: only where S3 rows run

            reason = rgw_available()
            if reason:
                self.report.notes.append(f"S3 rows skipped: {reason}")
                self._rgw = False
                return None
            gateway = RadosGateway(self.scratch("rgw"), conf_overrides={"debug_rgw": "0"}).start()
            self._cleanups.append(gateway.stop)
            self._rgw = gateway
        return self._rgw or None

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            cleanup()
        self.rss.close()


@contextmanager
def one_core() -> Iterator[int]:
    """Pin the calling thread to one CPU and OpenCV to one thread; restore both afterwards."""
    import cv2

    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    threads = cv2.getNumThreads()
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)
    try:
        yield cpu
    finally:
        cv2.setNumThreads(threads)
        os.sched_setaffinity(0, allowed)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# --- py-spy ----------------------------------------------------------------------------------------


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.is_file() else shutil.which("py-spy")


class Profile:
    """`py-spy record` of one process in the background (at most `seconds`), collapsed stacks in `out`.

    Non-blocking sampling at a modest rate, so the profiled process is barely slowed down.
    """

    def __init__(self, pid: int, out: Path, seconds: float, rate: int = 50) -> None:
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None
        binary = py_spy()
        if binary is None:
            return
        argv = [binary, "record", "--nonblocking", "-r", str(rate), "-d", str(max(1, round(seconds)))]
        argv += ["-f", "raw", "-o", str(out), "-p", str(pid)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, timeout: float = 30.0) -> bool:
        """End the recording now (SIGINT makes py-spy write what it has); True when samples were written."""
        if self.process is None:
            return False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.out.is_file() and self.out.stat().st_size > 0


def summarise_profile(raw: Path, top: int = 12) -> tuple[int, list[tuple[str, float, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: (samples, [(function, self %, inclusive %)] by inclusive share, [(leaf, self %)]).

    Thread plumbing (threading.py, paho's loop entry points) is in nearly every stack and says
    nothing: it is left out of the inclusive ranking.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return 0, [], []
    plumbing = ("(threading.py)", "loop_forever (", "_thread_main (", "<module> (", "_run_module_as_main", "_run_code")
    ranked = sorted((f for f in inclusive if not any(p in f for p in plumbing)), key=lambda f: (-inclusive[f], f))
    rows = [(f, 100 * own[f] / total, 100 * inclusive[f] / total) for f in ranked[:top]]
    leaves = [(f, 100 * n / total) for f, n in own.most_common(top)]
    return total, rows, leaves


def _short_frame(frame: str) -> str:
    """'function (path/to/file.py:123)' -> 'function (file.py)'."""
    name, _, where = frame.partition(" (")
    if not where:
        return name
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def profile_markdown(title: str, raw: Path, explanation: str) -> str:
    samples, rows, leaves = summarise_profile(raw)
    lines = [f"### {title}", "", explanation, ""]
    if not samples:
        return "\n".join([*lines, "(py-spy recorded no samples)", ""])
    lines += [
        f"py-spy record, {samples} samples of busy threads (raw stacks: `{raw.name}`). Where the time goes, by function (inclusive):",
        "",
    ]
    lines += ["| function | self % | inclusive % |", "|---|---|---|"]
    lines += [f"| `{f}` | {s:.1f} | {i:.1f} |" for f, s, i in rows]
    lines += ["", "Hottest leaves (self time): " + ", ".join(f"`{f}` {share:.1f}%" for f, share in leaves[:8]) + "."]
    return "\n".join([*lines, ""])
