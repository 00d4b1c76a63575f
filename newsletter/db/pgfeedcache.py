"""The feed cache (sources/feedcache.py) in PostgreSQL: the same tables and statements,
each call one transaction on the pooled engine."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from sqlalchemy.exc import SQLAlchemyError

from newsletter.db import engine as engine_of
from newsletter.db.errors import database_error
from newsletter.db.migrate import ensure_postgres
from newsletter.db.pgledger import PgConnection
from newsletter.db.url import Database
from newsletter.errors import ConfigError
from newsletter.sources.feedcache import SqliteFeedCache, _utc


class PgFeedCache(SqliteFeedCache):
    """`SqliteFeedCache` over PostgreSQL. Thread-safe (the pool's connections)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.path = Path(database.display())
        self._engine = engine_of(database)
        self._forgotten = False
        ensure_postgres(self._engine, database)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a failure is one line, as SQLite's is (a `ConfigError`)."""
        try:
            with self._engine.begin() as conn:
                yield cast(sqlite3.Connection, PgConnection(conn, serialize_reads=False))
        except SQLAlchemyError as err:
            error = database_error(self.database, err)
            raise ConfigError(problems=error.problems) from err

    def link(self, stories: Iterable[dict[str, str]], now: dt.datetime) -> None:
        when = _utc(now).isoformat()
        pairs = [(one, other, feed, when) for story in stories for one in story
                 for other, feed in story.items() if one != other]
        with self._locked() as db:  # already one transaction
            self._forget(db, _utc(now))
            db.executemany(
                "INSERT INTO feed_aliases (id, alias, alias_feed, last_seen) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(id, alias) DO UPDATE SET "
                "last_seen = excluded.last_seen", pairs)

    def close(self) -> None:
        """Nothing to close: the pooled connections are the process's."""
