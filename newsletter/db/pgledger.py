"""The ledger, and every other table of the program, in PostgreSQL.

`PgLedger` is `SqliteLedger` with another connection underneath: the store methods
(ledger.py, suppressions.py, readers/) are the same code, their SQL translated once per
statement (sql.py) and run through SQLAlchemy's pooled psycopg connections, so a
restarted server is reconnected (pre-ping) and any thread may use the ledger.

What SQLite's `BEGIN IMMEDIATE` gave (one writer at a time, so a method that reads and
then writes sees what it acts on) is kept where it matters: a transaction whose first
statement reads takes a transaction-level advisory lock, shared by every machine. The
many one-statement writes (a delivery's reply, `INSERT … ON CONFLICT`) need no such lock:
each is atomic on its own, and they run side by side.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from newsletter.db import engine as engine_of
from newsletter.db.errors import advisory_key, database_error
from newsletter.db.migrate import ensure_postgres
from newsletter.db.sql import translate
from newsletter.db.url import Database
from newsletter.ledger import LedgerError, SqliteLedger

_WRITERS = advisory_key("writers")
_BATCH = 1000


class _Cursor:
    """What the store methods use of an sqlite3 cursor."""

    def __init__(self, rows: list[tuple], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())


class PgConnection:
    """An sqlite3-like connection over one SQLAlchemy connection (in a transaction)."""

    def __init__(self, conn: Connection, *, serialize_reads: bool) -> None:
        self._conn = conn
        self._first = serialize_reads

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        statement = translate(sql)
        if self._first:
            self._first = False
            if statement is not None and statement.lstrip()[:6].upper() == "SELECT":
                # Read, then write: as SQLite's BEGIN IMMEDIATE, one such at a time.
                self._conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_WRITERS,))
        if statement is None:
            return _Cursor([], -1)
        result = self._conn.exec_driver_sql(statement, tuple(params))
        rows = [tuple(row) for row in result] if result.returns_rows else []
        return _Cursor(rows, result.rowcount)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> _Cursor:
        statement = translate(sql)
        self._first = False
        if statement is None:
            return _Cursor([], 0)
        count = 0
        # In batches: a million planned deliveries are never all in memory at once.
        rows = (tuple(params) for params in seq)
        while batch := list(itertools.islice(rows, _BATCH)):
            count += self._conn.exec_driver_sql(statement, batch).rowcount
        return _Cursor([], count)


class PgLedger(SqliteLedger):
    """The ledger in PostgreSQL (see the module docstring). Thread-safe."""

    def __init__(self, database: Database, *, read_only: bool = False) -> None:
        """Use the database at `database`; an empty one gets its tables first. A
        database at another schema revision is a `SchemaError` (`newsletter db upgrade`).
        `read_only` is accepted for the interface: PostgreSQL's own rights decide."""
        self.database = database
        self.path = Path(database.display())  # for messages that name "the file"
        self._engine = engine_of(database)
        ensure_postgres(self._engine, database)

    @classmethod
    def for_reading(cls, path: Path) -> SqliteLedger | None:  # pragma: no cover - SQLite's
        raise TypeError("PgLedger opens by Database: use newsletter.db.open_ledger")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is on record when this returns, or none of it."""
        try:
            with self._engine.begin() as conn:
                yield cast(sqlite3.Connection, PgConnection(conn, serialize_reads=True))
        except SQLAlchemyError as err:
            raise self._error(err) from err

    # A server's reply is committed with the server's full durability (no
    # `synchronous_commit = off`): the commit per reply is what bounds the duplicates, and an
    # asynchronous commit is lost when PostgreSQL itself crashes, not only the machine (then
    # up to 3 × wal_writer_delay of replies would be sent again). tests/test_pg_durability.py
    # crashes the server to hold this.

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        statement = translate(sql)
        if statement is None:
            return []
        try:
            with self._engine.connect() as conn:
                result = conn.exec_driver_sql(statement, tuple(params))
                return [tuple(row) for row in result]
        except SQLAlchemyError as err:
            raise self._error(err) from err

    def _error(self, err: BaseException) -> LedgerError:
        return database_error(self.database, err)

    def _has_table(self, name: str) -> bool:
        return True  # the migrations made every table before the first query

    def _has_evidence(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to close: the pooled connections are the process's (`db.engine`)."""
