"""The database every table lives in: the embedded SQLite file or PostgreSQL by URL.

`open_ledger(settings)` is how the program opens it; `engine(settings)` gives the
SQLAlchemy engine (psycopg 3 for PostgreSQL) for code that speaks SQLAlchemy Core.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Literal, overload

from newsletter.db.url import Database, parse_database

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.ledger import SqliteLedger
    from newsletter.settings import Settings
    from newsletter.sources.feedcache import SqliteFeedCache

__all__ = ["Database", "engine", "open_feed_cache", "open_ledger", "parse_database"]


@overload
def open_ledger(settings: Settings, *, read_only: bool = False) -> SqliteLedger: ...
@overload
def open_ledger(settings: Settings, *, for_reading: Literal[True]) -> SqliteLedger | None: ...


def open_ledger(settings: Settings, *, read_only: bool = False,
                for_reading: bool = False) -> SqliteLedger | None:
    """The ledger (and every other table) in the configured database.

    `for_reading` is for a command that only reads (`SqliteLedger.for_reading`): a SQLite
    file that cannot be written is opened read-only, and one that holds no ledger yet is
    None. PostgreSQL is opened as usual (an empty database gets its tables).
    """
    database = settings.database_config
    if database.is_postgres:
        from newsletter.db.pgledger import PgLedger

        return PgLedger(database)
    from newsletter.ledger import SqliteLedger

    if for_reading:
        return SqliteLedger.for_reading(settings.ledger)
    return SqliteLedger(settings.ledger, read_only=read_only)


def open_feed_cache(settings: Settings) -> SqliteFeedCache:
    """The feed cache in the configured database (a context manager: closes it)."""
    database = settings.database_config
    if database.is_postgres:
        from newsletter.db.pgfeedcache import PgFeedCache

        return PgFeedCache(database)
    from newsletter.sources.feedcache import SqliteFeedCache

    return SqliteFeedCache(settings.ledger)


@functools.cache
def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine

    # pre_ping: a connection the server dropped (a restart) is replaced, not used.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                         connect_args={"connect_timeout": 10})


def engine(database: Database) -> Engine:
    """One pooled engine per PostgreSQL URL in this process."""
    assert database.is_postgres
    return _engine(database.sqlalchemy_url)
