"""A ledger on each backend, for store tests that must hold on both: the SQLite file and
a PostgreSQL database of the test's own (`pg_url`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.db.url import parse_database
from newsletter.ledger import SqliteLedger

LedgerFactory = Callable[[], SqliteLedger]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    """Opens the test's ledger (again, on each call: as another process would)."""
    opened: list[SqliteLedger] = []
    if request.param == "sqlite":
        def make() -> SqliteLedger:
            opened.append(SqliteLedger(tmp_path / "l.sqlite3"))
            return opened[-1]
    else:
        from newsletter.db.pgledger import PgLedger

        database = parse_database(request.getfixturevalue("pg_url"))

        def make() -> SqliteLedger:
            opened.append(PgLedger(database))
            return opened[-1]
    yield make
    for ledger in opened:
        ledger.close()
