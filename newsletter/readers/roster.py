"""The list an issue goes to: the file's readers plus confirmed sign-ups and imports, with
each reader's own choices applied. Suppressions are applied later, by the send (digest.py),
which reports each suppressed reader as skipped with the reason.

- A file reader with a row: the row's name, topics and time zone where it set them.
- A confirmed sign-up or import the file does not have: added after the file's readers.
- Pending rows: nobody gets an issue before confirming.
- Paused: `Subscriber.paused_until` set; the send skips them for issues dated before it.
- Forgotten addresses: left out, with a warning when the file still names one, unless
  they came back to this list by confirming a sign-up (`store.came_back`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from newsletter.db import open_ledger
from newsletter.errors import Problem
from newsletter.ledger import SqliteLedger
from newsletter.models import Origin, ReaderSource, Subscriber, SubscriberList
from newsletter.readers.store import ReaderRow, came_back, forgotten_digest
from newsletter.settings import Settings
from newsletter.subscribers import Roster, load_roster


def merge_list(lst: SubscriberList, rows: Iterable[ReaderRow], forgotten: frozenset[str],
               warnings: list[Problem] | None = None,
               roster: Roster | None = None) -> SubscriberList:
    """`lst` with the database's rows (of this list) applied.

    A list held in memory stays in memory; one read from a file (a `ReaderSource`) is
    merged as each pass reads it, with the rows looked up by address.
    """
    by_email = {r.email: r for r in rows}

    def gone(s: Subscriber) -> None:
        if warnings is not None and roster is not None:
            warnings.append(Problem(
                f"{s.email} asked to be forgotten and is never mailed: remove the entry "
                f"from list {lst.id!r}", roster.path, s.line))

    if isinstance(lst.subscribers, tuple):
        readers: tuple[Subscriber, ...] | ReaderSource = tuple(
            _merged(lst, by_email, forgotten, gone))
    else:
        if forgotten and warnings is not None:
            for _ in _merged(lst, by_email, forgotten, gone):
                pass  # one pass for the warnings; each send's pass leaves them out again
        readers = MergedReaders(lst, by_email, forgotten)
    return lst.model_copy(update={"subscribers": readers})


class MergedReaders(ReaderSource):
    """A file's list with the database's rows applied as it is read."""

    def __init__(self, lst: SubscriberList, by_email: dict[str, ReaderRow],
                 forgotten: frozenset[str]) -> None:
        self.lst, self.by_email, self.forgotten = lst, by_email, forgotten
        self._len: int | None = None

    def __iter__(self) -> Iterator[Subscriber]:
        return _merged(self.lst, self.by_email, self.forgotten, None)

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len


def _merged(lst: SubscriberList, by_email: dict[str, ReaderRow], forgotten: frozenset[str],
            gone: Callable[[Subscriber], None] | None) -> Iterator[Subscriber]:
    """The readers of `lst` with their rows applied, then the rows the file lacks."""
    matched: set[str] = set()  # rows of file readers: as many as rows, not readers
    for s in lst.subscribers:
        key = s.email.lower()
        row = by_email.get(key)
        if row is not None:
            matched.add(key)
        if forgotten and forgotten_digest(key) in forgotten and not came_back(row):
            if gone is not None:
                gone(s)
            continue
        if row is not None and (row.state == "confirmed" or row.origin == "file"):
            if s.status == "unsubscribed" and row.origin == "file":
                yield s  # the file's word stands over an override row
                continue
            s = _applied(s, row, lst, status_from_row=s.status == "unsubscribed")
        yield s
    for key, row in by_email.items():
        if key in matched or not came_back(row):
            continue  # pending; or a file reader no longer in the file
        yield _applied(Subscriber(email=row.address, origin=_origin(row)), row, lst,
                       status_from_row=True)


def _origin(row: ReaderRow) -> Origin:
    return "import" if row.origin == "import" else "signup"


def _applied(s: Subscriber, row: ReaderRow, lst: SubscriberList, *,
             status_from_row: bool) -> Subscriber:
    topics = s.topics
    if row.topics is not None:
        # A section the publisher removed since is no topic any more.
        topics = tuple(t for t in row.topics if not lst.sections or t in lst.sections)
    return replace(
        s,
        name=(row.name or None) if row.name is not None else s.name,
        topics=topics,
        timezone=(row.timezone or None) if row.timezone is not None else s.timezone,
        status="active" if status_from_row else s.status,
        paused_until=row.paused_until,
    )


def merge_roster(roster: Roster, ledger: SqliteLedger | None) -> Roster:
    """Every list of `roster` merged with the database (the file alone without one)."""
    if ledger is None:
        return roster
    rows = ledger.reader_rows()
    forgotten = ledger.forgotten_digests()
    by_list: dict[str, list[ReaderRow]] = {}
    for row in rows:
        by_list.setdefault(row.list_id, []).append(row)
    warnings = list(roster.warnings)
    lists = {list_id: merge_list(lst, by_list.get(list_id, ()), forgotten, warnings, roster)
             for list_id, lst in roster.lists.items()}
    return Roster(roster.path, lists, warnings)


def load_readers(settings: Settings) -> Roster:
    """The subscriber file merged with the readers in the database."""
    roster = load_roster(settings.subscribers)
    ledger = (open_ledger(settings, for_reading=True)
              if settings.database_config.is_postgres or settings.ledger.exists() else None)
    if ledger is None:
        return roster
    try:
        return merge_roster(roster, ledger)
    finally:
        ledger.close()


@dataclass(frozen=True)
class Counts:
    """Readers of one list by origin and by state, for `subscribers check` and `status`."""

    origins: Counter[str]
    states: Counter[str]


def count_readers(merged: SubscriberList, rows: Iterable[ReaderRow],
                  suppressed: Iterable[str], day: dt.date) -> Counts:
    """Origins (file, signup, import) and states (pending, confirmed, paused, suppressed,
    unsubscribed) of one merged list and its database rows."""
    gone = set(suppressed)
    rows = list(rows)
    pending = {row.email for row in rows if row.state == "pending"}
    origins: Counter[str] = Counter()
    states: Counter[str] = Counter()
    listed: set[str] = set()  # of the pending rows' addresses: not every reader's
    for s in merged.subscribers:
        if s.email.lower() in pending:
            listed.add(s.email.lower())
        origins[s.origin] += 1
        if s.email.lower() in gone:
            states["suppressed"] += 1
        elif s.status == "active" and s.paused_on(day):
            states["paused"] += 1
        elif s.status == "active":
            states["confirmed"] += 1
        else:
            states[s.status] += 1
    for row in rows:
        # A pending row of someone the list already has (a file reader marked unsubscribed
        # who signed up again) is the same person: counted once, as the list has them.
        if row.state == "pending" and row.email not in listed:
            origins["signup" if row.origin == "signup" else "import"] += 1
            states["suppressed" if row.email in gone else "pending"] += 1
    return Counts(origins, states)
