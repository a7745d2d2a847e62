"""Child processes on loopback: free ports, waits, and clean stops.

Used by `facepipe run`, the test fixtures and the bench, so that every process started here is
stopped with terminate + wait (never left as a zombie or an orphan). `poll` is the one wait loop
of the devkit: `wait_until` fails a test with what it waited for (and the state so far), `wait_progress`
waits for a counter that may stall.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call `predicate` every `interval` seconds until its answer is truthy or `timeout` passes; return that
    answer (the last one on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = predicate()
        if answer:
            return answer
        time.sleep(interval)
    return predicate()


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
    state: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it is truthy and return its answer; fail (AssertionError) naming `what`, and
    `state()` when given, on timeout."""
    answer = poll(predicate, timeout, interval)
    if not answer:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{state()}" if state else ""))
    return answer


def wait_progress(
    read: Callable[[], float],
    target: float,
    stall: float,
    timeout: float = float("inf"),
    interval: float = 0.05,
    every: tuple[float, Callable[[float], None]] | None = None,
) -> float:
    """Poll the counter `read()` until it reaches `target`; give up after `stall` seconds without progress (or
    `timeout` in all). `every` = (seconds, report): report(value) that often while waiting. Returns the last value."""
    started = last_change = last_report = time.monotonic()
    last = -1.0
    while True:
        value = read()
        now = time.monotonic()
        if value >= target:
            return value
        if value > last:
            last, last_change = value, now
        if now - last_change > stall or now - started > timeout:
            return max(last, value)
        if every is not None and now - last_report >= every[0]:
            every[1](value)
            last_report = now
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ChildProcess:
    """A subprocess whose output goes to a log file and which is always stopped cleanly.

    Use as a context manager, or call `stop()` yourself. `stop()` sends SIGTERM, waits, and
    escalates to SIGKILL after `stop_timeout` seconds.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_for_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Wait until host:port accepts connections; raise with the log's tail if the process dies."""
        if not poll(lambda: self.alive_or_raise("exited early") and port_open(host, port), timeout):
            raise TimeoutError(f"{self.name} did not listen on {host}:{port} within {timeout:.0f}s:\n{self.log_tail()}")

    def alive_or_raise(self, what: str = "exited") -> bool:
        """True while the process runs; RuntimeError with the log's tail once it has exited."""
        if not self.running():
            raise RuntimeError(f"{self.name} {what} (code {self.returncode()}):\n{self.log_tail()}")
        return True

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        if self.running():
            assert self.popen is not None
            os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap: for tests that simulate a crash."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._close_log()

    def stop(self) -> int | None:
        """SIGTERM, wait up to stop_timeout, then SIGKILL; always reaps. Returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close_log()
        return self.popen.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
