"""The suppression list with its evidence, and the events that come back (bounces,
complaints, unsubscribes, providers' reports), in the ledger's SQLite file.

`SuppressionStore` is mixed into `SqliteLedger`: one file, one connection, one lock. Every
suppression keeps why (its reason, one of `REASONS`) and the evidence (kind, DSN status,
diagnostic, issue, source, time). `resubscribe` lifts one and keeps the record and a note.
An event is stored once by its id: a replayed webhook or a mail fetched twice changes
nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from newsletter.readers.store import forgotten_digest

Reason = Literal["unsubscribed", "hard-bounce", "soft-bounces", "complaint", "refused"]
REASONS: tuple[Reason, ...] = ("unsubscribed", "hard-bounce", "soft-bounces", "complaint",
                               "refused")
EventKind = Literal["delivered", "bounce-hard", "bounce-soft", "complaint", "unsubscribed"]
EVENT_KINDS: tuple[EventKind, ...] = ("delivered", "bounce-hard", "bounce-soft", "complaint",
                                      "unsubscribed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,    -- source:id: the same report arriving again is ignored
    source TEXT NOT NULL,         -- mailbox | ses | postmark | mailgun | sendgrid
    kind TEXT NOT NULL,           -- delivered | bounce-hard | bounce-soft | complaint | ...
    email TEXT NOT NULL,          -- the reader the event was attributed to, lower-cased
    list_id TEXT NOT NULL DEFAULT '',
    issue_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',      -- DSN status, e.g. 5.1.1
    diagnostic TEXT NOT NULL DEFAULT '',  -- the remote server's words
    received TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_reader ON events (email, kind, received);
CREATE INDEX IF NOT EXISTS events_issue ON events (issue_id, kind);
CREATE TABLE IF NOT EXISTS resubscriptions (
    list_id TEXT NOT NULL,
    email TEXT NOT NULL,
    reason TEXT NOT NULL,         -- the suppression that was lifted, with its evidence
    evidence TEXT NOT NULL,
    suppressed TEXT NOT NULL,
    lifted TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS webhook_tokens (
    token TEXT PRIMARY KEY,       -- source:token of a signed webhook already taken (replays)
    seen TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_message_id ON deliveries (message_id);
CREATE INDEX IF NOT EXISTS deliveries_key
    ON deliveries (substr(message_id, instr(message_id, '@') - 20, 20));
"""
# The delivery key is the 20 hex digits before the '@' of its Message-ID (message.message_id);
# written exactly as in the index above, so that SQLite uses it.
_KEY = "substr(message_id, instr(message_id, '@') - 20, 20)"


# One per issue: a relay that reports the same issue's failure twice is one bad morning.
# Not counted: X.3 (mail system), X.5 (protocol), X.6 (content) and X.7 (security, policy,
# blocklists) are about us or the message, not the reader's mailbox: a sending address
# blocklisted for three mornings must not suppress every reader at that provider (the same
# rule as a refusal at RCPT, delivery/smtp.py). They are kept as events all the same.
_SOFT_COUNT = ("SELECT count(DISTINCT CASE WHEN issue_id = '' THEN event_id ELSE issue_id END) "
               "FROM events WHERE email = ? AND kind = 'bounce-soft' AND received >= ? "
               "AND substr(status, 3, 1) NOT IN ('3', '5', '6', '7')")


# Asked to be forgotten (`subscribers forget`) and not back on any list by a confirmed
# sign-up since: the digest alone stops their mail, and nothing may store the address again.
_ERASED = ("SELECT 1 FROM forgotten WHERE digest = ? AND NOT EXISTS (SELECT 1 FROM readers "
           "WHERE email = ? AND state = 'confirmed' AND origin != 'file')")


def _erased(db: sqlite3.Connection, email: str) -> bool:
    return db.execute(_ERASED, (forgotten_digest(email), email)).fetchone() is not None


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Suppression:
    list_id: str  # '*' for every list
    email: str
    reason: str
    evidence: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def describe(self) -> str:
        """One line: the reason, then the evidence that matters most."""
        e = self.evidence
        parts = [e[k] for k in ("status", "issue", "detail", "diagnostic", "reply", "via",
                                "source") if e.get(k)]
        return f"{self.reason}: {'; '.join(parts)}" if parts else self.reason


@dataclass(frozen=True)
class Lifted:
    """A suppression that `resubscribe` lifted, when, and the note given."""

    suppression: Suppression
    lifted: str
    note: str = ""


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    source: str
    kind: str
    email: str
    list_id: str = ""
    issue_id: str = ""
    status: str = ""
    diagnostic: str = ""
    received: str = ""


@dataclass(frozen=True)
class Consequence:
    """The suppression an event brings: at once, or (soft bounces) once there are
    `soft_limit` of them since `since`."""

    list_id: str
    reason: Reason
    evidence: dict[str, str]
    soft_limit: int = 0
    since: str = ""


def _json(evidence: dict[str, Any]) -> str:
    return json.dumps({k: str(v) for k, v in evidence.items() if v not in (None, "")},
                      ensure_ascii=False)


def migrate(db: sqlite3.Connection) -> None:
    """Bring a ledger of an earlier version up to this one: evidence beside each
    suppression (its old free-text reason kept as the detail)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(suppressions)")}
    if "evidence" in columns:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE suppressions ADD COLUMN evidence TEXT NOT NULL DEFAULT '{}'")
        for rowid, reason in db.execute("SELECT rowid, reason FROM suppressions").fetchall():
            if reason in REASONS:
                continue
            kind = "unsubscribed" if "unsubscribe" in reason.lower() else "refused"
            db.execute("UPDATE suppressions SET reason = ?, evidence = ? WHERE rowid = ?",
                       (kind, json.dumps({"detail": reason}), rowid))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SuppressionStore:
    """The suppression and event methods of the ledger (see module docstring)."""

    # Both come from SqliteLedger, which mixes this class in: its one connection and lock.
    _transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _query: Callable[..., list[tuple]]

    def _has_evidence(self) -> bool:
        # A ledger of an earlier version opened read-only was not migrated.
        return any(row[1] == "evidence" for row in self._query(
            "PRAGMA table_info(suppressions)"))

    def _has_table(self, name: str) -> bool:
        # Nor does it have the tables this version added (events, resubscriptions).
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                "AND name = ?", (name,)))

    # suppressions ---------------------------------------------------------------------

    def suppress(self, list_id: str, email: str, reason: str,
                 evidence: dict[str, Any] | None = None) -> bool:
        """Never mail `email` on `list_id` (or `ALL_LISTS`) again. False if it already was
        (the first suppression and its evidence stay)."""
        data = _json(evidence or {})
        with self._transaction() as db:
            if _erased(db, email.lower()):
                return False  # never mailed anyway; storing it would undo the erasure
            cursor = db.execute(
                "INSERT OR IGNORE INTO suppressions (list_id, email, reason, evidence, "
                "created) VALUES (?, ?, ?, ?, ?)", (list_id, email.lower(), reason, data, now()))
            return cursor.rowcount == 1

    def suppressions(self, list_id: str | None = None) -> list[Suppression]:
        """Every suppression (of `list_id` and of every list, when given), oldest first."""
        evidence = "evidence" if self._has_evidence() else "'{}'"
        rows = self._query(
            f"SELECT list_id, email, reason, {evidence}, created FROM suppressions "
            "WHERE ? IS NULL OR list_id IN (?, '*') ORDER BY created, email",
            (list_id, list_id))
        return [Suppression(lst, email, reason, _evidence(data), created)
                for lst, email, reason, data, created in rows]

    def suppressed(self, list_id: str) -> dict[str, str]:
        """Suppressed addresses (lower-cased) of a list, each with one line of why."""
        return {s.email: s.describe() for s in self.suppressions(list_id)}

    def is_suppressed(self, list_id: str, email: str) -> bool:
        """Whether `email` is suppressed on `list_id` or on every list: one lookup in the
        primary key's index, however long the list."""
        return bool(self._query("SELECT 1 FROM suppressions WHERE list_id IN (?, '*') "
                                "AND email = ? LIMIT 1", (list_id, email.lower())))

    def resubscribe(self, email: str, list_id: str | None, note: str) -> list[Suppression]:
        """Lift the suppressions of `email` (on `list_id` and on every list, or all of its
        suppressions without one), keeping each with `note`. Returns what was lifted."""
        email = email.lower()
        lifted = [s for s in self.suppressions(list_id) if s.email == email]
        stamp = now()
        with self._transaction() as db:
            for s in lifted:
                db.execute(
                    "INSERT INTO resubscriptions (list_id, email, reason, evidence, "
                    "suppressed, lifted, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (s.list_id, email, s.reason, json.dumps(s.evidence), s.created, stamp,
                     note))
                db.execute("DELETE FROM suppressions WHERE list_id = ? AND email = ?",
                           (s.list_id, email))
        return lifted

    def resubscriptions(self, email: str | None = None) -> list[Lifted]:
        """Every suppression that was lifted (of `email`, when given), oldest first."""
        if not self._has_table("resubscriptions"):
            return []
        rows = self._query(
            "SELECT list_id, email, reason, evidence, suppressed, lifted, note "
            "FROM resubscriptions WHERE ? IS NULL OR email = ? ORDER BY lifted, email",
            (email and email.lower(), email and email.lower()))
        return [Lifted(Suppression(lst, addr, reason, _evidence(data), suppressed), lifted,
                       note) for lst, addr, reason, data, suppressed, lifted, note in rows]

    def last_lifted(self, email: str) -> str | None:
        rows = self._query("SELECT max(lifted) FROM resubscriptions WHERE email = ?",
                           (email.lower(),))
        return rows[0][0] if rows else None

    # events ---------------------------------------------------------------------------

    def record_event(self, event: StoredEvent, then: Consequence | None = None
                     ) -> tuple[bool, int, bool]:
        """Keep one event and, in the same transaction, what follows from it.

        Returns (new, soft bounces counted, suppressed now). An event whose id is on record
        (a replay, a mail fetched twice) changes nothing: (False, 0, False). With
        `then.soft_limit`, the suppression happens only when the reader's soft bounces
        since `then.since` reach it.
        """
        with self._transaction() as db:
            if _erased(db, event.email.lower()):
                # Kept as an event of nobody (counted in `status`), no address, no
                # diagnostic (a server's words quote the address), no suppression.
                cursor = db.execute(
                    "INSERT OR IGNORE INTO events (event_id, source, kind, email, list_id, "
                    "issue_id, status, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (event.event_id, event.source, event.kind,
                     f"forgotten:{forgotten_digest(event.email)[:16]}", event.list_id,
                     event.issue_id, event.status, event.received or now()))
                return cursor.rowcount == 1, 0, False
            cursor = db.execute(
                "INSERT OR IGNORE INTO events (event_id, source, kind, email, list_id, "
                "issue_id, status, diagnostic, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.event_id, event.source, event.kind, event.email.lower(), event.list_id,
                 event.issue_id, event.status, event.diagnostic, event.received or now()))
            if cursor.rowcount != 1:
                return False, 0, False
            if then is None:
                return True, 0, False
            count = 0
            if then.soft_limit:
                (count,) = db.execute(_SOFT_COUNT, (event.email.lower(), then.since)).fetchone()
                if count < then.soft_limit:
                    return True, count, False
            evidence = dict(then.evidence, count=str(count)) if count else then.evidence
            cursor = db.execute(
                "INSERT OR IGNORE INTO suppressions (list_id, email, reason, evidence, "
                "created) VALUES (?, ?, ?, ?, ?)",
                (then.list_id, event.email.lower(), then.reason, _json(evidence), now()))
            return True, count, cursor.rowcount == 1

    def has_event(self, event_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM events WHERE event_id = ?", (event_id,)))

    def soft_bounces(self, email: str, since: str) -> int:
        """Soft bounces of `email` received since `since` (ISO time), one per issue."""
        return int(self._query(_SOFT_COUNT, (email.lower(), since))[0][0])

    def event_counts(self, issue_id: str) -> dict[str, int]:
        """Readers per event kind for one issue (each reader counted once per kind)."""
        if not self._has_table("events"):
            return {}
        rows = self._query("SELECT kind, count(DISTINCT email) FROM events "
                           "WHERE issue_id = ? GROUP BY kind", (issue_id,))
        return dict(rows)

    def events(self, email: str | None = None) -> list[StoredEvent]:
        rows = self._query(
            "SELECT event_id, source, kind, email, list_id, issue_id, status, diagnostic, "
            "received FROM events WHERE ? IS NULL OR email = ? ORDER BY received",
            (email and email.lower(), email and email.lower()))
        return [StoredEvent(*row) for row in rows]

    # signed webhooks' one-time tokens -------------------------------------------------

    def token_seen(self, token: str) -> bool:
        """Whether a signed webhook with this one-time token (`source:token`) was taken."""
        return bool(self._query("SELECT 1 FROM webhook_tokens WHERE token = ?", (token,)))

    def remember_token(self, token: str, forget_before: str) -> None:
        """Keep `token` as taken; forget those seen before `forget_before` (ISO time), which
        their timestamps make too old to be taken again anyway."""
        with self._transaction() as db:
            db.execute("DELETE FROM webhook_tokens WHERE seen < ?", (forget_before,))
            db.execute("INSERT OR IGNORE INTO webhook_tokens (token, seen) VALUES (?, ?)",
                       (token, now()))

    # finding the delivery an event is about ------------------------------------------

    def delivery_by_key(self, key: str) -> tuple[str, str, str] | None:
        """(issue id, address, Message-ID) of the delivery whose key is `key` (hex)."""
        rows = self._query(f"SELECT issue_id, email, message_id FROM deliveries "
                           f"WHERE {_KEY} = ? AND message_id NOT LIKE '%.test.%' LIMIT 2",
                           (key.lower(),))
        return rows[0] if len(rows) == 1 else None

    def delivery_by_message_id(self, message_id: str) -> tuple[str, str, str] | None:
        """(issue id, address, Message-ID) of the delivery with this Message-ID."""
        mid = message_id.strip()
        if not mid.startswith("<"):
            mid = f"<{mid}>"
        rows = self._query("SELECT issue_id, email, message_id FROM deliveries "
                           "WHERE message_id = ? LIMIT 2", (mid,))
        return rows[0] if len(rows) == 1 else None

    def latest_delivery(self, email: str) -> tuple[str, str, str] | None:
        """(issue id, address, Message-ID) of the last issue sent to `email`."""
        rows = self._query("SELECT issue_id, email, message_id FROM deliveries "
                           "WHERE email = ? AND status = 'sent' ORDER BY updated DESC LIMIT 1",
                           (email.lower(),))
        return rows[0] if rows else None

    def list_of(self, issue_id: str) -> str | None:
        rows = self._query("SELECT list_id FROM issues WHERE issue_id = ?", (issue_id,))
        return rows[0][0] if rows else None


def _evidence(text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError:
        return {"detail": text}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
