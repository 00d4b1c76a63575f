"""A database ready for the workers: the ledger's tables (Alembic, once revision 0001 is
there; until then the SQLite ledger's own columns) plus revision 0002."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from newsletter.db import parse_database
from newsletter.workers import schema

# The SQLite ledger's tables, for as long as the PostgreSQL baseline is not on this branch.
_BASE = """
CREATE TABLE IF NOT EXISTS issues (issue_id TEXT PRIMARY KEY, list_id TEXT NOT NULL,
    date TEXT NOT NULL, articles TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'sending',
    note TEXT NOT NULL DEFAULT '', created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (issue_id TEXT NOT NULL, email TEXT NOT NULL,
    message_id TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    reply TEXT NOT NULL DEFAULT '', created TEXT NOT NULL, updated TEXT NOT NULL,
    PRIMARY KEY (issue_id, email));
"""


def prepare(url: str) -> None:
    """Bring the database at `url` to revision 0002."""
    engine = create_engine(parse_database(url).sqlalchemy_url)
    try:
        with engine.begin() as conn:
            conn.connection.driver_connection.execute(_BASE)  # type: ignore[union-attr]
            schema.upgrade(conn)
    finally:
        engine.dispose()


def plan_rows(url: str, issue_id: str, list_id: str, emails: list[str], domain: str) -> None:
    """An issue and a pending row per reader, as the ledger's plan writes them."""
    from newsletter.message import message_id

    engine = create_engine(parse_database(url).sqlalchemy_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO issues (issue_id, list_id, date, articles, created) "
                              "VALUES (:i, :l, '2026-11-24', '[]', 'now')"),
                         {"i": issue_id, "l": list_id})
            conn.execute(text("INSERT INTO deliveries (issue_id, email, message_id, status, "
                              "created, updated) VALUES (:i, :e, :m, 'pending', 'now', 'now')"),
                         [{"i": issue_id, "e": e.lower(), "m": message_id(issue_id, e, domain)}
                          for e in emails])
    finally:
        engine.dispose()
