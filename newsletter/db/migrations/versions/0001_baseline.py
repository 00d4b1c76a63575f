"""Baseline: every table of the program as of the first migration, where it is missing.

A SQLite ledger from before migrations already has them (its schema scripts made them);
PostgreSQL gets them all here.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from newsletter.db.schema import DELIVERY_KEY_INDEX, metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# Frozen here: a later revision adds its tables itself (op.create_table), never by adding
# them to this list.
TABLES = ("issues", "issue_variants", "issue_articles", "deliveries", "suppressions",
          "events", "resubscriptions", "webhook_tokens", "readers", "confirmation_mails",
          "forgotten", "forgotten_complaints", "feed_cache", "feed_entries", "feed_aliases",
          "secrets")


def upgrade() -> None:
    bind = op.get_bind()
    # checkfirst: only what is missing, so an old SQLite file keeps its tables and rows.
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES],
                        checkfirst=True)
    op.execute(DELIVERY_KEY_INDEX[bind.dialect.name])


def downgrade() -> None:
    bind = op.get_bind()
    metadata.drop_all(bind, tables=[metadata.tables[name] for name in TABLES],
                      checkfirst=True)
