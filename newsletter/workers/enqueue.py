"""`send --queue` after the plan: store the issue's templates and each unsent reader's
personal fields, cut the rows into batches and queue one job per batch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine

from newsletter.db import Database
from newsletter.models import Edition, Subscriber
from newsletter.render import RenderedIssue
from newsletter.workers import queue, rows, templates


@dataclass(frozen=True)
class Queued:
    issue_id: str
    readers: int  # unsent readers handed to the workers
    batches: int  # batches with unsent rows
    jobs: int  # jobs queued now (the others were waiting in the queue already)


def store_issue(engine: Engine, edition: Edition, variants: dict[tuple[str, ...], RenderedIssue],
                todo: Iterable[Subscriber], now: dt.datetime, batch_size: int
                ) -> tuple[int, list[int]]:
    """Templates, personal fields and batches of one planned issue, in one transaction;
    how many readers, and the numbers of the issue's batches with unsent rows."""
    issue_id = edition.general.id
    stored = {templates.variant_key(ids): templates.dump(rendered, now)
              for ids, rendered in variants.items()}

    count = 0

    def personal() -> Iterable[tuple[str, str, str | None, str]]:
        nonlocal count
        for s in todo:
            count += 1
            ids = edition.issue_for(s).article_ids
            yield s.email, s.email, s.name, templates.variant_key(ids)

    with engine.begin() as conn:
        rows.store_templates(conn, issue_id, stored)
        rows.set_personal(conn, issue_id, personal())
        return count, rows.assign_batches(conn, issue_id, batch_size)


def enqueue(database: Database, engine: Engine, edition: Edition,
            variants: dict[tuple[str, ...], RenderedIssue], todo: Iterable[Subscriber],
            now: dt.datetime, batch_size: int) -> Queued:
    """Store the planned issue for the workers and queue its batches."""
    readers, numbers = store_issue(engine, edition, variants, todo, now, batch_size)
    issue_id = edition.general.id
    jobs = queue.queue_batches(database, [(issue_id, n) for n in numbers])
    return Queued(issue_id, readers, len(numbers), jobs)
