"""A byte budget shared by threads: what the processor holds or works on at once stays under a bound."""

from __future__ import annotations

import threading
from collections import deque


class ByteBudget:
    """At most `capacity` bytes reserved at once, granted in arrival order. A reservation larger than the whole
    budget waits until nothing else is reserved and then runs alone (instead of never)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[object] = deque()
        self._cond = threading.Condition()

    def acquire(self, size: int, stop: threading.Event) -> bool:
        """Reserve `size` bytes, waiting for room; False (nothing reserved) when `stop` is set first."""
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or (self.used and self.used + size > self.capacity):
                    if stop.is_set():
                        return False
                    self._cond.wait(0.2)
                self.used += size
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self, size: int) -> None:
        with self._cond:
            self.used -= size
            self._cond.notify_all()
