"""A reply recorded in PostgreSQL is on record for good: the commit per reply is what bounds
the duplicates, so it must survive the server crashing (`pg_ctl stop -m immediate`), not
only a clean restart."""

from __future__ import annotations

import datetime as dt

from newsletter.db import _engine
from newsletter.db.pgledger import PgLedger
from newsletter.db.url import parse_database
from tests.machines import private_cluster

ISSUE = "brief/2026-11-24"


def test_every_recorded_reply_survives_a_crash_of_the_server() -> None:
    emails = [f"r{n}@example.org" for n in range(400)]
    with private_cluster() as cluster:
        database = parse_database(cluster.url())
        ledger = PgLedger(database)
        ledger.record_issue(ISSUE, "brief", dt.date(2026, 11, 24), ["a"])
        ledger.plan(ISSUE, [(e, f"<{n}@example.com>", "pending")
                            for n, e in enumerate(emails)])
        for email in emails:  # as the send loop does: one commit per server reply
            ledger.record(ISSUE, email, "sent", "250 accepted")
        cluster.stop("immediate")  # the server crashes: no shutdown checkpoint
        ledger.close()
        _engine.cache_clear()
        cluster.start()
        again = PgLedger(database)
        try:
            statuses = again.statuses(ISSUE)
        finally:
            again.close()
            _engine.cache_clear()
    lost = [e for e in emails if statuses.get(e) != "sent"]
    assert not lost, f"{len(lost)} replies recorded before the crash were lost"
