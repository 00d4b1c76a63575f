"""Readers in the database: sign-ups, imports and every reader's own choices.

`ReaderStore` is mixed into `SqliteLedger` (one file, one connection, one lock), as the
suppressions are. One row per (list, address):

- origin `signup` or `import`: a reader the file does not have; `pending` until confirmed
  (a pending reader gets no issue), then `confirmed`.
- origin `file`: a reader of `subscribers.yaml` who made a choice on the preference page;
  the row holds only the overrides (NULL: as the file says).

Choices: `name` and `timezone` (NULL: unchanged), `topics` (NULL: unchanged, '' the whole
issue, else 'a,b'), `paused_until` (an ISO date: no issue dated before it).

Every write is one transaction; a sign-up is one `INSERT … ON CONFLICT DO NOTHING`, so two
at once end as one reader. `forget` keeps a salted-free SHA-256 of the address only
(`forgotten`), which is what stops a forgotten reader from being mailed again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from newsletter.readers.erasure import erase
from newsletter.readers.tokens import new_nonce

ReaderState = Literal["pending", "confirmed"]
SignupResult = Literal["new", "pending", "confirmed", "forgotten"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS readers (
    list_id TEXT NOT NULL,
    email TEXT NOT NULL,          -- lower-cased: the same mailbox is one reader
    address TEXT NOT NULL,        -- as given (normalized), for the To header
    origin TEXT NOT NULL,         -- file | signup | import
    state TEXT NOT NULL,          -- pending | confirmed (file rows: confirmed)
    name TEXT,                    -- NULL: unchanged (the file's, or none)
    topics TEXT,                  -- NULL: unchanged; '' the whole issue; 'a,b'
    timezone TEXT,                -- NULL: unchanged
    paused_until TEXT,            -- ISO date; NULL: not paused
    nonce TEXT,                   -- the pending confirmation's; NULL once confirmed
    consent TEXT NOT NULL DEFAULT '{}',  -- JSON: how and when they joined and confirmed
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (list_id, email)
);
CREATE INDEX IF NOT EXISTS readers_email ON readers (email);
CREATE INDEX IF NOT EXISTS readers_pending ON readers (updated) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS confirmation_mails (
    email TEXT PRIMARY KEY,       -- at most one confirmation mail an hour per address
    sent TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten (
    digest TEXT PRIMARY KEY,      -- forgotten_digest(address): never mailed again
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten_complaints (
    digest TEXT PRIMARY KEY,      -- a forgotten address that had complained: no sign-up
    created TEXT NOT NULL         -- of theirs ends the erasure (only the publisher could)
);
"""

_COLUMNS = ("list_id, email, address, origin, state, name, topics, timezone, paused_until, "
            "nonce, consent, created, updated")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def forgotten_digest(email: str) -> str:
    """What is kept of a forgotten address: enough to know it again, not to read it."""
    return hashlib.sha256(b"newsletter forgotten v1\n" + email.lower().encode()).hexdigest()


def mailbox_key(email: str) -> str:
    """The mailbox `email` reaches, for counting mails to it: its `+tag` left out, and
    Gmail's dots (which Gmail ignores). Else one could mail a victim once per spelling."""
    local, at, domain = email.lower().rpartition("@")
    if not at:
        return email.lower()
    local = local.split("+", 1)[0] or local
    if domain in ("gmail.com", "googlemail.com"):
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


@dataclass(frozen=True)
class ReaderRow:
    list_id: str
    email: str
    address: str
    origin: str
    state: ReaderState
    name: str | None = None
    topics: tuple[str, ...] | None = None  # None: unchanged; () the whole issue
    timezone: str | None = None
    paused_until: dt.date | None = None
    nonce: str | None = None
    consent: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    updated: str = ""


def came_back(row: ReaderRow | None) -> bool:
    """Whether a forgotten address joined this row's list again by confirming a sign-up:
    forgetting deleted every row, and an import or single opt-in of a forgotten address
    is refused, so a confirmed sign-up or import row can only be that fresh consent. It
    is for that list alone: the erasure stands for the others (and the file's entries)."""
    return row is not None and row.state == "confirmed" and row.origin != "file"


@dataclass(frozen=True)
class Choices:
    """A reader's changes from the preference page; None leaves a field as it is."""

    name: str | None = None  # "" clears it
    topics: tuple[str, ...] | None = None  # () the whole issue
    timezone: str | None = None  # "" back to the list's
    paused_until: dt.date | None = None
    resume: bool = False  # clear paused_until


@dataclass(frozen=True)
class NewReader:
    """One reader to add (a sign-up or an import row)."""

    list_id: str
    address: str
    name: str | None = None
    topics: tuple[str, ...] = ()
    timezone: str | None = None
    consent: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportCounts:
    """What `import_batch` did."""

    added: int = 0
    kept: int = 0  # already in the database: left as they are
    forgotten: int = 0  # asked to be forgotten: left out
    suppressed: int = 0
    already_suppressed: int = 0


def _row(values: tuple) -> ReaderRow:
    (list_id, email, address, origin, state, name, topics, timezone, paused, nonce, consent,
     created, updated) = values
    return ReaderRow(
        list_id, email, address, origin, state, name,
        None if topics is None else tuple(t for t in topics.split(",") if t),
        timezone, dt.date.fromisoformat(paused) if paused else None, nonce,
        json.loads(consent or "{}"), created, updated)


def _topics(topics: tuple[str, ...] | None) -> str | None:
    return None if topics is None else ",".join(topics)


class ReaderStore:
    """The reader methods of the ledger (see module docstring)."""

    _transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _query: Callable[..., list[tuple]]
    _has_table: Callable[[str], bool]

    # reading --------------------------------------------------------------------------

    def reader_rows(self, list_id: str | None = None) -> list[ReaderRow]:
        """Every row (of `list_id`, when given), in the order they were made."""
        if not self._has_table("readers"):
            return []
        rows = self._query(f"SELECT {_COLUMNS} FROM readers WHERE ? IS NULL OR list_id = ? "
                           "ORDER BY created, email", (list_id, list_id))
        return [_row(r) for r in rows]

    def reader_row(self, list_id: str, email: str) -> ReaderRow | None:
        if not self._has_table("readers"):
            return None
        rows = self._query(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? AND email = ?",
                           (list_id, email.lower()))
        return _row(rows[0]) if rows else None

    def rows_of(self, email: str) -> list[ReaderRow]:
        """Every list's row of one address."""
        if not self._has_table("readers"):
            return []
        rows = self._query(f"SELECT {_COLUMNS} FROM readers WHERE email = ? ORDER BY list_id",
                           (email.lower(),))
        return [_row(r) for r in rows]

    def forgotten_digests(self) -> frozenset[str]:
        if not self._has_table("forgotten"):
            return frozenset()
        return frozenset(d for (d,) in self._query("SELECT digest FROM forgotten"))

    def is_forgotten(self, email: str, list_id: str | None = None) -> bool:
        """Whether `email` asked to be forgotten; with `list_id`, and has not come back to
        that list since (see `came_back`)."""
        if not self._has_table("forgotten"):
            return False
        if not self._query("SELECT 1 FROM forgotten WHERE digest = ?",
                           (forgotten_digest(email),)):
            return False
        return list_id is None or not came_back(self.reader_row(list_id, email))

    def has_complained(self, list_id: str, email: str) -> bool:
        """Whether `email` reported our mail as spam (on `list_id` or every list): only
        the publisher lifts that, so no sign-up mails it."""
        return bool(self._query("SELECT 1 FROM suppressions WHERE list_id IN (?, '*') AND "
                                "email = ? AND reason = 'complaint' LIMIT 1",
                                (list_id, email.lower())))

    # joining --------------------------------------------------------------------------

    def sign_up(self, reader: NewReader, *, origin: str = "signup",
                confirmed: bool = False) -> tuple[SignupResult, ReaderRow | None]:
        """Add a reader who asked to join, pending (or `confirmed`, for a list without
        double opt-in, unless the address is suppressed there). For an address the file
        does not have as an active reader. One transaction: of two at once, one adds and
        the other finds it.

        Returns what was there: "new" (added now), "pending" (waiting for confirmation,
        kept as it was), "confirmed" (already a reader) or "forgotten" (asked to be
        forgotten and `confirmed` asked for: not added), with the row as it is now. A
        forgotten address is added pending like any other: confirming is a fresh consent
        to this list (`came_back`).
        """
        email = reader.address.lower()
        stamp = _now()
        consent = dict(reader.consent, joined=stamp)
        if confirmed:
            consent["confirmed"] = stamp
        with self._transaction() as db:
            # A forgotten address may give its consent afresh, but only by confirming
            # (the digest stays: `came_back`); a single opt-in is no proof it is them.
            digest = forgotten_digest(email)
            if db.execute("SELECT 1 FROM forgotten_complaints WHERE digest = ?",
                          (digest,)).fetchone() or (confirmed and db.execute(
                              "SELECT 1 FROM forgotten WHERE digest = ?", (digest,)).fetchone()):
                return "forgotten", None
            if confirmed and self._left(db, reader.list_id, email):
                # Without double opt-in a post joins at once; but an address that left or
                # bounced is not brought back on anyone's word: it confirms by mail, and
                # only that click lifts the suppression.
                confirmed = False
                consent.pop("confirmed", None)
            existing = db.execute(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? AND "
                                  "email = ?", (reader.list_id, email)).fetchone()
            if existing is not None:
                row = _row(existing)
                # A "file" row holds overrides only: whether they read is the file's word,
                # and `serve` signs up no active reader of the file. So this one is out of
                # the file or unsubscribed there, and joins as anybody would.
                if (row.state == "confirmed" and row.origin != "file"
                        and not self._left(db, reader.list_id, email)):
                    return "confirmed", row
                if row.state == "pending" and row.origin == "import":
                    # The publisher's own data: not replaced by what anyone can post.
                    return "pending", row
                if row.state == "pending":
                    # Asked again: the latest request is what the link confirms (a
                    # stranger who posted the address first does not choose its name),
                    # and the new mail's link must outlive the purge of sign-ups nobody
                    # confirmed (`purge_unconfirmed`), which goes by `updated`.
                    db.execute("UPDATE readers SET name = ?, topics = ?, timezone = ?, "
                               "updated = ? WHERE list_id = ? AND email = ?",
                               (reader.name, _topics(reader.topics), reader.timezone, stamp,
                                reader.list_id, email))
                    found = db.execute(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? "
                                       "AND email = ?", (reader.list_id, email)).fetchone()
                    return "pending", _row(found)
                # A reader who left and asks to join again: pending again, a new nonce (the
                # old confirmation links stay dead), their old choices forgotten.
                db.execute(
                    "UPDATE readers SET origin = ?, state = ?, nonce = ?, name = ?, "
                    "topics = ?, timezone = ?, paused_until = NULL, consent = ?, updated = ? "
                    "WHERE list_id = ? AND email = ?",
                    (origin if row.origin == "file" else row.origin,
                     "confirmed" if confirmed else "pending", None if confirmed else new_nonce(),
                     reader.name, _topics(reader.topics), reader.timezone,
                     json.dumps(consent), stamp, reader.list_id, email))
            else:
                db.execute(
                    f"INSERT INTO readers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, "
                    "?, ?, ?) ON CONFLICT (list_id, email) DO NOTHING",
                    (reader.list_id, email, reader.address, origin,
                     "confirmed" if confirmed else "pending", reader.name,
                     _topics(reader.topics), reader.timezone,
                     None if confirmed else new_nonce(), json.dumps(consent), stamp, stamp))
            if confirmed:
                self._lift_left(db, reader.list_id, email, "single opt-in sign-up")
            now_row = db.execute(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? AND "
                                 "email = ?", (reader.list_id, email)).fetchone()
        return "new", _row(now_row)

    def confirm(self, list_id: str, email: str, nonce: str,
                consent: dict[str, Any] | None = None, *,
                other_lists: Iterable[str] | None = None
                ) -> Literal["confirmed", "already", "invalid"]:
        """Confirm a pending sign-up whose stored nonce is `nonce`. "already" when this
        reader is confirmed (a second click), "invalid" when the nonce is not the pending
        one (used, replaced by a newer sign-up, or the reader is gone). With
        `other_lists` (every other list there is), an unsubscribe from every list is
        lifted for this one and kept for those."""
        email = email.lower()
        stamp = _now()
        with self._transaction() as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? AND "
                               "email = ?", (list_id, email)).fetchone()
            if found is None:
                return "invalid"
            row = _row(found)
            if row.state == "confirmed" or row.nonce is None:
                return "already" if not self._left(db, list_id, email) else "invalid"
            if row.nonce != nonce:
                return "invalid"
            db.execute("UPDATE readers SET state = 'confirmed', nonce = NULL, consent = ?, "
                       "updated = ? WHERE list_id = ? AND email = ?",
                       (json.dumps(dict(row.consent, **(consent or {}), confirmed=stamp)),
                        stamp, list_id, email))
            self._lift_left(db, list_id, email, "confirmed sign-up", other_lists)
        return "confirmed"

    @staticmethod
    def _left(db: sqlite3.Connection, list_id: str, email: str) -> bool:
        return db.execute("SELECT 1 FROM suppressions WHERE list_id IN (?, '*') AND "
                          "email = ? LIMIT 1", (list_id, email)).fetchone() is not None

    @staticmethod
    def _lift_left(db: sqlite3.Connection, list_id: str, email: str, note: str,
                   other_lists: Iterable[str] | None = None) -> None:
        """A confirmed sign-up is the reader asking again: lift their unsubscribe from
        this list and a bounce (the confirmation reached them). A complaint stays: only
        the publisher lifts that (`resubscribe --force`). An unsubscribe from every list
        (`newsletter unsubscribe`), given `other_lists`, becomes one from each of those:
        else the page would say "subscribed" while every issue skipped them."""
        everywhere = ("'hard-bounce', 'soft-bounces', 'unsubscribed'" if other_lists is not None
                      else "'hard-bounce', 'soft-bounces'")
        rows = db.execute(
            "SELECT list_id, reason, evidence, created FROM suppressions WHERE email = ? AND "
            "((list_id = ? AND reason IN ('unsubscribed', 'refused')) OR (list_id = '*' AND "
            f"reason IN ({everywhere})))", (email, list_id)).fetchall()
        stamp = _now()
        for lst, reason, evidence, created in rows:
            if lst == "*" and reason == "unsubscribed":
                db.executemany(
                    "INSERT OR IGNORE INTO suppressions (list_id, email, reason, evidence, "
                    "created) VALUES (?, ?, 'unsubscribed', ?, ?)",
                    [(other, email, evidence, created) for other in other_lists or ()
                     if other != list_id])
            db.execute("INSERT INTO resubscriptions (list_id, email, reason, evidence, "
                       "suppressed, lifted, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (lst, email, reason, evidence, created, stamp, note))
            db.execute("DELETE FROM suppressions WHERE list_id = ? AND email = ?", (lst, email))

    def claim_confirmation_mail(self, email: str, *, hours: float = 1.0,
                                now: dt.datetime | None = None) -> bool:
        """Whether a confirmation mail may go to `email` now (and note that one does): at
        most one an hour to its mailbox (`mailbox_key`), whatever the list, however many
        sign-ups."""
        moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        stamp = moment.isoformat(timespec="seconds")
        before = (moment - dt.timedelta(hours=hours)).isoformat(timespec="seconds")
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO confirmation_mails (email, sent) VALUES (?, ?) "
                "ON CONFLICT (email) DO UPDATE SET sent = excluded.sent "
                "WHERE confirmation_mails.sent <= ?", (mailbox_key(email), stamp, before))
            return cursor.rowcount == 1

    def release_confirmation_mail(self, email: str) -> None:
        """The mail could not be sent: the next sign-up may try again at once."""
        with self._transaction() as db:
            db.execute("DELETE FROM confirmation_mails WHERE email = ?", (mailbox_key(email),))

    # choosing -------------------------------------------------------------------------

    def choose(self, list_id: str, address: str, choices: Choices, *,
               origin: str = "file") -> ReaderRow:
        """Apply a reader's choices; a file reader without a row gets one (`origin`
        "file", confirmed) holding only the overrides."""
        email = address.lower()
        stamp = _now()
        sets: list[str] = []
        values: list[Any] = []
        if choices.name is not None:
            sets.append("name = ?")
            values.append(choices.name)
        if choices.topics is not None:
            sets.append("topics = ?")
            values.append(_topics(choices.topics))
        if choices.timezone is not None:
            sets.append("timezone = ?")
            values.append(choices.timezone)
        if choices.resume:
            sets.append("paused_until = NULL")
        elif choices.paused_until is not None:
            sets.append("paused_until = ?")
            values.append(choices.paused_until.isoformat())
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO readers ({_COLUMNS}) VALUES (?, ?, ?, ?, 'confirmed', NULL, "
                "NULL, NULL, NULL, NULL, '{}', ?, ?) ON CONFLICT (list_id, email) DO NOTHING",
                (list_id, email, address, origin, stamp, stamp))
            if sets:
                db.execute(f"UPDATE readers SET {', '.join(sets)}, updated = ? "
                           "WHERE list_id = ? AND email = ?", (*values, stamp, list_id, email))
            found = db.execute(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? AND "
                               "email = ?", (list_id, email)).fetchone()
        return _row(found)

    # importing ------------------------------------------------------------------------

    def import_readers(self, readers: Iterable[NewReader], state: ReaderState
                       ) -> tuple[int, int]:
        """Add every reader in one transaction (all or nothing). Readers already in the
        database are left as they are. Returns (added, already there)."""
        counts = self.import_batch([(r, state) for r in readers], ())
        return counts.added, counts.kept + counts.forgotten

    def import_batch(self, readers: Iterable[tuple[NewReader, ReaderState]],
                     suppressions: Iterable[tuple[str, str, dict[str, Any], str]]
                     ) -> ImportCounts:
        """`import_readers` with a state per reader, plus suppressions (list, address,
        evidence, reason: "unsubscribed", or what our own export said) of people who left
        in the old tool, all in one transaction. A forgotten address is neither added
        nor suppressed (that would keep it in clear again); it is never mailed anyway."""
        stamp = _now()
        counts = ImportCounts()
        with self._transaction() as db:
            forgotten = {d for (d,) in db.execute("SELECT digest FROM forgotten")}
            for reader, state in readers:
                email = reader.address.lower()
                if forgotten_digest(email) in forgotten:
                    counts.forgotten += 1
                    continue
                consent = dict(reader.consent, joined=stamp)
                if state == "confirmed":
                    consent.setdefault("confirmed", stamp)
                cursor = db.execute(
                    f"INSERT INTO readers ({_COLUMNS}) VALUES (?, ?, ?, 'import', ?, ?, ?, ?, "
                    "NULL, ?, ?, ?, ?) ON CONFLICT (list_id, email) DO "
                    # The overrides of a reader no longer in the file (the caller leaves out
                    # those it has): they join, and their own choices stay.
                    "UPDATE SET origin = 'import', state = excluded.state, "
                    "name = coalesce(readers.name, excluded.name), "
                    "topics = coalesce(readers.topics, excluded.topics), "
                    "timezone = coalesce(readers.timezone, excluded.timezone), "
                    "nonce = excluded.nonce, consent = excluded.consent, "
                    "updated = excluded.updated WHERE readers.origin = 'file'",
                    (reader.list_id, email, reader.address, state, reader.name,
                     _topics(reader.topics), reader.timezone,
                     new_nonce() if state == "pending" else None, json.dumps(consent),
                     stamp, stamp))
                if cursor.rowcount == 1:
                    counts.added += 1
                else:
                    counts.kept += 1
            for list_id, address, evidence, reason in suppressions:
                email = address.lower()
                if forgotten_digest(email) in forgotten:
                    counts.forgotten += 1
                    continue
                cursor = db.execute(
                    "INSERT OR IGNORE INTO suppressions (list_id, email, reason, evidence, "
                    "created) VALUES (?, ?, ?, ?, ?)",
                    (list_id, email, reason, json.dumps({k: str(v) for k, v in evidence.items()},
                                                        ensure_ascii=False), stamp))
                if cursor.rowcount == 1:
                    counts.suppressed += 1
                else:
                    counts.already_suppressed += 1
        return counts

    def deliveries_of(self, email: str) -> list[tuple[str, str, int, str, str]]:
        """(issue, status, attempts, reply, updated) of every delivery to `email`, for
        `subscribers show`: one scan in SQLite, not every issue's rows in Python."""
        return self._query("SELECT issue_id, status, attempts, reply, updated FROM deliveries "
                           "WHERE email = ? ORDER BY updated, issue_id", (email.lower(),))

    def confirmation_mail_sent(self, email: str) -> str | None:
        """When the last confirmation mail went to `email` (ISO time), if one did."""
        if not self._has_table("confirmation_mails"):
            return None
        rows = self._query("SELECT sent FROM confirmation_mails WHERE email = ?",
                           (mailbox_key(email),))
        return rows[0][0] if rows else None

    # forgetting -----------------------------------------------------------------------

    def forget(self, email: str) -> dict[str, int]:
        """Remove every personal datum kept of `email` in this database and keep only its
        digest, so that it is never mailed again. Returns rows removed per table."""
        email = email.lower()
        digest = forgotten_digest(email)
        # SQLite leaves deleted rows in free pages unless told otherwise (Debian's build
        # zeroes them by default, others do not), and the WAL keeps the old pages until a
        # checkpoint: both would still hold the address in the file.
        self._query("PRAGMA secure_delete = ON")
        with self._transaction() as db:
            removed = erase(db, email, mailbox_key(email), digest, _now())
        # Best effort: a reader in another process (serve) may keep the WAL from being
        # emptied now; it is then rewritten as the database is used.
        self._query("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def purge_unconfirmed(self, hours: float) -> int:
        """Drop sign-ups nobody confirmed whose last request is over `hours` old (their
        links have expired): no consent was given, so the address is not kept. By the
        database's own clock, the one `updated` is written with."""
        before = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat(
            timespec="seconds")
        with self._transaction() as db:
            return db.execute("DELETE FROM readers WHERE state = 'pending' AND origin = "
                              "'signup' AND updated < ?", (before,)).rowcount
