"""A database ready for the workers (Alembic to head), and an issue planned in it."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from newsletter.db import parse_database
from newsletter.db.migrate import upgrade_postgres


def prepare(url: str) -> None:
    """Bring the empty database at `url` to head (0001, the ledger; 0002, the workers)."""
    database = parse_database(url)
    engine = create_engine(database.sqlalchemy_url)
    try:
        upgrade_postgres(engine, database)
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
