"""Where the program keeps its tables: a SQLite file (the embedded default) or a
PostgreSQL server named by URL (`database: postgresql://user@host/dbname`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}


@dataclass(frozen=True)
class Database:
    """The `database:` setting, parsed: a PostgreSQL URL or a SQLite path."""

    path: Path | None = None  # the SQLite file
    url: str | None = None  # postgresql://…, as given (a password only from the environment)

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    @property
    def sqlalchemy_url(self) -> str:
        """The URL SQLAlchemy opens: psycopg 3 for PostgreSQL."""
        if self.url is None:
            assert self.path is not None
            return f"sqlite:///{self.path}"
        parts = urlsplit(self.url)
        return urlunsplit(("postgresql+psycopg", *parts[1:]))

    @property
    def libpq_url(self) -> str:
        """The URL for libpq itself (procrastinate's connector, psql)."""
        assert self.url is not None
        return urlunsplit(("postgresql", *urlsplit(self.url)[1:]))

    def display(self) -> str:
        """For messages: the path, or the URL with any password masked."""
        if self.url is None:
            return str(self.path)
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit((parts.scheme, netloc, *parts[2:]))


def is_url(value: str) -> bool:
    return "://" in value


def parse_database(value: str) -> Database:
    """`value` as a database; `ValueError` says what to write instead."""
    if not is_url(value):
        if not value.strip():
            raise ValueError("is empty; give a SQLite file (outbox/newsletter.sqlite3) or a "
                             "postgresql:// URL")
        return Database(path=Path(value))
    parts = urlsplit(value)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(f"{parts.scheme}:// is not supported; use postgresql://user@host/"
                         "dbname, or a SQLite file path")
    if not parts.path.strip("/"):
        raise ValueError("names no database; write postgresql://user@host/dbname")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as err:
        raise ValueError("has a port that is not a number") from err
    return Database(url=value)
