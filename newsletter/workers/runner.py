"""`newsletter worker`: run procrastinate's worker on the batch task until stopped.

The worker survives its database going away: procrastinate stops when its connection
fails (a restarted server), so this loop opens the app again and carries on. Beside the
jobs, a sweeper retries stalled jobs and queues again the batches whose lease ended with
rows unsent; every worker runs it, so any one of them left alive finishes the issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable

from sqlalchemy import Engine, create_engine

from newsletter.db import Database
from newsletter.delivery import DeliveryResult
from newsletter.settings import Settings
from newsletter.workers import queue, rows
from newsletter.workers.batch import Gate, deliver_batch

log = logging.getLogger(__name__)


def worker_name() -> str:
    """Unique per process: the lease owner and procrastinate's worker name."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def worker_engine(database: Database, lease_seconds: float) -> Engine:
    """This process's pool for the delivery rows: a dead connection errors within half a
    lease (tcp_user_timeout) and is replaced (pre-ping) when the server is back."""
    return create_engine(database.sqlalchemy_url, pool_pre_ping=True, pool_size=4,
                         max_overflow=8,
                         connect_args=queue.connection_options(lease_seconds))


class Worker:
    """One `newsletter worker` process."""

    def __init__(self, settings: Settings, *, concurrency: int = 1,
                 gate: Callable[[Engine, str], Gate | None] | None = None,
                 suppress: Callable[[str, str, DeliveryResult], None] | None = None) -> None:
        self.settings = settings
        self.database = settings.database_config
        self.lease = settings.workers.lease_seconds
        self.concurrency = concurrency
        self.owner = worker_name()
        self.engine = worker_engine(self.database, self.lease)
        self.stop = threading.Event()  # the send loops: finish the message in flight
        self._gate = gate
        self._gates: dict[str, Gate | None] = {}  # one per relay in a process, shared
        self._gates_lock = threading.Lock()
        self._suppress = suppress
        self._stopping: asyncio.Event | None = None

    def task(self, issue_id: str, batch: int) -> None:
        """The job: one batch (runs in procrastinate's thread for sync tasks)."""
        if self.stop.is_set():
            raise RuntimeError("stopping: left for another worker")
        relay = f"{self.settings.smtp.host}:{self.settings.smtp.port}"

        def gate() -> Gate | None:
            with self._gates_lock:
                if relay not in self._gates:
                    self._gates[relay] = (self._gate(self.engine, relay)
                                          if self._gate is not None else None)
                return self._gates[relay]

        def suppress(issue: str, result: DeliveryResult) -> None:
            if self._suppress is None:
                return
            with self.engine.connect() as conn:
                list_id = rows.list_of(conn, issue)
            if list_id is not None:
                self._suppress(list_id, issue, result)

        # One owner per job run: two jobs of one batch in this process (concurrency) must
        # not share a claim.
        owner = f"{self.owner}:{uuid.uuid4().hex[:6]}"
        done = deliver_batch(self.settings, self.engine, issue_id, batch, owner,
                             stop=self.stop, gate=gate, suppress=suppress)
        out = done.outcome
        log.info("%s batch %s: %s claimed, %s sent%s%s", issue_id, batch, done.claimed,
                 out.sent if out else 0,
                 f", stopped: {out.error}" if out and out.error else "",
                 ", issue complete" if done.complete else "")

    def request_stop(self) -> None:
        """SIGTERM: the message in flight is finished and recorded, then the worker ends."""
        self.stop.set()
        if self._stopping is not None:
            self._stopping.set()

    def run(self) -> None:
        """Until SIGTERM or SIGINT."""
        try:
            asyncio.run(self._main())
        finally:
            for made in self._gates.values():
                close = getattr(made, "close", None)
                if close is not None:
                    close()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        while not self._stopping.is_set():
            try:
                await self._session()
            except Exception as err:  # the server went away: open it again
                cause = " ".join(str(err.__cause__ or err).split())
                log.warning("worker lost the database (%s); reconnecting", cause)
            if not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=1)

    async def _session(self) -> None:
        """One connection's life: the procrastinate worker and the sweeper beside it."""
        assert self._stopping is not None
        app = queue.make_app(self.database, lease_seconds=self.lease, task=self.task)
        async with app.open_async():
            run = asyncio.create_task(app.run_worker_async(
                queues=[queue.QUEUE], name=self.owner, concurrency=self.concurrency,
                install_signal_handlers=False, delete_jobs="successful",
                update_heartbeat_interval=max(1.0, self.lease / 4),
                stalled_worker_timeout=self.lease,
                fetch_job_polling_interval=max(1.0, self.lease / 4)))
            sweep = asyncio.create_task(self._sweep(app))
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait({run, sweep, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                sweep.cancel()
                if not run.done():
                    run.cancel()  # graceful: procrastinate waits for the running jobs
                results = await asyncio.gather(run, sweep, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    raise result
            if not self._stopping.is_set():
                raise RuntimeError("the procrastinate worker stopped")

    async def _sweep(self, app: object) -> None:
        """Every half lease (at most 5 s: a batch given back by a stopped worker should not
        wait): stalled jobs back in the queue, orphaned batches queued."""
        assert self._stopping is not None
        while True:
            await asyncio.sleep(min(5.0, max(1.0, self.lease / 2)))
            await queue.retry_stalled(app, self.lease)  # type: ignore[arg-type]
            orphans = await asyncio.to_thread(rows.orphaned, self.engine)
            if orphans:
                queued = await queue.defer_batches(app, orphans)  # type: ignore[arg-type]
                if queued:
                    log.info("queued again %s batch(es) whose lease ended", queued)
