"""The real PostgreSQL for the tests: `NEWSLETTER_TEST_DATABASE_URL`, else this project's
machines' server (postgresql://postgres@127.0.0.1:5432/test).

Each test that asks for `pg_url` gets a database of its own, made from nothing and dropped
afterwards, so tests never see each other's rows. Where no server answers, the tests skip
with the reason; under CI=true that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("NEWSLETTER_TEST_DATABASE_URL") or DEFAULT_URL


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI=true, where every real-server test must run, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    pytest.skip(reason)


def admin_connection(url: str | None = None):  # type: ignore[no-untyped-def]
    """An autocommit psycopg connection to the server (skips where there is none)."""
    import psycopg

    url = url or server_url()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as err:
        unavailable(f"no PostgreSQL at {url} ({' '.join(str(err).split())}); set "
                     "NEWSLETTER_TEST_DATABASE_URL")
        raise


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped after the test."""
    url = server_url()
    name = f"nltest_{uuid.uuid4().hex[:12]}"
    with admin_connection(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(url, name)
    finally:
        from newsletter.db import _engine

        _engine.cache_clear()  # pooled connections to it would keep the drop waiting
        with admin_connection(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
