"""Limits shared by every worker sending through one relay (smtp host:port), on PostgreSQL.

`delivery.rate_limit`, `smtp.connections` and `delivery.pause_after_failures` hold for all
worker processes on all machines together: per-process limits multiply with the number of
workers, and a relay that allows 10 messages a second blocks a sender who sends 40.

- The rate: `relay_limits.next_slot` is the earliest moment the relay's next message may
  start. `before_send` reserves a slot with one UPDATE … RETURNING on the database's clock
  (so the machines' clocks do not matter) and sleeps until it. With `rate_limit: 0` there
  is no round trip at all.
- Connections: `relay_connections` has one row per allowed connection; a holder's row has
  a lease that a keeper thread renews, so a killed worker's slot frees when its lease ends.
- The pause: a failures-in-a-row counter over all workers. The failure that reaches
  `pause_after_failures` pauses the relay for everyone, with its reason, until the
  publisher's next `send` (`clear_pause`), as a paused run today waits for the next run.

Cost per message: with a rate limit, exactly one round trip (the slot reservation, which
also reads the pause and carries the previous message's success); without one, none. A
failed message costs one more. The keeper makes one or two round trips a second per
process, whatever the message rate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from newsletter.errors import DeliveryError

log = logging.getLogger("newsletter.workers.limits")

METADATA = sa.MetaData()
RELAY_LIMITS = sa.Table(
    "relay_limits", METADATA,
    sa.Column("relay", sa.Text, primary_key=True),
    # The earliest start of the relay's next message (the rate limit's next free slot).
    sa.Column("next_slot", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("paused_at", sa.DateTime(timezone=True)),
    sa.Column("pause_reason", sa.Text),
)
RELAY_CONNECTIONS = sa.Table(
    "relay_connections", METADATA,
    sa.Column("relay", sa.Text, primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("owner", sa.Text),  # NULL: free
    sa.Column("expires_at", sa.DateTime(timezone=True)),
)

# How long a sender waits between tries for a free connection slot, at most.
MAX_SLOT_POLL = 0.5

_RESERVE = sa.text("""
UPDATE relay_limits SET
  next_slot = CASE WHEN paused_at IS NULL
                   THEN greatest(next_slot, clock_timestamp()) + make_interval(secs => :gap)
                   ELSE next_slot END,
  failures = CASE WHEN :reset THEN 0 ELSE failures END
WHERE relay = :relay
RETURNING extract(epoch FROM next_slot - make_interval(secs => :gap) - clock_timestamp()),
          pause_reason, extract(epoch FROM next_slot - make_interval(secs => :gap))
""")
_FAIL = sa.text("""
UPDATE relay_limits SET
  failures = failures + 1,
  paused_at = CASE WHEN paused_at IS NULL AND failures + 1 >= :limit
                   THEN clock_timestamp() ELSE paused_at END,
  pause_reason = CASE WHEN paused_at IS NULL AND failures + 1 >= :limit
                      THEN :reason ELSE pause_reason END
WHERE relay = :relay
RETURNING failures, pause_reason
""")
_CLAIM = sa.text("""
UPDATE relay_connections SET owner = :owner,
  expires_at = clock_timestamp() + make_interval(secs => :lease)
WHERE relay = :relay AND slot = (
  SELECT slot FROM relay_connections
  WHERE relay = :relay AND slot < :n AND (owner IS NULL OR expires_at < clock_timestamp())
  ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING slot
""")
_RELEASE = sa.text("UPDATE relay_connections SET owner = NULL, expires_at = NULL "
                   "WHERE relay = :relay AND slot = :slot AND owner = :owner")
_RENEW = sa.text("""
UPDATE relay_connections SET expires_at = clock_timestamp() + make_interval(secs => :lease)
WHERE relay = :relay AND owner = ANY(:owners) RETURNING owner
""")
_READ = sa.text("SELECT pause_reason FROM relay_limits WHERE relay = :relay")
_RESET = sa.text("UPDATE relay_limits SET failures = 0 WHERE relay = :relay AND failures > 0 "
                 "RETURNING pause_reason")


class Paused(DeliveryError):
    """The relay is paused for every worker (failures in a row); `.reason` says why."""

    def __init__(self, relay: str, reason: str) -> None:
        self.relay, self.reason = relay, reason
        super().__init__(f"sending through {relay} is paused: {reason}",
                         fix="fix the cause; the next `newsletter send` resumes it")


def create_tables(engine: sa.Engine) -> None:
    """The tables of revision 0003, for a database without Alembic's history (tests)."""
    METADATA.create_all(engine)


def clear_pause(engine: sa.Engine, relay: str | None = None) -> list[tuple[str, str]]:
    """Resume paused relays (one, or all): the publisher's next `send` does this, as a paused
    run used to end with the run. Returns each (relay, reason) it resumed."""
    with engine.begin() as conn:
        rows = conn.execute(sa.text(
            "WITH old AS (SELECT relay, pause_reason FROM relay_limits WHERE paused_at IS NOT "
            "NULL AND (CAST(:relay AS text) IS NULL OR relay = :relay) FOR UPDATE) "
            "UPDATE relay_limits r SET paused_at = NULL, pause_reason = NULL, failures = 0 "
            "FROM old WHERE r.relay = old.relay RETURNING old.relay, old.pause_reason"),
            {"relay": relay}).all()
    return [(row[0], row[1] or "") for row in rows]


class RelayGate:
    """Limits shared by every worker process sending through one relay (smtp host:port).

    Thread-safe: one gate per relay in a process, used by all its sending threads.
    `close()` (or the process ending) stops the keeper; slots still held expire.
    """

    def __init__(self, engine: sa.Engine, relay: str, *, rate_limit: float,
                 connections: int, pause_after_failures: int, lease_seconds: float,
                 owner: str) -> None:
        if connections < 1 or pause_after_failures < 1 or lease_seconds <= 0:
            raise ValueError("connections and pause_after_failures must be ≥ 1, the lease > 0")
        self.engine, self.relay, self.owner = engine, relay, owner
        self.gap = 1.0 / rate_limit if rate_limit > 0 else 0.0
        self.connections, self.pause_after_failures = connections, pause_after_failures
        self.lease = float(lease_seconds)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._held: dict[str, int] = {}  # owner token → slot
        self._reset_pending = False  # a success not yet told to the database
        self._paused: str | None = None  # the reason, as last read
        self._contact = time.monotonic()  # the last round trip that worked
        self._stop = threading.Event()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO relay_limits (relay) VALUES (:relay) "
                                 "ON CONFLICT DO NOTHING"), {"relay": relay})
            conn.execute(sa.text(
                "INSERT INTO relay_connections (relay, slot) SELECT :relay, s "
                "FROM generate_series(0, :n - 1) AS s ON CONFLICT DO NOTHING"),
                {"relay": relay, "n": connections})
            self._paused = conn.execute(_READ, {"relay": relay}).scalar()
        # Renewals well inside the lease; the pause is seen within a second without a
        # rate limit (with one, before every message).
        self.interval = min(1.0, self.lease / 4)
        self._keeper = threading.Thread(target=self._keep, name=f"relay-gate {relay}",
                                        daemon=True)
        self._keeper.start()

    # -- per message --------------------------------------------------------------------

    @property
    def last_slot(self) -> float | None:
        """The start (Unix time, the database's clock) of the slot this thread reserved
        last; None without a rate limit."""
        slot: float | None = getattr(self._local, "slot", None)
        return slot

    def before_send(self) -> None:
        """Wait for the shared rate limit's next slot; raise Paused if the relay is paused."""
        self._check_contact()
        if self.gap == 0:
            with self._lock:
                reason = self._paused
            if reason is not None:
                raise Paused(self.relay, reason)
            return
        with self._lock:
            reset, self._reset_pending = self._reset_pending, False
        try:
            row = self._execute(_RESERVE, {"relay": self.relay, "gap": self.gap,
                                           "reset": reset}).one()
        except DeliveryError:
            with self._lock:
                self._reset_pending = self._reset_pending or reset
            raise
        wait, reason = float(row[0]), row[1]
        self._local.slot = float(row[2])
        with self._lock:
            self._paused = reason
        if reason is not None:
            raise Paused(self.relay, reason)
        if wait > 0:
            time.sleep(wait)

    def after_send(self, ok: bool, detail: str = "") -> None:
        """Count failures in a row across workers; at pause_after_failures pause the relay
        for everyone (raise Paused); a success resets the count."""
        if ok:
            with self._lock:
                self._reset_pending = True  # told with the next reservation, or the keeper
            return
        with self._lock:
            self._reset_pending = False
        reason = (f"{self.pause_after_failures} failures in a row through {self.relay}, "
                  "counted over all workers" + (f" (last: {detail})" if detail else ""))
        row = self._execute(_FAIL, {
            "relay": self.relay, "limit": self.pause_after_failures,
            "reason": reason}).one()
        failures, paused = int(row[0]), row[1]
        with self._lock:
            self._paused = paused
        if paused is not None:
            raise Paused(self.relay, paused)
        log.debug("%s: %d failures in a row", self.relay, failures)

    # -- connections --------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """Hold one of the relay's `connections` slots (across all workers) while an SMTP
        connection is open; waits for a free one; a dead holder's slot frees after its lease."""
        token = f"{self.owner}#{uuid.uuid4().hex[:12]}"
        pause = 0.02
        while True:
            self._check_contact()
            with self._lock:
                reason = self._paused
            if reason is not None:
                raise Paused(self.relay, reason)
            slot = self._execute(_CLAIM, {"relay": self.relay, "owner": token,
                                          "lease": self.lease, "n": self.connections}).scalar()
            if slot is not None:
                break
            time.sleep(pause)
            pause = min(pause * 2, MAX_SLOT_POLL)
        with self._lock:
            self._held[token] = slot
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(token, None)
            try:
                self._execute(_RELEASE, {"relay": self.relay, "slot": slot, "owner": token})
            except DeliveryError as err:  # its lease frees it
                log.warning("%s: could not free connection slot %d: %s", self.relay, slot, err)

    # -- the keeper ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the keeper thread and tell the database an unsent success."""
        self._stop.set()
        self._keeper.join(timeout=5)
        with contextlib.suppress(DeliveryError):
            self._flush()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    def _keep(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._flush()
            except DeliveryError as err:
                log.warning("%s: the shared limits are out of reach: %s", self.relay, err)
            except Exception:  # the keeper must not die quietly: the leases depend on it
                log.exception("%s: renewing the relay's leases failed", self.relay)

    def _flush(self) -> None:
        """Renew held leases, tell a pending success, read the pause (1–2 round trips)."""
        with self._lock:
            held = dict(self._held)
            reset, self._reset_pending = self._reset_pending, False
        if held:
            renewed: set[str] = set(self._execute(_RENEW, {"relay": self.relay, "lease": self.lease,
                                                 "owners": list(held)}).scalars())
            for token in held.keys() - renewed:
                with self._lock:
                    still_held = token in self._held
                if still_held:
                    log.error("%s: connection slot %d was taken over after its lease ran out "
                              "(this process stalled)", self.relay, held[token])
        statement = _RESET if reset else _READ
        rows = self._execute(statement, {"relay": self.relay}).all()
        if reset and not rows:  # no count to reset: the pause is read anyway
            rows = self._execute(_READ, {"relay": self.relay}).all()
        with self._lock:
            self._paused = rows[0][0] if rows else None

    def _check_contact(self) -> None:
        """A worker cut off from the database for a lease has lost its slots: stop."""
        if time.monotonic() - self._contact > self.lease:
            raise DeliveryError(f"the shared limits of {self.relay} are out of reach since "
                                f"more than {self.lease:g} s (no database); not sending")

    def _execute(self, statement: sa.TextClause, params: dict[str, Any]) -> sa.CursorResult:
        """One autocommit statement on this thread's own connection: one round trip (no
        BEGIN/COMMIT, no pool check-out ping). A broken connection is replaced once."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None:
                    conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                    # No wait for the WAL flush: a slot, a count or a lease lost in a server
                    # crash costs nothing worth a disk flush per message (with it, one relay
                    # row serves a few hundred reservations a second; without, thousands).
                    conn.exec_driver_sql("SET synchronous_commit = off")
                    self._local.conn = conn
                result = conn.execute(statement, params)
                self._contact = time.monotonic()
                return result
            except DBAPIError as err:
                self._local.conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                if attempt == 2 or not err.connection_invalidated:
                    raise DeliveryError(f"the shared limits of {self.relay} cannot be read: "
                                        f"{' '.join(str(err.orig).split())}") from err
        raise AssertionError("unreachable")
