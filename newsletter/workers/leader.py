"""One scheduler leads, the others stand by: a PostgreSQL session advisory lock.

The leader holds `pg_try_advisory_lock(KEY)` on a connection of its own (not the pool's),
which a pinger thread uses every `check_seconds`. The lock lives as long as that session:
when the leader dies, the server ends the session and a standby, trying every
`poll_seconds`, takes the lock.

A network split must not leave two leaders. The leader trusts its lock only until
`fence_seconds` after the last ping that came back; then it stops scheduling (`lost` is
set and the `on_lost` callbacks run), even while its ping still hangs. The server side
gives the lock up later: the session sets `idle_session_timeout` to `release_seconds`
(> fence), so a session cut off from its client is ended, and its lock released, no sooner
than that after the last ping the server answered, and that is no later than the last
one the leader saw. So a cut-off leader has stopped before a standby can lead; each run
also confirms the lock with a round trip before it starts (`confirm`), for a leader
frozen longer than its fence (a paused VM) whose pinger has not yet noticed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import psycopg

from newsletter.db.url import Database

log = logging.getLogger("newsletter.scheduler")

# One lock per database: all schedulers of one newsletter database compete for it.
KEY = int.from_bytes(hashlib.sha256(b"newsletter schedule").digest()[:8], "big", signed=True)
POLL_SECONDS = 5.0  # a standby tries for the lock this often
CHECK_SECONDS = 2.0  # the leader pings its lock connection this often
FENCE_SECONDS = 10.0  # no answer for this long: the leader stops scheduling
RELEASE_SECONDS = 30.0  # the server ends a session silent for this long (its lock freed)

_HELD = """SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted
  AND pid = pg_backend_pid() AND objsubid = 1
  AND classid::bigint = (%(key)s >> 32) & 4294967295 AND objid::bigint = %(key)s & 4294967295)"""
_HOLDER = """SELECT a.application_name, host(a.client_addr) FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted
  AND l.objsubid = 1 AND l.classid::bigint = (%(key)s >> 32) & 4294967295
  AND l.objid::bigint = %(key)s & 4294967295"""


class Leadership:
    """The scheduler's lock in `database`: `wait` stands by until it is ours."""

    def __init__(self, database: Database, *, poll_seconds: float | None = None,
                 check_seconds: float | None = None, fence_seconds: float | None = None,
                 release_seconds: float | None = None) -> None:
        self.database = database
        # Read at call time, so the module's values can be tuned (the tests do).
        self.poll = poll_seconds or POLL_SECONDS
        self.check = check_seconds or CHECK_SECONDS
        self.fence = fence_seconds or FENCE_SECONDS
        self.release = release_seconds or RELEASE_SECONDS
        assert self.check < self.fence < self.release
        self.name = f"newsletter schedule pid {os.getpid()} on {socket.gethostname()}"[:63]
        self.lost = threading.Event()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._guard = threading.Lock()  # one query at a time on the lock connection
        self._losing = threading.Lock()  # not _guard: a hung ping must not delay the fence
        self._last_ok = 0.0
        self._callbacks: list[Callable[[str], None]] = []
        self._done = threading.Event()

    # -- standing by --------------------------------------------------------------------

    def wait(self, stop: threading.Event, on_standby: Callable[[str], None]) -> bool:
        """Stand by until this process leads (True) or `stop` is set (False).
        `on_standby` is told once who leads, or why the database cannot be reached."""
        told: str | None = None
        while not stop.is_set():
            try:
                if self._try():
                    return True
                why = f"{self._holder() or 'another scheduler'} leads"
            except psycopg.Error as err:
                self._close()
                why = f"the database is out of reach ({' '.join(str(err).split())})"
            if why != told:
                on_standby(why)
                told = why
            stop.wait(self.poll)
        return False

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(
            self.database.libpq_url, autocommit=True, application_name=self.name,
            connect_timeout=max(2, int(self.fence / 2)),
            # The kernel gives up on unanswered data and on a silent peer well inside the
            # fence, so a ping cannot hang for the default minutes.
            keepalives=1, keepalives_idle=max(1, int(self.check)), keepalives_interval=1,
            keepalives_count=3, tcp_user_timeout=int(self.fence * 500))
        # The server ends this session when it has not heard from it for `release`: a
        # split-off leader's lock is freed, after the leader has stopped by its fence.
        conn.execute(f"SET idle_session_timeout = {int(self.release * 1000)}")
        return conn

    def _try(self) -> bool:
        if self._conn is None:
            self._conn = self._connect()
        row = self._conn.execute("SELECT pg_try_advisory_lock(%(key)s)", {"key": KEY}).fetchone()
        if not (row and row[0]):
            return False
        self._last_ok = time.monotonic()
        threading.Thread(target=self._ping, name="scheduler-lock ping", daemon=True).start()
        threading.Thread(target=self._watch, name="scheduler-lock fence", daemon=True).start()
        return True

    def _holder(self) -> str | None:
        assert self._conn is not None
        row = self._conn.execute(_HOLDER, {"key": KEY}).fetchone()
        if row is None:
            return None
        name, addr = row
        return f"{name or 'a scheduler'}" + (f" ({addr})" if addr else "")

    # -- leading ------------------------------------------------------------------------

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` (once) when the lock can no longer be trusted."""
        self._callbacks.append(callback)

    def valid(self) -> bool:
        """Leading, as far as the last ping knows (no round trip)."""
        return (not self.lost.is_set() and self._conn is not None
                and time.monotonic() - self._last_ok < self.fence)

    def confirm(self) -> bool:
        """Leading, checked with a round trip now: a run starts only after this."""
        if not self.valid():
            return False
        try:
            held = self._held()
        except psycopg.Error as err:
            self._lose(f"the database is out of reach ({' '.join(str(err).split())})")
            return False
        if not held:
            self._lose("the lock is no longer held (its session was ended)")
        return held

    def _held(self) -> bool:
        with self._guard:
            assert self._conn is not None
            row = self._conn.execute(_HELD, {"key": KEY}).fetchone()
        held = bool(row and row[0])
        if held:
            self._last_ok = time.monotonic()
        return held

    def _ping(self) -> None:
        while not self._done.wait(self.check) and not self.lost.is_set():
            try:
                if not self._held():
                    self._lose("the lock is no longer held (its session was ended)")
            except psycopg.Error as err:
                self._lose(f"the database is out of reach ({' '.join(str(err).split())})")

    def _watch(self) -> None:
        # Apart from the pinger, which may hang in a query on a cut-off network.
        while not self._done.wait(min(0.5, self.check / 2)) and not self.lost.is_set():
            silent = time.monotonic() - self._last_ok
            if silent >= self.fence:
                self._lose(f"no answer from the database for {silent:.0f} s")

    def _lose(self, reason: str) -> None:
        with self._losing:
            if self.lost.is_set():
                return
            self.lost.set()
        log.error("the scheduler lost its lock: %s; it stops scheduling (a standby takes "
                  "over)", reason)
        for callback in self._callbacks:
            callback(reason)

    def close(self) -> None:
        """Give the lock up (closing its session) and stop the threads."""
        self._done.set()
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
