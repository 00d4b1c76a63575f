"""The database's schema: `newsletter db upgrade` and `newsletter db status`."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import click

from newsletter.cli.common import App, cli, pass_app, user_errors
from newsletter.db import engine
from newsletter.db.errors import database_error
from newsletter.db.migrate import head, revisions, sqlite_revision, upgrade_postgres


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


def _sqlite_revision(app: App) -> str | None:
    path = app.settings.ledger
    if not path.is_file():
        return None
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro",
                                            uri=True)) as db:
        return sqlite_revision(db)
