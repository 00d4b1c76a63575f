"""Alembic's environment: the connection comes from newsletter/db/migrate.py (in
`config.attributes["connection"]`), never from an alembic.ini: the program runs its
migrations itself, wherever it is installed."""

from __future__ import annotations

from alembic import context

from newsletter.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
