"""A lock between machines: a PostgreSQL advisory lock held by a connection of its own.

The server drops it when the holder's connection ends, however the holder ends (`kill -9`,
a machine gone: once its TCP connection is found dead). It speaks like the file lock
(lock.py): "sending is locked by pid … on host (…, since …)".
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from newsletter.db.errors import advisory_key, database_error
from newsletter.db.url import Database
from newsletter.lock import LockHeld, ProcessLock


class DatabaseLock(ProcessLock):
    """`ProcessLock` across machines, in the database named by `database`."""

    def __init__(self, database: Database, name: str, purpose: str) -> None:
        super().__init__(Path(database.display()), purpose)
        self.database = database
        self.key = advisory_key(f"lock:{name}")
        self._conn: Any = None

    def acquire(self, wait: float = 0, stop: threading.Event | None = None) -> None:
        """Take the lock, waiting up to `wait` seconds; raise `LockHeld` naming the holder."""
        import psycopg

        who = (f"pid {os.getpid()} on {socket.gethostname()} "
               f"({' '.join(['newsletter', *sys.argv[1:]])})")
        try:
            # Its own connection, not the pool's: the lock lasts exactly as long as it.
            conn = psycopg.connect(self.database.libpq_url, autocommit=True,
                                   connect_timeout=10, application_name=who[:63])
        except psycopg.Error as err:
            raise database_error(self.database, err) from err
        stop = stop or threading.Event()
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
        try:
            while True:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                if row and row[0]:
                    break
                if dt.datetime.now(dt.UTC) >= deadline or stop.wait(0.2):
                    holder = self._holder(conn)
                    conn.close()
                    raise LockHeld(f"{self.purpose} is locked by {holder}",
                                   file=self.database.display(),
                                   fix="wait for that run to finish (a killed process frees "
                                       "the lock at once)")
        except psycopg.Error as err:
            conn.close()
            raise database_error(self.database, err) from err
        self._conn = conn

    def _holder(self, conn: Any) -> str:
        """Who holds the lock: its connection's name (pid, host, command) and since when."""
        row = conn.execute(
            "SELECT a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.objsubid = 1 AND l.classid::bigint = %s "
            "AND l.objid::bigint = %s LIMIT 1",  # a bigint key: its high and low halves
            ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF)).fetchone()
        if row is None or not row[0]:
            return "another process"
        since = row[1].astimezone(dt.UTC).isoformat(timespec="seconds") if row[1] else "?"
        name = str(row[0])
        return f"{name[:-1]}, since {since})" if name.endswith(")") else f"{name} (since {since})"

    def holder(self) -> str:
        import psycopg

        try:
            with psycopg.connect(self.database.libpq_url, autocommit=True,
                                 connect_timeout=10) as conn:
                return self._holder(conn)
        except psycopg.Error:
            return "another process"

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()  # ends the session, and with it the lock
