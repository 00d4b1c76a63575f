"""An in-process `send` on PostgreSQL shares the delivery rows with the workers: it leases
the rows it is about to send (a chunk at a time, before any of the chunk goes out), skips
those a worker holds, renews while it sends, and gives them back at the end. So a queued
issue sent in-process too mails nobody twice."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from newsletter.models import Subscriber
from newsletter.workers import rows

log = logging.getLogger(__name__)

CHUNK = 1000  # rows leased per statement: the send loop never holds the whole list


class Holding:
    """The rows one send holds on one issue."""

    def __init__(self, engine: Engine, issue_id: str, owner: str, lease: float) -> None:
        self.engine, self.issue_id, self.owner, self.lease = engine, issue_id, owner, lease
        self.others: list[Subscriber] = []  # due now, but a worker's: left to it

    def take(self, todo: Iterable[Subscriber]) -> Iterator[Subscriber]:
        """`todo`, less the readers a worker holds; each chunk is ours before it is sent."""
        readers = iter(todo)
        while chunk := list(itertools.islice(readers, CHUNK)):
            with self.engine.begin() as conn:
                ours = rows.hold(conn, self.issue_id, [s.email.lower() for s in chunk],
                                 self.owner, self.lease)
            for s in chunk:
                if s.email.lower() in ours:
                    yield s
                else:
                    self.others.append(s)


@contextmanager
def hold_rows(engine: Engine, issue_id: str, owner: str, lease: float) -> Iterator[Holding]:
    """A `Holding` for the block; its leases renewed meanwhile and given back after.
    Only under the send lock: rows another in-process send left are taken (rows.hold)."""
    holding = Holding(engine, issue_id, owner, lease)
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lease / 3):
            try:
                with engine.begin() as conn:
                    rows.renew_all(conn, issue_id, owner, lease)
            except Exception as err:  # the ledger's own writes fail and stop the send
                log.warning("could not renew the send's lease on %s: %s", issue_id, err)

    keeper = threading.Thread(target=renew, name="send-lease", daemon=True)
    keeper.start()
    try:
        yield holding
    finally:
        done.set()
        with engine.begin() as conn:
            rows.release_all(conn, issue_id, owner)
            # The last rows may have been a worker's, sent while we sent ours; the report of
            # this run then counts them as not ours, so the rows decide "complete".
            rows.complete_if_done(conn, issue_id)
