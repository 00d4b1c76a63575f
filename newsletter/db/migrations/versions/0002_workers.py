"""Workers: procrastinate's schema, issue templates, delivery batches and leases.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # the workers need PostgreSQL; the embedded SQLite ledger has no queue
    from newsletter.workers import schema  # (procrastinate: not loaded for SQLite)

    schema.upgrade(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    from newsletter.workers import schema

    schema.downgrade(op.get_bind())
