"""Where the readers of a long subscriber file wait between passes: a private, temporary
SQLite database on disk, so memory holds the readers in hand and not the list.

The file is parsed and validated once; every later pass (composing the topic variants,
planning the ledger, sending) reads the validated readers back from here in file order.
The spool is also a consistent copy: a file edited during a send changes nothing in it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator

from newsletter.models import ReaderSource, Subscriber

FETCH = 1000  # rows read at a time


class ReaderSpool:
    """The validated readers of one file, by list, in file order; an address is kept once
    per list (the first entry wins)."""

    def __init__(self) -> None:
        # "" is a private temporary database on disk, deleted when closed; its page cache
        # (SQLite's default, about 2 MB) is all the memory it takes, whatever the list.
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE readers (list_id TEXT NOT NULL, key TEXT NOT NULL, "
                         "line INTEGER, topics TEXT NOT NULL, data TEXT NOT NULL)")
        self._db.execute("CREATE UNIQUE INDEX readers_key ON readers (list_id, key)")
        self._db.execute("BEGIN")
        self._ranges: dict[str, list[int]] = {}  # list id → [first rowid, last rowid, count]

    def add(self, list_id: str, s: Subscriber) -> int | None:
        """Keep `s` and return None; or, if the list has its address already, keep nothing
        and return the line of the entry that has it (0 when it has no line)."""
        data = json.dumps([s.email, s.name, s.status, s.line, s.topics, s.timezone],
                          ensure_ascii=False)
        cursor = self._db.execute(
            "INSERT INTO readers (list_id, key, line, topics, data) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (list_id, key) DO NOTHING",
            (list_id, s.email.lower(), s.line, ",".join(s.topics), data))
        if cursor.rowcount == 0:
            (line,) = self._db.execute("SELECT line FROM readers WHERE list_id = ? AND key = ?",
                                       (list_id, s.email.lower())).fetchone()
            return line or 0
        rowid = cursor.lastrowid or 0
        span = self._ranges.setdefault(list_id, [rowid, rowid, 0])
        span[1], span[2] = rowid, span[2] + 1
        return None

    def done(self) -> None:
        """Everything is added: make it readable."""
        self._db.execute("COMMIT")

    def count(self, list_id: str) -> int:
        return self._ranges.get(list_id, [0, 0, 0])[2]

    def topics(self, list_id: str) -> Iterator[tuple[int | None, tuple[str, ...]]]:
        """(line, topics) of each reader of the list who chose topics."""
        for line, topics in self._rows("line, topics", list_id,
                                       "AND topics != ''"):
            yield line, tuple(topics.split(","))

    def readers(self, list_id: str) -> Iterator[Subscriber]:
        """The list's readers in file order, read again on each call."""
        for (data,) in self._rows("data", list_id):
            email, name, status, line, topics, timezone = json.loads(data)
            yield Subscriber(email=email, name=name, status=status, line=line,
                             topics=tuple(topics), timezone=timezone)

    def source(self, list_id: str) -> SpooledReaders:
        return SpooledReaders(self, list_id)

    def _rows(self, columns: str, list_id: str, where: str = "") -> Iterator[tuple]:
        if list_id not in self._ranges:
            return
        first, last, _ = self._ranges[list_id]
        rowid = first - 1
        while True:
            # A page at a time by rowid, not one open cursor: passes may interleave (one
            # stopped half way) and each holds nothing but its place.
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {columns}, rowid FROM readers WHERE rowid > ? AND rowid <= ? "
                    f"AND list_id = ? {where} ORDER BY rowid LIMIT ?",
                    (rowid, last, list_id, FETCH)).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[:-1]
            rowid = rows[-1][-1]

    def close(self) -> None:
        self._db.close()


class SpooledReaders(ReaderSource):
    """One list's readers in a spool."""

    def __init__(self, spool: ReaderSpool, list_id: str) -> None:
        self.spool, self.list_id = spool, list_id

    def __iter__(self) -> Iterator[Subscriber]:
        return self.spool.readers(self.list_id)

    def __len__(self) -> int:
        return self.spool.count(self.list_id)
