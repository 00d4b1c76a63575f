"""1, 2 and 4 `newsletter worker` processes against a sink that waits 20 ms per message,
like a distant relay: throughput against 1 worker, in one run.

Needs a PostgreSQL server (NEWSLETTER_TEST_DATABASE_URL, else postgresql://postgres@
127.0.0.1:5432/test); each round gets a database of its own. Run:
    PYTHONPATH=. .venv/bin/python benchmarks/workers.py [--readers 400] [--delay 0.02]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from newsletter.db import parse_database  # noqa: E402
from newsletter.digest import compose_edition, load_inputs, render_edition  # noqa: E402
from newsletter.models import Subscriber  # noqa: E402
from newsletter.render import Renderer  # noqa: E402
from newsletter.settings import load_settings  # noqa: E402
from newsletter.workers.enqueue import enqueue  # noqa: E402
from tests.conftest import ISSUE_DATE, make_project  # noqa: E402
from tests.machines import id_sink, wait_for  # noqa: E402
from tests.pg import admin_connection, server_url, with_database  # noqa: E402
from tests.workers_db import plan_rows, prepare  # noqa: E402

ISSUE = f"morning-brief/{ISSUE_DATE}"


def one_round(workers: int, readers: int, delay: float, batch: int) -> float:
    """Messages a second with `workers` processes, the relay allowing one connection each."""
    name = f"nlbench_{uuid.uuid4().hex[:10]}"
    with admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url(), name)
    try:
        prepare(url)
        with tempfile.TemporaryDirectory() as folder, id_sink(delay) as (sink, port):
            project = make_project(Path(folder))
            env = {"NEWSLETTER_DATABASE": url, "NEWSLETTER_DELIVERY__BACKEND": "smtp",
                   "NEWSLETTER_SMTP__HOST": "127.0.0.1", "NEWSLETTER_SMTP__PORT": str(port),
                   "NEWSLETTER_WORKERS__BATCH": str(batch),
                   # smtp.connections is the relay's allowance over all workers together
                   # (the shared limits): a relay that takes one connection per worker.
                   "NEWSLETTER_SMTP__CONNECTIONS": str(workers),
                   "NEWSLETTER_WORKERS__LEASE_SECONDS": "60",
                   "NEWSLETTER_UNSUBSCRIBE__SECRET": "benchmark-secret-0123456789abcdef0123"}
            os.environ.update(env)
            full = {**os.environ, "PYTHONPATH": str(REPO)}
            procs = [subprocess.Popen([sys.executable, "-m", "newsletter",
                                       "--config", str(project.settings), "worker"],
                                      cwd=folder, env=full, stdout=subprocess.DEVNULL,
                                      stderr=open(Path(folder) / f"w{n}.log", "w"))  # noqa: SIM115
                     for n in range(workers)]
            try:
                wait_for(lambda: all("Starting worker" in (Path(folder) / f"w{n}.log")
                                     .read_text() for n in range(workers)), 60, "workers")
                emails = [f"reader{i:05}@example.com" for i in range(readers)]
                _queue(project.settings, url, emails)
                started = time.monotonic()
                wait_for(lambda: sink.count() >= readers, 600, "every message", every=0.01)
                return readers / (time.monotonic() - started)
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    proc.wait(timeout=30)
    finally:
        from newsletter.db import _engine

        _engine.cache_clear()
        with admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _queue(settings_path: Path, url: str, emails: list[str]) -> None:
    settings = load_settings(settings_path)
    inputs = load_inputs(settings)
    lst = inputs.roster.select("morning-brief")[0]
    edition = compose_edition(inputs, lst, dt.date.fromisoformat(ISSUE_DATE))
    rendered = render_edition(Renderer.from_settings(settings), edition, lst.locale, None)
    plan_rows(url, ISSUE, lst.id, emails, "example.com")
    database = parse_database(url)
    engine = create_engine(database.sqlalchemy_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
        enqueue(database, engine, edition, rendered.variants,
                [Subscriber(email=e) for e in emails],
                dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC), settings.workers.batch)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=400)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--batch", type=int, default=25)
    args = parser.parse_args()
    print(f"{args.readers} messages, sink waits {args.delay * 1000:.0f} ms a message, "
          f"batches of {args.batch}, the relay allowing one SMTP connection per worker "
          "(smtp.connections is the total over all workers)")
    base = None
    for workers in (1, 2, 4):
        rate = one_round(workers, args.readers, args.delay, args.batch)
        base = base or rate
        print(f"  {workers} worker(s): {rate:7.1f} msg/s  ({rate / base:.2f}x 1 worker)")


if __name__ == "__main__":
    main()
