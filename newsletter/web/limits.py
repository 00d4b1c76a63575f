"""Rate limits for the sign-up form, in memory: a token bucket per key.

A key (a client address, an email address) may spend `per_hour` posts at once, then one
more each `3600 / per_hour` seconds. Time comes from an injected clock (Unix seconds), so
tests move it instead of waiting. Memory is bounded: at most `max_keys` buckets are kept,
the least recently used dropped first; a dropped bucket is one that had refilled the
longest, so forgetting it is most likely to forgive nothing.

Keys are kept as digests, not as given: the limiter holds no email address in clear, and
a key's size does not depend on what a client sent. The limits live in one process: after
a restart, or behind several `serve` processes, each starts afresh (the hourly limit on
confirmation mails, kept in the database, still holds).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 10_000


class RateLimit:
    """`per_hour` events per key, as a token bucket (see module docstring)."""

    def __init__(self, per_hour: int, clock: Callable[[], float], *,
                 max_keys: int = MAX_KEYS) -> None:
        self.capacity = float(per_hour)
        self.rate = per_hour / 3600.0  # tokens a second
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Spend one token of `key`: 0 when allowed, else the seconds until one is back."""
        digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).digest()
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(digest, (self.capacity, now))
            # A clock that steps back gives nothing back, and takes nothing either.
            tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0 - 1e-9:  # a whole token, give or take the float's last bit
                tokens = max(0.0, tokens - 1.0)
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[digest] = (tokens, max(now, last))
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """The Retry-After header value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
