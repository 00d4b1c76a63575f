"""`newsletter worker`: deliver the batches `send --queue` hands out, until stopped."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import click

from newsletter.cli.common import App, cli, pass_app, user_errors
from newsletter.delivery import DeliveryResult
from newsletter.digest import Enqueue, Hold, RenderedEdition
from newsletter.errors import ConfigError
from newsletter.models import Subscriber
from newsletter.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.workers.batch import Gate
    from newsletter.workers.hold import Holding


def require_postgres(settings: Settings, what: str) -> None:
    """The workers' queue lives in PostgreSQL: one line of error otherwise."""
    if not settings.database_config.is_postgres:
        raise ConfigError(f"{what} needs a PostgreSQL database (database: postgresql://…); "
                          f"this one is the SQLite file {settings.database_config.display()}")


@cli.command()
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Batches this process delivers at once.")
@pass_app
@user_errors
def worker(app: App, concurrency: int) -> None:
    """Deliver queued batches until stopped (SIGTERM finishes the message in flight).

    Run one or more on any machine that reaches the database and the relay; a batch whose
    worker died is taken over by another after workers.lease_seconds.
    """
    settings = app.settings
    require_postgres(settings, "newsletter worker")
    from newsletter.workers.runner import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    Worker(settings, concurrency=concurrency, gate=_relay_gate(settings),
           suppress=_suppressor(settings)).run()


def _relay_gate(settings: Settings) -> Callable[[Engine, str], Gate]:
    """The limits every worker shares per relay (rate, connections, pause)."""
    from newsletter.workers.limits import RelayGate
    from newsletter.workers.runner import worker_name

    def make(engine: Engine, relay: str) -> Gate:
        return RelayGate(engine, relay, rate_limit=settings.delivery.rate_limit,
                         connections=settings.smtp.connections,
                         pause_after_failures=settings.delivery.pause_after_failures,
                         lease_seconds=settings.workers.lease_seconds, owner=worker_name())
    return make


def _suppressor(settings: Settings) -> Callable[[str, str, DeliveryResult], None]:
    """A hard refusal suppresses the address for the list, as an in-process send does."""
    def suppress(list_id: str, issue_id: str, result: DeliveryResult) -> None:
        from newsletter.db import open_ledger

        ledger = open_ledger(settings)
        try:
            ledger.suppress(list_id, result.recipient, "refused",
                            {"issue": issue_id, "reply": result.reply, "source": "smtp"})
        finally:
            ledger.close()
    return suppress


def queue_for_workers(settings: Settings, asked: bool | None) -> Enqueue | None:
    """`send`'s hand-over to the workers: asked for with --queue, else the default with a
    PostgreSQL database and a `workers:` section; None to send in this process."""
    if asked is None:
        asked = settings.database_config.is_postgres and "workers" in settings.model_fields_set
    if not asked:
        return None
    require_postgres(settings, "send --queue")
    from newsletter.db import engine
    from newsletter.workers.enqueue import enqueue

    database = settings.database_config
    resumed: list[bool] = []

    def hand_over(rendered: RenderedEdition, todo: Iterable[Subscriber], now: dt.datetime
                  ) -> int:
        if not resumed:
            # The publisher's next send ends a pause of the relay, as a paused in-process
            # run ends with the run: they have read its reason and fixed the cause.
            from newsletter.workers.limits import clear_pause

            relay = f"{settings.smtp.host}:{settings.smtp.port}"
            for name, reason in clear_pause(engine(database), relay):
                click.echo(f"resumed sending through {name} (it was paused: {reason})")
            resumed.append(True)
        done = enqueue(database, engine(database), rendered.edition, rendered.variants, todo,
                       now, settings.workers.batch)
        jobs = (f"{done.jobs} new job(s)" if done.jobs == done.batches
                else f"{done.jobs} new job(s), the others queued already")
        click.echo(f"{done.issue_id}: {done.readers} reader(s) for the workers in "
                   f"{done.batches} batch(es) ({jobs})")
        return done.readers

    return hand_over


def hold_for_send(settings: Settings) -> Hold | None:
    """An in-process send on PostgreSQL leases its rows, as a worker does (see hold.py)."""
    database = settings.database_config
    if not database.is_postgres:
        return None
    from newsletter.db import engine
    from newsletter.workers.hold import hold_rows
    from newsletter.workers.rows import SEND_OWNER
    from newsletter.workers.runner import worker_name

    owner = SEND_OWNER + worker_name()

    def hold(issue_id: str) -> AbstractContextManager[Holding]:
        return hold_rows(engine(database), issue_id, owner, settings.workers.lease_seconds)
    return hold
