"""Alembic's scripts for the program's tables (see newsletter/db/migrate.py)."""
