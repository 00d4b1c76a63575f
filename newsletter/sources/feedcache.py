"""What each feed URL last answered, so the next fetch can be a conditional GET, and when
each undated feed entry was first seen, so it keeps one date from run to run.

`SqliteFeedCache` keeps `feed_cache` and `feed_entries` tables in the ledger's SQLite file:
one file holds everything the program remembers between runs. It opens its own connection.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from newsletter.ledger import open_database

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
"""
# An undated entry gone from its feed this long is forgotten (if it comes back, it is new).
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


class MemoryFeedCache:
    """A cache that lasts as long as the process: for one-off runs and tests."""

    def __init__(self) -> None:
        self._entries: dict[str, CachedFeed] = {}
        self._seen: dict[str, dt.datetime] = {}

    def get(self, url: str) -> CachedFeed | None:
        return self._entries.get(url)

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes,
            fetched_at: dt.datetime, base_url: str | None = None) -> None:
        self._entries[url] = CachedFeed(url, etag, last_modified, body, _utc(fetched_at),
                                        base_url)

    def first_seen(self, entry_id: str, now: dt.datetime) -> dt.datetime:
        return self._seen.setdefault(entry_id, _utc(now))


class SqliteFeedCache:
    """The cache as a table in the ledger's SQLite file (WAL mode, like the ledger)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path, _SCHEMA, "feed cache")
        self._lock = threading.Lock()

    def get(self, url: str) -> CachedFeed | None:
        with self._lock:
            row = self._db.execute(
                "SELECT etag, last_modified, body, fetched_at, base_url FROM feed_cache "
                "WHERE url = ?", (url,)).fetchone()
        if row is None:
            return None
        etag, last_modified, body, fetched_at, base_url = row
        return CachedFeed(url, etag, last_modified, bytes(body),
                          _utc(dt.datetime.fromisoformat(fetched_at)), base_url)

    def put(self, url: str, etag: str | None, last_modified: str | None, body: bytes,
            fetched_at: dt.datetime, base_url: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO feed_cache (url, etag, last_modified, body, fetched_at, base_url) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(url) DO UPDATE SET "
                "etag = excluded.etag, last_modified = excluded.last_modified, "
                "body = excluded.body, fetched_at = excluded.fetched_at, "
                "base_url = excluded.base_url",
                (url, etag, last_modified, body, _utc(fetched_at).isoformat(), base_url))

    def first_seen(self, entry_id: str, now: dt.datetime) -> dt.datetime:
        now = _utc(now)
        with self._lock:
            self._db.execute(
                "INSERT INTO feed_entries (id, first_seen, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen",
                (entry_id, now.isoformat(), now.isoformat()))
            self._db.execute("DELETE FROM feed_entries WHERE last_seen < ?",
                             ((now - FORGET_AFTER).isoformat(),))
            (first,) = self._db.execute(
                "SELECT first_seen FROM feed_entries WHERE id = ?", (entry_id,)).fetchone()
        return _utc(dt.datetime.fromisoformat(first))

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
