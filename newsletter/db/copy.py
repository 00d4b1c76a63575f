"""Moving to PostgreSQL: every row of a SQLite ledger copied into an empty database
(`newsletter db copy`), with the unsubscribe secret, so that the links in issues already
sent keep working and nobody is sent an issue they had."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError

from newsletter.db import engine
from newsletter.db.errors import database_error
from newsletter.db.migrate import ensure_postgres
from newsletter.db.schema import metadata
from newsletter.db.url import Database
from newsletter.errors import ConfigError
from newsletter.sqlitefile import has_tables, open_read_only

# Every table of the SQLite file, parents first; `secrets` has no rows there (a file).
TABLES = ("issues", "issue_variants", "issue_articles", "deliveries", "suppressions",
          "events", "resubscriptions", "webhook_tokens", "readers", "confirmation_mails",
          "forgotten", "forgotten_complaints", "feed_cache", "feed_entries", "feed_aliases")
_BATCH = 1000


def copy_ledger(source: Path, target: Database, secret: str | None) -> dict[str, int]:
    """Copy every row of the SQLite ledger `source` into `target` (which must hold none
    yet) in one transaction, and `secret` (the unsubscribe secret) with them; rows per
    table. The source is only read."""
    db = open_read_only(source, "delivery ledger")
    try:
        if not has_tables(db, {"issues", "deliveries", "suppressions"}):
            raise ConfigError("holds no delivery ledger", file=source, field="FILE",
                              fix="give the SQLite file named by `database:` (or `ledger:`) "
                                  "before the move")
        found = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = "
                                          "'table'")}
        eng = engine(target)
        ensure_postgres(eng, target)
        copied: dict[str, int] = {}
        try:
            with eng.begin() as conn:
                for name in TABLES:
                    if conn.execute(select(func.count()).select_from(
                            metadata.tables[name])).scalar():
                        raise ConfigError(
                            f"the database at {target.display()} already holds rows "
                            f"({name}): the copy goes into an empty database only",
                            field="database", fix="point `database:` at a new database")
                for name in TABLES:
                    copied[name] = _copy(db, conn, name) if name in found else 0
                if secret is not None:
                    conn.execute(text("INSERT INTO secrets (name, value, created) VALUES "
                                      "('unsubscribe', :value, now()::text) ON CONFLICT "
                                      "(name) DO UPDATE SET value = excluded.value"),
                                 {"value": secret})
        except SQLAlchemyError as err:
            raise database_error(target, err) from err
        return copied
    finally:
        db.close()


def _copy(db: sqlite3.Connection, conn: Connection, name: str) -> int:
    table = metadata.tables[name]
    have = {row[1] for row in db.execute(f"PRAGMA table_info({name})")}
    columns = [c.name for c in table.columns if c.name in have]
    cursor = db.execute(f"SELECT {', '.join(columns)} FROM {name}")
    count = 0
    while rows := cursor.fetchmany(_BATCH):
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        count += len(rows)
    return count
