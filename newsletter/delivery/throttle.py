"""Rate limiting: at most `rate` calls of `wait()` per second, across threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    """Spaces calls at least 1/rate seconds apart. A rate of 0 never waits.

    `clock` and `sleep` are parameters so tests can run it without waiting; a run sets
    `sleep` to its stop event's `wait`, so a signal cuts a long wait short.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.interval = 1 / rate if rate > 0 else 0.0
        self._clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)
