"""The ledger's store methods on both backends (the SQLite file and PostgreSQL), the SQL
translation between them, and what only PostgreSQL does: the feed cache and the secret in
its tables, writers on several connections at once, errors as one line."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from newsletter.db.sql import Untranslatable, translate
from newsletter.db.url import parse_database
from newsletter.readers.store import NewReader
from newsletter.suppressions import Consequence, StoredEvent
from tests.stores import LedgerFactory

ISSUE = "morning-brief/2026-11-24"
DAY = dt.date(2026, 11, 24)


def mid(n: int) -> str:
    return f"<{n:020x}@news.example.com>"


def test_issues_and_deliveries(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger()
    first = ledger.record_issue(ISSUE, "morning-brief", DAY, ["a", "b"])
    assert ledger.record_issue(ISSUE, "morning-brief", DAY, ["c"]) == first  # first wins
    ledger.plan(ISSUE, [("Ada@Example.com", mid(1), "pending"), ("bo@example.com", mid(2),
                                                                  "skipped")])
    ledger.plan(ISSUE, [("ada@example.com", mid(9), "pending"), ("bo@example.com", mid(2),
                                                                  "pending")])
    assert ledger.statuses(ISSUE) == {"ada@example.com": "pending", "bo@example.com": "pending"}
    ledger.record(ISSUE, "ADA@example.com", "sent", "250 ok")
    ledger.record_many(ISSUE, [("bo@example.com", "failed-temporary", "451 later")])
    again = new_ledger()  # another process sees it all
    rows = again.deliveries(ISSUE)
    assert rows["ada@example.com"].message_id == mid(1)  # planned once, kept
    assert (rows["ada@example.com"].status, rows["ada@example.com"].attempts) == ("sent", 1)
    assert rows["bo@example.com"].reply == "451 later"
    assert again.issues("morning-brief", DAY) == [first] and again.issues("other") == []
    assert again.articles_sent_before("morning-brief", DAY + dt.timedelta(days=1)) == {"a", "b"}
    again.reset(ISSUE, ["bo@example.com"])
    assert again.statuses(ISSUE)["ada@example.com"] == "sent"
    again.reset(ISSUE)
    assert set(again.statuses(ISSUE).values()) == {"pending"}
    again.set_state(ISSUE, "paused", "relay down")
    assert (again.issue(ISSUE).state, again.issue(ISSUE).note) == ("paused", "relay down")
    again.record_variants(ISSUE, {"city": ("a",)})
    assert again.variants(ISSUE) == {"city": ("a",)}
    again.record_articles(ISSUE, {"a": '{"title": "A"}'})
    assert again.recorded_articles(ISSUE) == {"a": '{"title": "A"}'}
    assert again.delivery_by_key(f"{1:020x}") == (ISSUE, "ada@example.com", mid(1))
    assert again.delivery_by_message_id(mid(2)[1:-1]) == (ISSUE, "bo@example.com", mid(2))
    assert again.deliveries_of("ada@example.com")[0][:3] == (ISSUE, "pending", 0)


def test_suppressions_events_and_tokens(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger()
    assert ledger.suppress("morning-brief", "Linus@example.com", "unsubscribed", {"via": "web"})
    assert not ledger.suppress("morning-brief", "linus@example.com", "complaint")
    assert ledger.is_suppressed("morning-brief", "LINUS@example.com")
    assert ledger.suppressed("morning-brief") == {"linus@example.com": "unsubscribed: web"}
    event = StoredEvent("mailbox:1", "mailbox", "bounce-soft", "zoe@example.org",
                        "morning-brief", ISSUE, "4.2.2", "mailbox full", "2026-11-24T07:00:00")
    soft = Consequence("*", "soft-bounces", {"status": "4.2.2"}, soft_limit=2,
                       since="2026-11-01T00:00:00")
    assert ledger.record_event(event, soft) == (True, 1, False)
    assert ledger.record_event(event, soft) == (False, 0, False)  # a replay changes nothing
    second = StoredEvent("mailbox:2", "mailbox", "bounce-soft", "zoe@example.org",
                         "morning-brief", "morning-brief/2026-11-25", "4.2.2", "full",
                         "2026-11-25T07:00:00")
    assert ledger.record_event(second, soft) == (True, 2, True)
    assert ledger.soft_bounces("zoe@example.org", "2026-11-01") == 2
    assert ledger.event_counts(ISSUE) == {"bounce-soft": 1}
    assert [e.event_id for e in ledger.events("zoe@example.org")] == ["mailbox:1", "mailbox:2"]
    lifted = ledger.resubscribe("zoe@example.org", None, "fixed")
    assert [s.reason for s in lifted] == ["soft-bounces"]
    assert ledger.last_lifted("zoe@example.org") is not None
    assert [x.note for x in ledger.resubscriptions()] == ["fixed"]
    assert not ledger.token_seen("ses:t1")
    ledger.remember_token("ses:t1", "2000-01-01")
    assert ledger.token_seen("ses:t1")


def test_readers_import_choose_and_forget(new_ledger: LedgerFactory) -> None:
    from newsletter.readers.store import Choices

    ledger = new_ledger()
    counts = ledger.import_batch(
        [(NewReader("morning-brief", "Imp@Example.com", "Imp"), "confirmed")],
        [("morning-brief", "left@example.com", {"source": "old tool"}, "unsubscribed")])
    assert (counts.added, counts.suppressed) == (1, 1)
    row = ledger.choose("morning-brief", "imp@example.com",
                        Choices(topics=("city",), paused_until=dt.date(2026, 12, 24)))
    assert row.topics == ("city",) and row.paused_until == dt.date(2026, 12, 24)
    ledger.plan(ISSUE, [("imp@example.com", mid(3), "pending")])
    ledger.record(ISSUE, "imp@example.com", "sent", "250 imp@example.com ok")
    ledger.record_event(StoredEvent("x:1", "mailbox", "bounce-hard", "other@example.com",
                                    diagnostic="forwarded for IMP@example.com: gone"))
    removed = ledger.forget("Imp@Example.com")
    assert removed["readers"] == 1 and removed["deliveries"] == 1
    assert removed["named in other readers' records"] == 1
    assert ledger.is_forgotten("imp@example.com")
    assert "imp@example.com" not in str(ledger.events()).lower()
    assert all("imp@" not in d.email for d in ledger.deliveries(ISSUE).values())
    # Forgotten twice (came back between): the digest's rows give way, nothing fails.
    _, row = ledger.sign_up(NewReader("morning-brief", "imp@example.com"))
    assert row is not None and row.nonce
    assert ledger.confirm("morning-brief", "imp@example.com", row.nonce) == "confirmed"
    ledger.plan(ISSUE, [("imp@example.com", mid(4), "pending")])
    ledger.forget("imp@example.com")
    assert len(ledger.deliveries(ISSUE)) == 1


def test_sign_ups_and_suppressions_from_many_connections_at_once(
        new_ledger: LedgerFactory) -> None:
    """What BEGIN IMMEDIATE gives SQLite, on PostgreSQL: a sign-up reads then writes, and
    eight processes' worth of them at once end as one reader per address."""
    ledgers = [new_ledger() for _ in range(4)]
    barrier = threading.Barrier(8)
    results: list[str] = []

    def join(n: int) -> None:
        barrier.wait()
        ledger = ledgers[n % 4]
        results.append(ledger.sign_up(NewReader("morning-brief", "same@example.com"))[0])
        ledger.suppress("*", "same@example.com", "unsubscribed")

    threads = [threading.Thread(target=join, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["new"] + ["pending"] * 7
    assert [s.email for s in ledgers[0].suppressions()] == ["same@example.com"]


def test_the_sqlite_idioms_become_postgresql() -> None:
    assert translate("INSERT OR IGNORE INTO t (a, b) VALUES (?, 'x?')") == (
        "INSERT INTO t (a, b) VALUES (%s, 'x?') ON CONFLICT DO NOTHING")
    assert translate("SELECT 1 FROM t WHERE ? IS NULL OR a LIKE '%.test.%'") == (
        "SELECT 1 FROM t WHERE CAST(%s AS TEXT) IS NULL OR a LIKE '%%.test.%%'")
    assert translate("SELECT rowid, n FROM t WHERE instr(lower(n), ?) > 0") == (
        "SELECT ctid::text, n FROM t WHERE strpos(lower(n), %s) > 0")
    assert translate("UPDATE t SET n = ? WHERE rowid = ?") == (
        "UPDATE t SET n = %s WHERE ctid = CAST(%s AS tid)")
    assert translate("PRAGMA wal_checkpoint(TRUNCATE)") is None
    for sqlite_only in ("UPDATE OR REPLACE t SET a = ?", "SELECT name FROM sqlite_master",
                        "SELECT 'unbalanced"):
        with pytest.raises(Untranslatable):
            translate(sqlite_only)


def test_the_feed_cache_in_postgres(pg_url: str) -> None:
    from newsletter.db.pgfeedcache import PgFeedCache

    now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC)
    with PgFeedCache(parse_database(pg_url)) as cache:
        assert cache.get("https://a.example/feed") is None
        cache.put("https://a.example/feed", '"e1"', None, b"<rss>\x00\xff</rss>", now,
                  "https://a.example/")
        cache.put("https://a.example/feed", '"e2"', "Mon", b"<rss/>", now)
        assert cache.first_seen("urn:1", now) == now
        assert cache.first_seen("urn:1", now + dt.timedelta(days=1)) == now
        cache.link([{"urn:1": "https://a.example/feed", "urn:2": "https://b.example/feed"}],
                   now)
    with PgFeedCache(parse_database(pg_url)) as cache:  # the next run, maybe elsewhere
        got = cache.get("https://a.example/feed")
        assert got is not None and (got.etag, got.body, got.fetched_at) == ('"e2"', b"<rss/>",
                                                                             now)
        assert cache.aliases(["urn:2", "urn:3"]) == {"urn:2": {"urn:1": "https://a.example/feed"}}


def test_every_machine_shares_one_secret_and_the_environment_still_wins(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from newsletter.secret import existing_secret, unsubscribe_secret
    from newsletter.settings import Settings

    for name in ("NEWSLETTER_UNSUBSCRIBE__SECRET", "NEWSLETTER_DATABASE"):
        monkeypatch.delenv(name, raising=False)
    one = Settings(database=pg_url, ledger=tmp_path / "a" / "l.sqlite3")
    other = Settings(database=pg_url, ledger=tmp_path / "b" / "l.sqlite3")
    assert existing_secret(one) is None
    made = unsubscribe_secret(one)
    assert unsubscribe_secret(other) == made and existing_secret(other) == made
    assert not list(tmp_path.rglob("unsubscribe.key"))
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", "x" * 40)
    assert unsubscribe_secret(Settings(database=pg_url)) == "x" * 40


def test_a_database_that_goes_away_is_a_ledger_error_in_one_line(pg_url: str) -> None:
    import psycopg

    from newsletter.db.pgledger import PgLedger
    from newsletter.ledger import LedgerError
    from tests.pg import admin_connection

    ledger = PgLedger(parse_database(pg_url))
    ledger.record_issue(ISSUE, "morning-brief", DAY, [])
    name = pg_url.rsplit("/", 1)[1]
    with admin_connection() as admin:  # the server drops every connection to it, as a restart
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid != pg_backend_pid()", (name,))
    assert ledger.issue(ISSUE) is not None  # pre-ping: reconnected, not an error
    with admin_connection() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid != pg_backend_pid()", (name,))
    try:
        with pytest.raises(LedgerError) as caught:
            ledger.record(ISSUE, "a@example.com", "sent", "250")
        assert len(str(caught.value).splitlines()) == 1
        assert str(caught.value).startswith(f"database: cannot reach the database at {pg_url}")
        assert "still pending" in str(caught.value)
    finally:
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
