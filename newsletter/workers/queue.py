"""The queue: procrastinate on the same PostgreSQL database as the ledger.

One job per batch, `deliver_batch(issue_id, batch)`, on the queue `newsletter`; its
queueing lock (per issue and batch) keeps a second `send` from queueing it again while it
waits. A job that dies with its worker stays `doing` in procrastinate; every worker retries
such stalled jobs and queues again any batch whose lease ended with rows unsent, so the
ledger rows, not the job table, decide what is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import procrastinate
from procrastinate import exceptions as pexc

from newsletter.db import Database
from newsletter.workers.rows import queueing_lock

log = logging.getLogger(__name__)

QUEUE = "newsletter"
TASK = "newsletter.deliver_batch"


def connection_options(lease_seconds: float) -> dict[str, Any]:
    """libpq options for a worker's connections: a connection to a server that went away
    (a cut network) errors within about half a lease instead of hanging for minutes."""
    return {"connect_timeout": max(2, int(lease_seconds / 4)),
            "tcp_user_timeout": int(lease_seconds * 500),
            "keepalives": 1, "keepalives_idle": max(1, int(lease_seconds / 4)),
            "keepalives_interval": 1, "keepalives_count": 3}


def make_app(database: Database, *, lease_seconds: float = 120,
             task: Callable[..., Any] | None = None) -> procrastinate.App:
    """The procrastinate app on `database`; with `task`, the batch task registered."""
    connector = procrastinate.PsycopgConnector(
        conninfo=database.libpq_url, min_size=1, max_size=4,
        kwargs=connection_options(lease_seconds))
    app = procrastinate.App(connector=connector)
    if task is not None:
        app.task(name=TASK, queue=QUEUE)(task)
    return app


async def defer_batches(app: procrastinate.App, batches: Iterable[tuple[str, int]]) -> int:
    """Queue a job for each (issue, batch) not waiting in the queue already; how many."""
    queued = 0
    for issue_id, batch in batches:
        try:
            await app.configure_task(TASK, queue=QUEUE,
                                     queueing_lock=queueing_lock(issue_id, batch)
                                     ).defer_async(issue_id=issue_id, batch=batch)
        except pexc.AlreadyEnqueued:
            continue
        queued += 1
    return queued


def queue_batches(database: Database, batches: list[tuple[str, int]]) -> int:
    """`defer_batches` from synchronous code (`send --queue`)."""
    async def run() -> int:
        app = make_app(database)
        async with app.open_async():
            return await defer_batches(app, batches)

    return asyncio.run(run())


async def retry_stalled(app: procrastinate.App, seconds_since_heartbeat: float) -> int:
    """Put back in the queue the jobs of workers whose heartbeat stopped (killed)."""
    retried = 0
    for job in await app.job_manager.get_stalled_jobs(
            queue=QUEUE, task_name=TASK, seconds_since_heartbeat=seconds_since_heartbeat):
        try:
            await app.job_manager.retry_job(job)
        except pexc.ConnectorException as err:  # a new job for the batch waits already
            log.info("stalled job %s not retried: %s", job.id, err)
            await app.job_manager.finish_job(job, status=procrastinate.jobs.Status.FAILED,
                                             delete_job=False)
        retried += 1
    return retried
