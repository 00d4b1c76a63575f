"""Schema migrations (Alembic), run by the program itself.

- SQLite: a file is made by the schema scripts as before. Opening it for writing checks
  its revision (one SELECT): a new file is stamped head; a ledger from before migrations
  (no `alembic_version`) is stamped at the baseline, whose tables its scripts just made,
  then upgraded to head. Alembic itself runs only when there is something to apply.
- PostgreSQL: an empty database is brought to head on first use, under an advisory lock
  (two machines starting at once do not race). A database behind head is an error telling
  to run `newsletter db upgrade`; one ahead of this program is an error too.

Revisions are numbered ("0001", "0002", …), one chain; `head()` reads the highest from the
file names so that opening a ledger never loads Alembic.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.db.errors import advisory_key, database_error
from newsletter.db.url import Database
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")
_LOCK = advisory_key("migrate")


class SchemaError(NewsletterError):
    """The database's tables are not at this program's revision."""


@functools.cache
def revisions() -> tuple[str, ...]:
    """Every revision, oldest first (from the file names in migrations/versions)."""
    found = sorted(m.group(1) for name in (p.name for p in (MIGRATIONS / "versions").iterdir())
                   if (m := _REVISION_FILE.match(name)))
    return tuple(found)


def head() -> str:
    return revisions()[-1]


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration, built here (no alembic.ini), on `connection`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def verdict(current: str | None, database: str) -> SchemaError | None:
    """None when `current` is head; else the error saying what to do."""
    if current == head():
        return None
    if current in revisions():
        return SchemaError(
            f"the database at {database} is at schema revision {current}, this program "
            f"needs {head()}", field="database",
            fix="run `newsletter db upgrade` (once, from one machine), then run the same "
                "command again")
    return SchemaError(
        f"the database at {database} is at schema revision {current}, which this program "
        f"does not know (newest known: {head()})", field="database",
        fix="it was upgraded by a newer newsletter: run that version here too")


# SQLite -------------------------------------------------------------------------------

def sqlite_revision(db: sqlite3.Connection) -> str | None:
    """The file's revision; None when it has no `alembic_version` (before migrations)."""
    try:
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def ensure_sqlite(db: sqlite3.Connection, path: Path, *, new: bool) -> None:
    """Bring the open file (its schema scripts run) to head; see the module docstring."""
    current = sqlite_revision(db)
    if current == head():
        return
    if current is None:
        _stamp(db, head() if new else BASELINE)
        current = sqlite_revision(db)
    if current == head():
        return
    if current not in revisions():
        raise verdict(current, str(path)) or AssertionError(current)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        upgrade_sqlite(path)
    except SQLAlchemyError as err:
        # SQLite's own error, as the ledger reports it (and `for_reading` falls back on).
        if isinstance(orig := getattr(err, "orig", None), sqlite3.Error):
            raise orig from err
        raise


def _stamp(db: sqlite3.Connection, revision: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) "
                   "NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
        if db.execute("SELECT 1 FROM alembic_version").fetchone() is None:  # another won
            db.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (revision,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def upgrade_sqlite(path: Path) -> tuple[str | None, str]:
    """Apply pending migrations to the SQLite file; (from, to)."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool,
                           connect_args={"timeout": 30})
    try:
        with engine.begin() as conn:
            before = _current(conn)
            command.upgrade(alembic_config(conn), "head")
            return before, head()
    finally:
        engine.dispose()


# PostgreSQL ---------------------------------------------------------------------------

_ready: set[str] = set()


def _current(conn: Connection) -> str | None:
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_postgres(engine: Engine, database: Database) -> None:
    """Check the database is at head (once per process); an empty one is upgraded."""
    from sqlalchemy.exc import SQLAlchemyError

    if database.sqlalchemy_url in _ready:
        return
    try:
        with engine.connect() as conn:
            current = _current(conn)
        if current is None:
            upgrade_postgres(engine, database)
        elif (error := verdict(current, database.display())) is not None:
            raise error
    except SQLAlchemyError as err:
        raise database_error(database, err) from err
    _ready.add(database.sqlalchemy_url)


def upgrade_postgres(engine: Engine, database: Database) -> tuple[str | None, str]:
    """Apply pending migrations, one machine at a time; (from, to). Transactional DDL:
    all of a run is applied, or none of it."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
            before = _current(conn)  # another machine may have done it meanwhile
            if before != head():
                if before is not None and before not in revisions():
                    raise verdict(before, database.display()) or AssertionError(before)
                command.upgrade(alembic_config(conn), "head")
    except SQLAlchemyError as err:
        raise database_error(database, err) from err
    _ready.add(database.sqlalchemy_url)
    return before, head()


def forget_checked() -> None:
    """Check every database's revision again (tests that change them)."""
    _ready.clear()
