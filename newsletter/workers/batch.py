"""One batch of one issue, delivered by one worker: claim, keep the lease, send, settle.

The lease is the guarantee against a worker the others can no longer see. Its deadline is
kept on this machine's monotonic clock, counted from *before* each claim or renewal was
asked for (the database's lease began later than that), less a margin for the message in
flight; no message starts after it. A heartbeat renews the lease; when the database stops
answering (a hung connection may never error), the deadline passes and sending stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Engine

from newsletter.delivery import DeliveryBackend, DeliveryResult, create_backend
from newsletter.dispatch import DispatchOptions, DispatchOutcome, dispatch
from newsletter.dkim import load_signer
from newsletter.errors import DeliveryError
from newsletter.fastmime import MessageTemplate
from newsletter.ledger import DeliveryStatus, Ledger
from newsletter.message import OutgoingMessage
from newsletter.models import Subscriber
from newsletter.secret import unsubscribe_secret
from newsletter.settings import Settings
from newsletter.workers import rows, templates

log = logging.getLogger(__name__)


class LeaseLost(DeliveryError):
    """This worker's lease on the batch is over (or may be): it sends no more of it."""


class RelayPaused(DeliveryError):
    """The relay is paused for every worker (the shared limits' `Paused`): the issue waits
    for the publisher's next `send`, as a paused in-process run does."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _gated(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except DeliveryError as err:
        reason = getattr(err, "reason", None)  # RelayGate's Paused carries one
        if isinstance(reason, str):
            raise RelayPaused(reason) from err
        raise


class Gate(Protocol):
    """What a batch needs of `newsletter.workers.limits.RelayGate`."""

    gap: float  # seconds between messages on the relay (0: no shared rate)

    def connection(self) -> AbstractContextManager[None]: ...
    def before_send(self) -> None: ...
    def after_send(self, ok: bool) -> None: ...


class Lease:
    """Our hold on a batch's rows: a local deadline, pushed on by each renewal."""

    def __init__(self, engine: Engine, issue_id: str, batch: int, owner: str,
                 seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.issue_id, self.batch = engine, issue_id, batch
        self.owner, self.seconds, self.clock = owner, seconds, clock
        # The message in flight must be done (and its reply recorded) before the database's
        # lease ends: a fifth of the lease, at least a second.
        self.margin = max(1.0, seconds / 5)
        self.deadline = 0.0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self) -> list[rows.Claimed]:
        asked = self.clock()
        with self.engine.begin() as conn:
            claimed = rows.claim(conn, self.issue_id, self.batch, self.owner, self.seconds)
        self.deadline = asked + self.seconds - self.margin
        return claimed

    def check(self) -> None:
        """Raise `LeaseLost` unless a message may still start now."""
        if self.clock() >= self.deadline:
            raise LeaseLost(f"lease on {self.issue_id} batch {self.batch} is over: "
                            "stopped sending it")

    def renew(self) -> None:
        asked = self.clock()
        with self.engine.begin() as conn:
            rows.renew(conn, self.issue_id, self.batch, self.owner, self.seconds)
        self.deadline = max(self.deadline, asked + self.seconds - self.margin)

    def keep(self) -> AbstractContextManager[None]:
        """Renew every third of the lease until the block ends (a thread: the send loop
        blocks on SMTP replies)."""
        return _Keeper(self)

    def release(self) -> None:
        with self.engine.begin() as conn:
            rows.release(conn, self.issue_id, self.batch, self.owner)


class _Keeper:
    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.done.set()  # a renewal hung on a dead connection is left behind (daemon)

    def _run(self) -> None:
        while not self.done.wait(self.lease.seconds / 3):
            try:
                self.lease.renew()
            except Exception as err:  # the deadline decides, not the error
                log.warning("could not renew the lease on %s batch %s: %s",
                            self.lease.issue_id, self.lease.batch, err)


class _GatedBackend(DeliveryBackend):
    """A backend whose connection holds a relay slot, and whose every message waits for the
    shared rate, and starts only inside the lease."""

    name = "gated"

    def __init__(self, inner: DeliveryBackend, gate: Gate | None, lease: Lease) -> None:
        self.inner, self.gate, self.lease = inner, gate, lease
        self.idempotent = inner.idempotent  # type: ignore[misc]
        self.rate_per_connection = inner.rate_per_connection
        self._slot: AbstractContextManager[None] = nullcontext()
        self._pending: DeliveryError | None = None  # a pause after a reply, raised next

    @classmethod
    def from_settings(cls, settings: Settings, stream: Any) -> DeliveryBackend:
        # Not a backend of its own: deliver_batch wraps the configured one.
        raise TypeError("a gated backend wraps another backend; deliver_batch makes it")

    def open(self) -> None:
        self.lease.check()
        if self.gate is not None:
            slot = self.gate.connection()
            _gated(slot.__enter__)
            self._slot = slot
        self.inner.open()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self._slot.__exit__(None, None, None)
            self._slot = nullcontext()

    @property
    def lookahead(self) -> bool:
        # The next message's commands may go early (its body still waits for the shared
        # rate and the lease check), but not with a shared rate: its DATA would wait open.
        return self.inner.lookahead and (self.gate is None or not self.gate.gap)

    def announce(self, following: OutgoingMessage) -> None:
        self.inner.announce(following)

    def send(self, message: OutgoingMessage) -> DeliveryResult:
        if self._pending is not None:
            raise self._pending
        if self.gate is not None:
            _gated(self.gate.before_send)
        self.lease.check()  # after the wait for the rate: the lease may have run out in it
        result = self.inner.send(message)
        if self.gate is not None:
            ok = result.ok
            try:
                _gated(lambda: self.gate.after_send(ok))  # type: ignore[union-attr]
            except DeliveryError as err:  # the reply is still recorded; the next one stops
                self._pending = err
        return result


class _RowLedger:
    """The three ledger writes the send loop makes, on the delivery rows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, issue_id: str, email: str, status: DeliveryStatus, reply: str) -> None:
        self.record_many(issue_id, [(email, status, reply)])

    def record_many(self, issue_id: str,
                    outcomes: Iterable[tuple[str, DeliveryStatus, str]]) -> None:
        try:
            with self.engine.begin() as conn:
                rows.record(conn, issue_id, outcomes)
        except Exception as err:
            from newsletter.ledger import LedgerError

            raise LedgerError(f"the database did not record a reply: {err}") from err

    def reset(self, issue_id: str, emails: Iterable[str] | None = None) -> None:
        with self.engine.begin() as conn:
            rows.reset(conn, issue_id, list(emails or ()))


@dataclass
class BatchOutcome:
    claimed: int
    outcome: DispatchOutcome | None
    complete: bool


def deliver_batch(settings: Settings, engine: Engine, issue_id: str, batch: int, owner: str,
                  *, stop: threading.Event, gate: Callable[[], Gate | None],
                  suppress: Callable[[str, DeliveryResult], None]) -> BatchOutcome:
    """Send the batch's unsent rows that nobody else holds; the rows say what is left."""
    lease = Lease(engine, issue_id, batch, owner, settings.workers.lease_seconds)
    claimed = lease.claim()
    if not claimed:  # sent already, or another worker holds it: nothing to do
        return BatchOutcome(0, None, _complete(engine, issue_id))
    with engine.connect() as conn:
        stored = rows.load_templates(conn, issue_id)
    signer, secret = load_signer(settings.dkim), unsubscribe_secret(settings)
    built: dict[str, MessageTemplate] = {}
    for key, text in stored.items():
        rendered, now = templates.load(text)
        built[key] = MessageTemplate(rendered, settings.newsletter, now, signer=signer,
                                     secret=secret, bounces=settings.bounces.address)
    readers = {c.email: c for c in claimed}

    def build(subscriber: Subscriber) -> OutgoingMessage:
        return built[readers[subscriber.email.lower()].variant].build(subscriber)

    name = settings.delivery.backend
    relay_gate = gate() if name == "smtp" else None

    def open_backend() -> DeliveryBackend:
        return _GatedBackend(create_backend(name, settings), relay_gate, lease)

    options = DispatchOptions(
        connections=settings.smtp.connections if name == "smtp" else 1,
        retries=settings.delivery.retries, retry_backoff=settings.delivery.retry_backoff,
        pause_after_failures=settings.delivery.pause_after_failures,
        # The relay's rate is shared by every worker: the gate keeps it, not this process.
        rate_limit=0 if relay_gate is not None else settings.delivery.rate_limit)
    todo = [Subscriber(email=c.address, name=c.name) for c in claimed]
    with lease.keep():
        outcome = dispatch(todo, build, open_backend, options,
                           ledger=cast(Ledger, _RowLedger(engine)), issue_id=issue_id,
                           stop=stop)
    for result in outcome.failed.values():
        if result.status == "failed-permanent":
            suppress(issue_id, result)
    paused = (outcome.error.reason if isinstance(outcome.error, RelayPaused)
              else outcome.paused)
    if paused:
        with engine.begin() as conn:
            rows.pause(conn, issue_id, paused)
    if (outcome.stopped and not isinstance(outcome.error, LeaseLost)) or paused:
        lease.release()  # told to stop: the next worker need not wait for the lease
    return BatchOutcome(len(claimed), outcome, _complete(engine, issue_id))


def _complete(engine: Engine, issue_id: str) -> bool:
    with engine.begin() as conn:
        return rows.complete_if_done(conn, issue_id)
