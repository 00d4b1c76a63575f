"""Shared per-relay limits (newsletter.workers.limits) across real worker processes on the
real PostgreSQL: the rate, the connections, a killed holder's slot, the pause."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from newsletter.workers.limits import Paused, RelayGate, clear_pause, create_tables
from tests.pg import pg_url  # noqa: F401  (the fixture)
from tests.smtp_server import free_port

REPO = Path(__file__).resolve().parent.parent
RELAY = "smtp.example.org:587"


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:  # noqa: F811
    made = _engine(pg_url)
    create_tables(made)
    yield made
    made.dispose()


class Workers:
    """Worker processes running tests/relay_worker.py, started together."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, mode: str, n: int = 1, **options: object) -> list[subprocess.Popen[str]]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        started = []
        for _ in range(n):
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.relay_worker", self.url, RELAY, mode,
                 *(f"{k}={v}" for k, v in options.items())],
                cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.processes.append(process)
            started.append(process)
        for process in started:
            assert json.loads(process.stdout.readline())["event"] == "ready"  # type: ignore[union-attr]
        for process in started:
            process.stdin.write("go\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        return started

    def events(self, process: subprocess.Popen[str], timeout: float = 20) -> list[dict[str, Any]]:
        out, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0
        return [json.loads(line) for line in out.splitlines()]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(pg_url: str, engine: sa.Engine) -> Iterator[Workers]:  # noqa: F811
    made = Workers(pg_url)
    yield made
    made.stop()


def test_the_rate_holds_over_three_processes_together(workers: Workers) -> None:
    rate, each = 40, 25
    started = workers.start("rate", 3, rate=rate, count=each)
    sends = [e for p in started for e in workers.events(p) if e["event"] == "send"]
    assert len(sends) == 3 * each
    # In every one-second window at most `rate` slots (+1: a window may hold both ends).
    # Three per-process limits would allow three times as many.
    slots = sorted(e["slot"] for e in sends)
    assert _busiest(slots) <= rate + 1, _busiest(slots)
    assert len(slots) - 1 <= rate * (slots[-1] - slots[0]) + 1e-3
    # The messages really started then: no earlier than their slot, and a sender the
    # operating system woke late can only bunch as many as fit in its lateness.
    late = max(e["at"] - e["slot"] for e in sends)
    assert min(e["at"] - e["slot"] for e in sends) >= -0.002  # the clocks are one
    assert _busiest(sorted(e["at"] for e in sends)) <= rate * (1 + late) + 1


def _busiest(times: list[float], window: float = 1.0) -> int:
    """The most of `times` (sorted) in any `window` seconds."""
    return max(sum(1 for t in times[i:] if t < start + window)
               for i, start in enumerate(times))


class Counting(SMTP):
    """An SMTP session that counts the sessions open at once on its `stats`."""

    stats: dict[str, int]
    guard: threading.Lock

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        with self.guard:
            self.stats["open"] += 1
            self.stats["most"] = max(self.stats["most"], self.stats["open"])
            self.stats["sessions"] += 1
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        with self.guard:
            self.stats["open"] -= 1
        super().connection_lost(exc)


class Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def test_connections_never_exceed_the_limit_over_three_processes(workers: Workers) -> None:
    stats = {"open": 0, "most": 0, "sessions": 0}

    class Session(Counting):
        pass

    Session.stats, Session.guard = stats, threading.Lock()

    class Sink(Controller):
        def factory(self) -> SMTP:
            return Session(self.handler)

    port = free_port()
    sink = Sink(Accept(), hostname="127.0.0.1", port=port)
    sink.start()
    stats["sessions"] = 0  # start() opens one session itself, to see the server is up
    try:
        # 3 processes × 2 threads each want a connection; 2 are allowed.
        started = workers.start("smtp", 3, connections=2, port=port, count=3, threads=2)
        for process in started:
            assert workers.events(process)[-1]["event"] == "done"
    finally:
        sink.stop()
    assert stats["sessions"] == 3 * 2 * 3
    assert stats["most"] == 2, stats  # never 3; and 2 at once did happen


def test_a_killed_holders_slot_frees_after_its_lease(workers: Workers, engine: sa.Engine) -> None:
    lease = 1.0
    (holder,) = workers.start("hold", connections=1, lease=lease)
    assert json.loads(holder.stdout.readline())["event"] == "held"  # type: ignore[union-attr]
    gate = RelayGate(engine, RELAY, rate_limit=0, connections=1, pause_after_failures=5,
                     lease_seconds=lease, owner="test")
    try:
        # While the holder lives its keeper renews the lease: the slot stays taken.
        deadline = time.monotonic() + 2.5 * lease
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                owner, live = conn.execute(sa.text(
                    "SELECT owner, expires_at > clock_timestamp() FROM relay_connections "
                    "WHERE relay = :r AND slot = 0"), {"r": RELAY}).one()
            assert owner.startswith("test-hold#") and live
            time.sleep(0.1)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        with gate.connection():
            waited = time.monotonic() - killed
    finally:
        gate.close()
    # Not at once (nothing frees it but the lease), and not much after it.
    assert 0.5 * lease <= waited <= lease + 1.5, waited


def test_failures_in_a_row_across_processes_pause_all_of_them(
        workers: Workers, engine: sa.Engine) -> None:
    pause = 6
    started = workers.start("fail", 3, pause=pause, rate=30)
    outcomes = [workers.events(p)[-1] for p in started]
    assert all(o["event"] == "paused" for o in outcomes), outcomes
    assert all(f"{pause} failures in a row through {RELAY}" in o["reason"] for o in outcomes)
    # Each process failed fewer than `pause` itself: only the shared count paused them;
    # after the pause each sent at most the one message it had in flight.
    assert all(o["failures"] < pause for o in outcomes), outcomes
    assert pause <= sum(o["failures"] for o in outcomes) <= pause + 3, outcomes
    # The next `send` resumes the relay.
    assert [relay for relay, _ in clear_pause(engine)] == [RELAY]
    gate = RelayGate(engine, RELAY, rate_limit=30, connections=1, pause_after_failures=pause,
                     lease_seconds=5, owner="test")
    try:
        gate.before_send()
    finally:
        gate.close()


def _gate(engine: sa.Engine, **options: Any) -> RelayGate:
    values: dict[str, Any] = {"rate_limit": 0, "connections": 1, "pause_after_failures": 3,
                              "lease_seconds": 5, "owner": "test"}
    return RelayGate(engine, RELAY, **{**values, **options})


def test_a_success_anywhere_breaks_the_row(engine: sa.Engine) -> None:
    one, two = _gate(engine, rate_limit=1000), _gate(engine, rate_limit=1000)
    try:
        for _ in range(2):
            one.before_send()
            one.after_send(False)
        two.before_send()
        two.after_send(True)
        two.before_send()  # carries the success: the count starts again
        for _ in range(2):
            one.before_send()
            one.after_send(False)
        one.before_send()
        with pytest.raises(Paused) as paused:
            one.after_send(False, detail="r@example.org: 550 no")
        assert "(last: r@example.org: 550 no)" in paused.value.reason
        with pytest.raises(Paused):
            two.before_send()  # the other worker sees it before its next message
    finally:
        one.close()
        two.close()


def test_without_a_rate_limit_the_pause_is_seen_within_a_second(engine: sa.Engine) -> None:
    one, two = _gate(engine), _gate(engine)
    try:
        two.before_send()
        for _ in range(2):
            one.after_send(False)
        with pytest.raises(Paused):
            one.after_send(False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                two.before_send()
            except Paused:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the pause was not seen")
    finally:
        one.close()
        two.close()


def test_round_trips_per_message(engine: sa.Engine) -> None:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    unlimited, limited = _gate(engine), _gate(engine, rate_limit=100_000)
    try:
        unlimited._stop.set()  # only the messages' own statements are counted
        limited._stop.set()
        limited.before_send()  # its connection made (and set up) once
        statements.clear()
        for _ in range(50):
            unlimited.before_send()
            unlimited.after_send(True)
        assert statements == []  # no rate limit: no round trip at all
        for _ in range(50):
            limited.before_send()
            limited.after_send(True)
        assert len(statements) == 50  # one each, in autocommit: no BEGIN/COMMIT
    finally:
        unlimited.close()
        limited.close()


def _migration() -> Any:
    import importlib.util

    path = REPO / "newsletter/db/migrations/versions/0003_relay_limits.py"
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_migration(url: str, step: str) -> None:
    """Revision 0003's upgrade or downgrade on `url`, as Alembic runs it."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    migration = _migration()
    assert (migration.revision, migration.down_revision) == ("0003", "0002")
    made = _engine(url)
    with made.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        getattr(migration, step)()
    made.dispose()


def test_revision_0003_makes_the_tables_the_gate_and_the_job_store_use(
        pg_url: str) -> None:  # noqa: F811
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    from newsletter.workers.limits import METADATA

    run_migration(pg_url, "upgrade")
    made = _engine(pg_url)
    try:
        inspector = sa.inspect(made)
        for table in METADATA.tables.values():
            assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.c.keys())
        gate = _gate(made, rate_limit=50)
        gate.before_send()
        gate.close()
        store = SQLAlchemyJobStore(engine=made)
        jobs = store.jobs_t
        assert {c["name"] for c in inspector.get_columns("apscheduler_jobs")} == set(
            jobs.c.keys())
        assert {i["name"] for i in inspector.get_indexes("apscheduler_jobs")} == {
            i.name for i in jobs.indexes}
    finally:
        made.dispose()
    run_migration(pg_url, "downgrade")
    checked = _engine(pg_url)
    assert not sa.inspect(checked).get_table_names()
    checked.dispose()
