"""An in-process `send` on PostgreSQL shares the delivery rows with the workers: it leases
the rows it is about to send, skips those a worker holds, renews while it sends, and gives
them back at the end. So a queued issue sent again in-process mails nobody twice."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from newsletter.models import Subscriber
from newsletter.workers import rows

log = logging.getLogger(__name__)


@contextmanager
def hold_rows(engine: Engine, issue_id: str, todo: list[Subscriber], owner: str,
              lease: float) -> Iterator[tuple[list[Subscriber], list[Subscriber]]]:
    """(the readers now ours to send, those a worker holds) for the block."""
    with engine.begin() as conn:
        ours = rows.hold(conn, issue_id, [s.email.lower() for s in todo], owner, lease)
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
        yield ([s for s in todo if s.email.lower() in ours],
               [s for s in todo if s.email.lower() not in ours])
    finally:
        done.set()
        with engine.begin() as conn:
            rows.release_all(conn, issue_id, owner)
            # The last rows may have been a worker's, sent while we sent ours; the report of
            # this run then counts them as not ours, so the rows decide "complete".
            rows.complete_if_done(conn, issue_id)
