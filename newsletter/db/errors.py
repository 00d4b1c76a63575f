"""PostgreSQL's failures as the program's one-line errors (a `LedgerError`, never a
traceback), with the password masked."""

from __future__ import annotations

import hashlib

from newsletter.db.url import Database
from newsletter.ledger import LedgerError

_FIX = ("check that PostgreSQL runs and that `database:` (or NEWSLETTER_DATABASE) names it, "
        "then run the same command again; whoever was not recorded as sent is still pending")


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit number) for a lock named `name`."""
    return int.from_bytes(hashlib.sha256(f"newsletter:{name}".encode()).digest()[:8], "big",
                          signed=True)


def reason(err: BaseException) -> str:
    """What the server or libpq said, on one line, without the URL's password."""
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip().splitlines()
    line = text[0] if text else type(orig).__name__
    # libpq: 'connection failed: connection to server at "h", port 5432 failed: why'
    if "failed:" in line:
        line = line.rsplit("failed:", 1)[1].strip()
    return " ".join(line.split()) or type(orig).__name__


def database_error(database: Database, err: BaseException) -> LedgerError:
    """`err` (SQLAlchemy's or psycopg's) as one line naming the database."""
    why = reason(err)
    if _unreachable(err):
        what = f"cannot reach the database at {database.display()}: {why.lower()}"
    else:
        what = f"the database at {database.display()} failed: {why}"
    return LedgerError(what, field="database", fix=_FIX)


def _unreachable(err: BaseException) -> bool:
    import psycopg
    from sqlalchemy import exc

    orig = getattr(err, "orig", None) or err
    if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
        return True
    # A connection that could not be made or was lost has no SQLSTATE of a statement.
    return isinstance(orig, psycopg.OperationalError) and getattr(orig, "sqlstate", None) in (
        None, "08000", "08001", "08003", "08004", "08006", "57P01", "57P02", "57P03")
