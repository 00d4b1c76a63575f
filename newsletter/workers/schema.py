"""The workers' tables (Alembic revision 0002): procrastinate's own schema, the stored
templates of each issue, and per delivery row what its message needs plus its lease."""

from __future__ import annotations

from procrastinate.schema import SchemaManager
from sqlalchemy import Connection

# The procrastinate release whose schema.sql this revision applies. procrastinate changes
# its schema between minor releases (and ships the SQL migrations between them), so
# pyproject pins the minor: a newer one needs a revision that applies its migrations.
PROCRASTINATE_SCHEMA = "3.10"

_TABLES = """
CREATE TABLE issue_templates (
    issue_id TEXT NOT NULL,
    variant TEXT NOT NULL,          -- templates.variant_key(article ids)
    data TEXT NOT NULL,             -- templates.dump: subject, preheader, html, text, Date
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (issue_id, variant)
);
ALTER TABLE deliveries
    ADD COLUMN address TEXT,        -- as the reader gave it (email is lower-cased)
    ADD COLUMN name TEXT,
    ADD COLUMN variant TEXT,
    ADD COLUMN batch INTEGER,
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN lease_until TIMESTAMPTZ;  -- on the database's clock
CREATE INDEX deliveries_batch ON deliveries (issue_id, batch) WHERE batch IS NOT NULL;
"""

_DROP_TABLES = """
DROP INDEX IF EXISTS deliveries_batch;
ALTER TABLE deliveries
    DROP COLUMN IF EXISTS address, DROP COLUMN IF EXISTS name,
    DROP COLUMN IF EXISTS variant, DROP COLUMN IF EXISTS batch,
    DROP COLUMN IF EXISTS lease_owner, DROP COLUMN IF EXISTS lease_until;
DROP TABLE IF EXISTS issue_templates;
"""

# Every object procrastinate's schema.sql makes is named procrastinate_*.
_DROP_PROCRASTINATE = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT tablename FROM pg_tables
             WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate\\_%' LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', r.tablename);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%' LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.f);
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate\\_%'
               AND t.typtype IN ('e', 'c') LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', r.typname);
    END LOOP;
END $$;
"""


def _raw(conn: Connection, sql: str) -> None:
    # The driver's own execute, without parameters: the SQL is ours or procrastinate's,
    # holds % and : that a parameter parser would misread, and several statements.
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(sql)


def upgrade(conn: Connection) -> None:
    _raw(conn, SchemaManager.get_schema())
    _raw(conn, _TABLES)


def downgrade(conn: Connection) -> None:
    _raw(conn, _DROP_TABLES)
    _raw(conn, _DROP_PROCRASTINATE)
