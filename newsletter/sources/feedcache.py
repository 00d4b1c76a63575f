"""What the program remembers about feeds between runs: what each feed URL last answered
(for a conditional GET), when each undated entry was first seen (so it keeps one date), and
which entries of different feeds were found to be one story (so a story sent under one
feed's id is known when only another feed still carries it).

`SqliteFeedCache` keeps `feed_cache`, `feed_entries` and `feed_aliases` tables in the
ledger's SQLite file: one file holds everything the program remembers between runs. It
opens its own connection. A read or write that fails (a full disk, a read-only or locked
file) is a `ConfigError` naming the file and the fix, like the ledger's: never a raw
`sqlite3` error.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from newsletter.errors import ConfigError
from newsletter.sqlitefile import failure, open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feed_cache (
    url TEXT PRIMARY KEY,
    etag TEXT,
    last_modified TEXT,
    body BLOB NOT NULL,
    fetched_at TEXT NOT NULL,
    base_url TEXT
);
CREATE TABLE IF NOT EXISTS feed_entries (
    id TEXT PRIMARY KEY,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_aliases (
    id TEXT NOT NULL,
    alias TEXT NOT NULL,
    alias_feed TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (id, alias)
);
"""
# What was not seen for this long is forgotten: an undated entry that comes back is new,
# and stories are long past max_age_days.
FORGET_AFTER = dt.timedelta(days=90)


@dataclass(frozen=True)
class CachedFeed:
    """The last good answer for one feed URL."""

    url: str
    etag: str | None
    last_modified: str | None
    body: bytes
    fetched_at: dt.datetime  # aware, UTC
    # Where the body came from after redirects (or its Content-Location): the base of its
    # relative links, which must not change when the copy is reused after a 304.
    base_url: str | None = None


class FeedCache(Protocol):
    """Where fetched feed documents are kept between runs."""

    def get(self, url: str) -> CachedFeed | None: ...
    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes,
            fetched_at: dt.datetime, base_url: str | None = None) -> None: ...
    def first_seen(self, entry_id: str, now: dt.datetime) -> dt.datetime:
        """When the entry was first seen; `now` (recorded) if never before."""
        ...
    def link(self, stories: Iterable[dict[str, str]], now: dt.datetime) -> None:
        """Remember that the ids of each story (id → the feed it came from) are one."""
        ...
    def aliases(self, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """The other ids (→ their feed) each of `ids` was ever linked with (only ids that
        have some)."""
        ...


class MemoryFeedCache:
    """A cache that lasts as long as the process: for one-off runs and tests."""

    def __init__(self) -> None:
        self._entries: dict[str, CachedFeed] = {}
        self._seen: dict[str, dt.datetime] = {}
        self._aliases: dict[str, dict[str, str]] = {}

    def get(self, url: str) -> CachedFeed | None:
        return self._entries.get(url)

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes,
            fetched_at: dt.datetime, base_url: str | None = None) -> None:
        self._entries[url] = CachedFeed(url, etag, last_modified, body, _utc(fetched_at),
                                        base_url)

    def first_seen(self, entry_id: str, now: dt.datetime) -> dt.datetime:
        return self._seen.setdefault(entry_id, _utc(now))

    def link(self, stories: Iterable[dict[str, str]], now: dt.datetime) -> None:
        for story in stories:
            for one in story:
                self._aliases.setdefault(one, {}).update(
                    (other, feed) for other, feed in story.items() if other != one)

    def aliases(self, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        return {i: dict(self._aliases[i]) for i in ids if self._aliases.get(i)}


class SqliteFeedCache:
    """The cache as a table in the ledger's SQLite file (WAL mode, like the ledger)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path, _SCHEMA, "feed cache")
        self._lock = threading.Lock()
        self._forgotten = False
        try:
            with self._locked() as db:
                columns = {row[1] for row in db.execute("PRAGMA table_info(feed_cache)")}
                if "base_url" not in columns:  # a cache written before base_url was kept
                    db.execute("ALTER TABLE feed_cache ADD COLUMN base_url TEXT")
        except ConfigError:
            self._db.close()
            raise

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, to this thread alone; an SQLite failure becomes one line."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as err:
                with suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                why, fix = failure(self.path, err)
                raise ConfigError(f"cannot use the feed cache: {why}", file=self.path,
                                  field="ledger", fix=fix) from err

    def get(self, url: str) -> CachedFeed | None:
        with self._locked() as db:
            row = db.execute(
                "SELECT etag, last_modified, body, fetched_at, base_url FROM feed_cache "
                "WHERE url = ?", (url,)).fetchone()
        if row is None:
            return None
        etag, last_modified, body, fetched_at, base_url = row
        return CachedFeed(url, etag, last_modified, bytes(body),
                          _utc(dt.datetime.fromisoformat(fetched_at)), base_url)

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes,
            fetched_at: dt.datetime, base_url: str | None = None) -> None:
        with self._locked() as db:
            db.execute(
                "INSERT INTO feed_cache (url, etag, last_modified, body, fetched_at, base_url) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(url) DO UPDATE SET "
                "etag = excluded.etag, last_modified = excluded.last_modified, "
                "body = excluded.body, fetched_at = excluded.fetched_at, "
                "base_url = excluded.base_url",
                (url, etag, last_modified, body, _utc(fetched_at).isoformat(), base_url))

    def first_seen(self, entry_id: str, now: dt.datetime) -> dt.datetime:
        now = _utc(now)
        with self._locked() as db:
            self._forget(db, now)
            db.execute(
                "INSERT INTO feed_entries (id, first_seen, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                (entry_id, now.isoformat(), now.isoformat()))
            (first,) = db.execute(
                "SELECT first_seen FROM feed_entries WHERE id = ?", (entry_id,)).fetchone()
        return _utc(dt.datetime.fromisoformat(first))

    def link(self, stories: Iterable[dict[str, str]], now: dt.datetime) -> None:
        when = _utc(now).isoformat()
        pairs = [(one, other, feed, when) for story in stories for one in story
                 for other, feed in story.items() if one != other]
        with self._locked() as db:
            self._forget(db, _utc(now))
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO feed_aliases (id, alias, alias_feed, last_seen) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(id, alias) DO UPDATE SET "
                    "last_seen = excluded.last_seen",
                    pairs)
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def aliases(self, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, dict[str, str]] = {}
        with self._locked() as db:
            for start in range(0, len(wanted), 500):  # SQLite's limit on ? per statement
                chunk = wanted[start:start + 500]
                rows = db.execute(
                    "SELECT id, alias, alias_feed FROM feed_aliases WHERE id IN ("
                    + ", ".join("?" * len(chunk)) + ")", chunk)
                for one, other, feed in rows:
                    found.setdefault(one, {})[other] = feed
        return found

    def _forget(self, db: sqlite3.Connection, now: dt.datetime) -> None:
        # Once per run is enough; the caller holds the lock.
        if self._forgotten:
            return
        self._forgotten = True
        cutoff = (now - FORGET_AFTER).isoformat()
        db.execute("DELETE FROM feed_entries WHERE last_seen < ?", (cutoff,))
        db.execute("DELETE FROM feed_aliases WHERE last_seen < ?", (cutoff,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteFeedCache:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _utc(when: dt.datetime) -> dt.datetime:
    # A naive time can only have come from us, and we always write UTC.
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
