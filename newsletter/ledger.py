"""The delivery ledger: what went to whom, so that nobody gets an issue twice or not at all.

One row per (issue, subscriber), written the moment the server answers, plus the articles
each issue carried and the suppression list. `Ledger` is the interface the rest of the
program uses; `SqliteLedger` is the implementation (WAL mode, one file, safe to share
between a scheduler and a manual `send`, since a lock keeps them from sending at once).

Every write is one transaction: on record when the method returns, or (disk full,
read-only file) not at all and a `LedgerError` naming the file. The file is created only
where there is none; an empty or foreign file is refused, never replaced (sqlitefile.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from newsletter.errors import ConfigError, DeliveryError
from newsletter.readers.store import SCHEMA as READER_SCHEMA
from newsletter.readers.store import ReaderStore
from newsletter.sqlitefile import failure, has_tables, open_database, open_read_only
from newsletter.suppressions import SCHEMA as SUPPRESSION_SCHEMA
from newsletter.suppressions import SuppressionStore, migrate

DeliveryStatus = Literal["pending", "sent", "failed-temporary", "failed-permanent", "skipped"]
UNSENT: tuple[DeliveryStatus, ...] = ("pending", "failed-temporary")
ALL_LISTS = "*"

__all__ = ["ALL_LISTS", "UNSENT", "Delivery", "DeliveryStatus", "IssueRecord", "Ledger",
           "LedgerError", "SqliteLedger", "open_database"]


class LedgerError(DeliveryError):
    """The ledger cannot be written (disk full, read-only): nothing more may be sent, since
    a reply that cannot be recorded would be sent again by the next run."""


@dataclass(frozen=True)
class Delivery:
    """One row of the ledger."""

    issue_id: str
    email: str
    message_id: str
    status: DeliveryStatus
    attempts: int = 0
    reply: str = ""
    updated: str = ""


@dataclass(frozen=True)
class IssueRecord:
    issue_id: str
    list_id: str
    date: dt.date
    article_ids: tuple[str, ...]  # lead first, then headlines in order
    state: str  # sending | complete | paused
    note: str = ""


class Ledger(Protocol):
    """What the delivery loop needs from a ledger; another database can implement it."""

    def record_issue(self, issue_id: str, list_id: str, date: dt.date,
                     article_ids: Iterable[str]) -> IssueRecord: ...
    def issue(self, issue_id: str) -> IssueRecord | None: ...
    def issues(self, list_id: str | None = None, date: dt.date | None = None
               ) -> list[IssueRecord]: ...
    def set_state(self, issue_id: str, state: str, note: str = "") -> None: ...
    def record_variants(self, issue_id: str, variants: dict[str, tuple[str, ...]]) -> None: ...
    def variants(self, issue_id: str) -> dict[str, tuple[str, ...]]: ...
    def record_articles(self, issue_id: str, articles: dict[str, str]) -> None: ...
    def recorded_articles(self, issue_id: str) -> dict[str, str]: ...
    def articles_sent_before(self, list_id: str, date: dt.date,
                             topics: str = "") -> frozenset[str]: ...
    def plan(self, issue_id: str, deliveries: Iterable[tuple[str, str, DeliveryStatus]]
             ) -> None: ...
    def deliveries(self, issue_id: str) -> dict[str, Delivery]: ...
    def statuses(self, issue_id: str) -> dict[str, DeliveryStatus]: ...
    def statuses_of(self, issue_id: str, emails: Sequence[str]
                    ) -> dict[str, DeliveryStatus]: ...
    def record(self, issue_id: str, email: str, status: DeliveryStatus, reply: str) -> None: ...
    def record_many(self, issue_id: str,
                    outcomes: Iterable[tuple[str, DeliveryStatus, str]]) -> None: ...
    def reset(self, issue_id: str, emails: Iterable[str] | None = None) -> None: ...
    def suppress(self, list_id: str, email: str, reason: str,
                 evidence: dict[str, Any] | None = None) -> bool: ...
    def suppressed(self, list_id: str) -> dict[str, str]: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS issues (
    issue_id TEXT PRIMARY KEY,
    list_id TEXT NOT NULL,
    date TEXT NOT NULL,
    articles TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'sending',
    note TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS issue_variants (
    issue_id TEXT NOT NULL,
    topics TEXT NOT NULL,         -- the readers' topics, sorted, comma-separated
    articles TEXT NOT NULL,       -- what those readers get: lead first, then headlines
    created TEXT NOT NULL,
    PRIMARY KEY (issue_id, topics)
);
CREATE TABLE IF NOT EXISTS issue_articles (
    issue_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    data TEXT NOT NULL,           -- the article as sent (JSON), for when its source is gone
    PRIMARY KEY (issue_id, article_id)
);
CREATE TABLE IF NOT EXISTS deliveries (
    issue_id TEXT NOT NULL,
    email TEXT NOT NULL,          -- lower-cased: the same mailbox is one row
    message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reply TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (issue_id, email)
);
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (issue_id, status);
CREATE TABLE IF NOT EXISTS suppressions (
    list_id TEXT NOT NULL,        -- '*' for every list
    email TEXT NOT NULL,
    reason TEXT NOT NULL,         -- one of suppressions.REASONS
    created TEXT NOT NULL,
    evidence TEXT NOT NULL DEFAULT '{}',  -- JSON: kind, status, diagnostic, issue, source…
    PRIMARY KEY (list_id, email)
);
"""


_LEDGER_TABLES = {"issues", "issue_variants", "issue_articles", "deliveries", "suppressions"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class SqliteLedger(SuppressionStore, ReaderStore):
    """The ledger in one SQLite file. Thread-safe: one connection behind a lock."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open (or create) the ledger at `path`; `read_only` opens an existing one for
        reading alone, where it cannot be written (see `open_read_only`)."""
        self.path = path
        new = not os.path.lexists(path)
        self._db = (open_read_only(path, "delivery ledger") if read_only
                    else open_database(path, _SCHEMA, "delivery ledger"))
        self._lock = threading.Lock()
        if not read_only:
            from newsletter.db.migrate import ensure_sqlite

            try:
                migrate(self._db)
                self._db.executescript(SUPPRESSION_SCHEMA)
                self._db.executescript(READER_SCHEMA)
                # The schema scripts made today's tables; Alembic's revision follows.
                ensure_sqlite(self._db, path, new=new)
            except sqlite3.Error as err:
                self._db.close()
                raise self._error(err) from err
            except BaseException:
                self._db.close()
                raise

    @classmethod
    def for_reading(cls, path: Path) -> SqliteLedger | None:
        """The ledger for a command that only reads it (`status`, `compose`, `preview`,
        `check`, a dry run): opened as usual, else read-only when the file or its folder
        cannot be written; None when the file holds no ledger yet (only a feed cache)."""
        try:
            return cls(path)
        except (ConfigError, LedgerError) as err:
            # LedgerError: the file opened, but bringing its tables up to date (a ledger
            # from before the reader tables) could not be written; reading needs none.
            if not isinstance(err.__cause__, sqlite3.Error | OSError):
                raise  # not ours, empty, a folder…: the refusal stands
            try:
                ledger = cls(path, read_only=True)
            except ConfigError:
                raise err from None
        if not has_tables(ledger._db, _LEDGER_TABLES):
            ledger.close()
            return None
        return ledger

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is on record when this returns, or none of it."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back already
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                with suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                raise self._error(err) from err

    def _reply_transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """The transaction of a server's reply: one a message, so it must be quick; as
        durable as `synchronous=NORMAL` makes it (see sqlitefile.py)."""
        return self._transaction()

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise self._error(err) from err

    def _error(self, err: sqlite3.Error) -> LedgerError:
        why, fix = failure(self.path, err)
        return LedgerError(f"cannot write the delivery ledger: {why}", file=self.path,
                           field="ledger", fix=fix + "; whoever was not recorded as sent "
                           "is still pending")

    # issues ---------------------------------------------------------------------------

    def record_issue(self, issue_id: str, list_id: str, date: dt.date,
                     article_ids: Iterable[str]) -> IssueRecord:
        """Remember what an issue carries; the first record wins, so re-runs send the same."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO issues (issue_id, list_id, date, articles, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (issue_id, list_id, date.isoformat(), json.dumps(list(article_ids)), _now()))
        record = self.issue(issue_id)
        assert record is not None
        return record

    def issue(self, issue_id: str) -> IssueRecord | None:
        rows = self._query("SELECT issue_id, list_id, date, articles, state, note FROM issues "
                           "WHERE issue_id = ?", (issue_id,))
        return _issue_record(rows[0]) if rows else None

    def issues(self, list_id: str | None = None,
               date: dt.date | None = None) -> list[IssueRecord]:
        rows = self._query(
            "SELECT issue_id, list_id, date, articles, state, note FROM issues "
            "WHERE (? IS NULL OR list_id = ?) AND (? IS NULL OR date = ?) "
            "ORDER BY date, list_id",
            (list_id, list_id, date and date.isoformat(), date and date.isoformat()))
        return [_issue_record(row) for row in rows]

    def set_state(self, issue_id: str, state: str, note: str = "") -> None:
        with self._transaction() as db:
            db.execute("UPDATE issues SET state = ?, note = ? WHERE issue_id = ?",
                       (state, note, issue_id))

    def record_variants(self, issue_id: str, variants: dict[str, tuple[str, ...]]) -> None:
        """Remember each topic variant's articles (topic key → ids); the first record wins."""
        now = _now()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO issue_variants (issue_id, topics, articles, created) "
                "VALUES (?, ?, ?, ?)",
                [(issue_id, key, json.dumps(list(ids)), now) for key, ids in variants.items()])

    def variants(self, issue_id: str) -> dict[str, tuple[str, ...]]:
        rows = self._query("SELECT topics, articles FROM issue_variants WHERE issue_id = ?",
                           (issue_id,))
        return {topics: tuple(json.loads(articles)) for topics, articles in rows}

    def record_articles(self, issue_id: str, articles: dict[str, str]) -> None:
        """Keep each article the issue carries (id → JSON) as it was when first recorded: a
        feed may have dropped it by the time a later time zone's readers get the issue."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO issue_articles (issue_id, article_id, data) "
                "VALUES (?, ?, ?)", [(issue_id, key, data) for key, data in articles.items()])

    def recorded_articles(self, issue_id: str) -> dict[str, str]:
        rows = self._query("SELECT article_id, data FROM issue_articles WHERE issue_id = ?",
                           (issue_id,))
        return dict(rows)

    def articles_sent_before(self, list_id: str, date: dt.date,
                             topics: str = "") -> frozenset[str]:
        """Articles that earlier issues of the list carried to its readers of `topics`
        (a topic key; "" for the general issue), where at least one reader got the issue."""
        sent = ("EXISTS (SELECT 1 FROM deliveries d WHERE d.issue_id = i.issue_id "
                "AND status = 'sent')")
        if topics:
            rows = self._query(
                "SELECT v.articles FROM issue_variants v JOIN issues i USING (issue_id) "
                f"WHERE i.list_id = ? AND i.date < ? AND v.topics = ? AND {sent}",
                (list_id, date.isoformat(), topics))
        else:
            rows = self._query(f"SELECT articles FROM issues i WHERE list_id = ? AND date < ? "
                               f"AND {sent}", (list_id, date.isoformat()))
        return frozenset(a for (articles,) in rows for a in json.loads(articles))

    # deliveries -----------------------------------------------------------------------

    def plan(self, issue_id: str,
             deliveries: Iterable[tuple[str, str, DeliveryStatus]]) -> None:
        """Add a row per (email, message_id, status) not yet in the ledger; keep existing ones.

        A skipped row becomes pending when its reader is back, and vice versa for unsent rows.
        """
        now = _now()
        with self._transaction() as db:
            # executemany: streamed by SQLite, sent in batches by PostgreSQL (pipelined).
            db.executemany(
                "INSERT INTO deliveries (issue_id, email, message_id, status, created, "
                "updated) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (issue_id, email) DO "
                "UPDATE SET status = excluded.status, updated = excluded.updated "
                "WHERE (deliveries.status = 'skipped' AND excluded.status = 'pending') "
                "OR (deliveries.status IN ('pending', 'failed-temporary') "
                "    AND excluded.status = 'skipped')",
                ((issue_id, email.lower(), message_id, status, now, now)
                 for email, message_id, status in deliveries))

    def deliveries(self, issue_id: str) -> dict[str, Delivery]:
        rows = self._query("SELECT issue_id, email, message_id, status, attempts, reply, "
                           "updated FROM deliveries WHERE issue_id = ?", (issue_id,))
        return {row[1]: Delivery(*row) for row in rows}

    def statuses(self, issue_id: str) -> dict[str, DeliveryStatus]:
        """Each address's status: what a run needs, lighter than `deliveries`."""
        rows = self._query("SELECT email, status FROM deliveries WHERE issue_id = ?",
                           (issue_id,))
        return dict(rows)

    def statuses_of(self, issue_id: str, emails: Sequence[str]) -> dict[str, DeliveryStatus]:
        """The status of each of `emails` (a batch of them) that has a row, by lowercase
        address: a long list is looked up a batch at a time, never held whole."""
        found: dict[str, DeliveryStatus] = {}
        for start in range(0, len(emails), 500):
            part = [email.lower() for email in emails[start:start + 500]]
            found.update(self._query(
                "SELECT email, status FROM deliveries WHERE issue_id = ? AND email IN ("
                + ", ".join("?" * len(part)) + ")", (issue_id, *part)))
        return found

    def record(self, issue_id: str, email: str, status: DeliveryStatus, reply: str) -> None:
        """Store one server reply; committed (and synced) before this returns."""
        with self._reply_transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = ?, reply = ?, attempts = attempts + 1, "
                "updated = ? WHERE issue_id = ? AND email = ?",
                (status, reply, _now(), issue_id, email.lower()))

    def record_many(self, issue_id: str,
                    outcomes: Iterable[tuple[str, DeliveryStatus, str]]) -> None:
        """Store many (email, status, reply) in one transaction (for idempotent backends)."""
        now = _now()
        with self._reply_transaction() as db:
            db.executemany(
                "UPDATE deliveries SET status = ?, reply = ?, attempts = attempts + 1, "
                "updated = ? WHERE issue_id = ? AND email = ?",
                [(status, reply, now, issue_id, email.lower()) for email, status, reply
                 in outcomes])

    def reset(self, issue_id: str, emails: Iterable[str] | None = None) -> None:
        """Mark delivered or failed rows pending again (`send --resend`): every row, or only
        those of `emails` (a resend to one time zone must not re-arm the others)."""
        with self._transaction() as db:
            if emails is None:
                db.execute("UPDATE deliveries SET status = 'pending', attempts = 0, "
                           "updated = ? WHERE issue_id = ? AND status != 'skipped'",
                           (_now(), issue_id))
            else:
                db.executemany(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, updated = ? "
                    "WHERE issue_id = ? AND email = ? AND status != 'skipped'",
                    [(_now(), issue_id, email.lower()) for email in emails])
            db.execute("UPDATE issues SET state = 'sending', note = '' WHERE issue_id = ?",
                       (issue_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _issue_record(row: tuple) -> IssueRecord:
    issue_id, list_id, date, articles, state, note = row
    return IssueRecord(issue_id, list_id, dt.date.fromisoformat(date),
                       tuple(json.loads(articles)), state, note)
