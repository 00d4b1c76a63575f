"""A STAND-IN for newsletter/workers/limits.py (helper sched's RelayGate), with the same
signatures and no limits, used by the workers' tests only while the real module is not on
this branch. Never imported by the program itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from newsletter.errors import DeliveryError


class Paused(DeliveryError):
    reason: str = ""


class RelayGate:
    def __init__(self, engine: object, relay: str, *, rate_limit: float, connections: int,
                 pause_after_failures: int, lease_seconds: float, owner: str) -> None:
        self.relay = relay

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        yield

    def before_send(self) -> None:
        pass

    def after_send(self, ok: bool) -> None:
        pass
