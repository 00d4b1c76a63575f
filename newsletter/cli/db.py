"""The database's schema: `newsletter db upgrade` and `newsletter db status`."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import click

from newsletter.cli.common import App, cli, pass_app, user_errors
from newsletter.db import engine
from newsletter.db.errors import database_error
from newsletter.db.migrate import head, revisions, sqlite_revision, upgrade_postgres
from newsletter.errors import ConfigError


@cli.group("db")
def db_group() -> None:
    """The database's tables: which schema revision they are at, and upgrading them."""


@db_group.command("upgrade")
@pass_app
@user_errors
def upgrade(app: App) -> None:
    """Apply the pending schema migrations (once, from one machine)."""
    database = app.settings.database_config
    if database.is_postgres:
        before, after = upgrade_postgres(engine(database), database)
    else:
        from newsletter.ledger import SqliteLedger

        before = _sqlite_revision(app)
        SqliteLedger(app.settings.ledger).close()  # made, or brought to head, on open
        after = _sqlite_revision(app) or head()
    where = database.display()
    if before == after:
        click.echo(f"{where}: already at schema revision {after} (the newest)")
    else:
        click.echo(f"{where}: upgraded from schema revision {before or 'none'} to {after}")


@db_group.command("status")
@pass_app
@user_errors
def status(app: App) -> None:
    """Show the database's schema revision and whether it needs `db upgrade`."""
    database = app.settings.database_config
    if database.is_postgres:
        from sqlalchemy.exc import SQLAlchemyError

        from newsletter.db.migrate import _current

        try:
            with engine(database).connect() as conn:
                current = _current(conn)
        except SQLAlchemyError as err:
            raise database_error(database, err) from err
    elif not os.path.lexists(app.settings.ledger):
        click.echo(f"{database.display()}: no database yet (made by the first run)")
        return
    else:
        current = _sqlite_revision(app)
    if current == head():
        state = "up to date"
    elif current is None:
        state = "made on first use" if database.is_postgres else \
            "from before migrations: upgraded in place when next opened"
    elif current not in revisions():
        state = "newer than this program: upgrade newsletter"
    else:
        state = "run `newsletter db upgrade`"
    click.echo(f"{database.display()}: schema revision {current or 'none'} "
               f"(this program's: {head()}): {state}")


@db_group.command("copy")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@pass_app
@user_errors
def copy(app: App, file: Path) -> None:
    """Copy every row of the SQLite ledger FILE (and the unsubscribe.key beside it) into
    the PostgreSQL database `database:` names, which must be empty: the move to
    PostgreSQL, without sending anyone an issue twice or breaking a link already sent."""
    from newsletter.db.copy import copy_ledger
    from newsletter.secret import SECRET_FILE, _read

    database = app.settings.database_config
    if not database.is_postgres:
        raise ConfigError("is not a PostgreSQL URL: the copy goes from SQLite into "
                          "PostgreSQL", field="database",
                          fix="set database: postgresql://user@host/dbname first")
    key = file.parent / SECRET_FILE
    secret = _read(key) if key.exists() else None
    copied = copy_ledger(file, database, secret)
    for table, count in copied.items():
        if count:
            click.echo(f"{table}: {count}")
    click.echo(f"copied {sum(copied.values())} rows from {file} to {database.display()}"
               + ("; the unsubscribe secret too" if secret else ""))


def _sqlite_revision(app: App) -> str | None:
    path = app.settings.ledger
    if not path.is_file():
        return None
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro",
                                            uri=True)) as db:
        return sqlite_revision(db)
