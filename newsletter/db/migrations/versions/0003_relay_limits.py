"""Limits shared per relay by all workers, and the scheduler's jobs, on PostgreSQL.

relay_limits and relay_connections are newsletter.workers.limits' tables; apscheduler_jobs
is APScheduler's SQLAlchemyJobStore table (its own layout), which moves from the
schedule.jobs SQLite file into the database. With SQLite nothing changes: there are no
workers, and the job store stays in schedule.jobs.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_table(
        "relay_limits",
        sa.Column("relay", sa.Text, primary_key=True),
        sa.Column("next_slot", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("paused_at", sa.DateTime(timezone=True)),
        sa.Column("pause_reason", sa.Text),
    )
    op.create_table(
        "relay_connections",
        sa.Column("relay", sa.Text, primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("owner", sa.Text),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )
    # APScheduler 3's SQLAlchemyJobStore layout, so it finds its table made (unless a
    # scheduler that started on the database before made it itself).
    if sa.inspect(op.get_bind()).has_table("apscheduler_jobs"):
        return
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), index=True),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_table("apscheduler_jobs")
    op.drop_table("relay_connections")
    op.drop_table("relay_limits")
