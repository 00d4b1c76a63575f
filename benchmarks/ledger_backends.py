"""Benchmark: the ledger's hot paths on SQLite and on PostgreSQL, in one run.

    python benchmarks/ledger_backends.py [--readers 5000] [--url postgresql://postgres@127.0.0.1/test]

Per backend: `plan` of N deliveries (one transaction), `record` of each reply (a commit
per reply, as a send over SMTP does), `statuses` of the issue. PostgreSQL's figures are
for a database of its own made on the server at --url (dropped afterwards); the ratio is
PostgreSQL's time over SQLite's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from newsletter.db import parse_database
from newsletter.ledger import SqliteLedger

ISSUE = "bench/2026-11-24"


def run(ledger: SqliteLedger, readers: int) -> dict[str, float]:
    emails = [f"reader{n}@example.com" for n in range(readers)]
    ledger.record_issue(ISSUE, "bench", dt.date(2026, 11, 24), ["a"])
    figures: dict[str, float] = {}

    def timed(name: str, work: Callable[[], object]) -> None:
        start = time.perf_counter()
        work()
        figures[name] = time.perf_counter() - start

    timed("plan", lambda: ledger.plan(ISSUE, ((e, f"<{n:020x}@x>", "pending")
                                              for n, e in enumerate(emails))))
    timed("record", lambda: [ledger.record(ISSUE, e, "sent", "250 ok") for e in emails])
    timed("statuses", lambda: ledger.statuses(ISSUE))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=5000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteLedger(Path(tmp) / "bench.sqlite3")
        lite = run(sqlite, args.readers)
        sqlite.close()
    name = f"nlbench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(args.url)
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        from newsletter.db.pgledger import PgLedger

        url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
        pg = run(PgLedger(parse_database(url)), args.readers)
        from newsletter.db import _engine

        _engine.cache_clear()
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{args.readers} deliveries      SQLite        PostgreSQL    ratio")
    for key in lite:
        per = "" if key == "statuses" else f" ({args.readers / pg[key]:,.0f}/s vs " \
            f"{args.readers / lite[key]:,.0f}/s)"
        print(f"{key:<20} {lite[key] * 1000:9.1f} ms  {pg[key] * 1000:9.1f} ms  "
              f"{pg[key] / lite[key]:5.2f}x{per}")


if __name__ == "__main__":
    main()
