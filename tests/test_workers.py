"""Workers on procrastinate, with real PostgreSQL, a real SMTP sink and real processes:
a worker killed mid-batch, PostgreSQL restarted mid-send, a worker cut off from the
database, and two sends of one issue."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from newsletter.db import engine as engine_of
from newsletter.db import parse_database
from newsletter.digest import compose_edition, load_inputs, render_edition
from newsletter.message import message_id
from newsletter.models import Subscriber
from newsletter.render import Renderer
from newsletter.settings import load_settings
from newsletter.workers.enqueue import enqueue
from tests.conftest import ISSUE_DATE, Project
from tests.machines import Cluster, id_sink, network_namespace, private_cluster, wait_for
from tests.pg import pg_url  # noqa: F401
from tests.workers_db import plan_rows, prepare

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cret-for-the-workers-tests-0123456789abcdef"
DOMAIN = "example.com"
ISSUE = f"morning-brief/{ISSUE_DATE}"


def worker_env(url: str, smtp_host: str, smtp_port: int, *, lease: int = 5,
               batch: int = 10) -> dict[str, str]:
    return {"NEWSLETTER_DATABASE": url, "NEWSLETTER_DELIVERY__BACKEND": "smtp",
            "NEWSLETTER_SMTP__HOST": smtp_host, "NEWSLETTER_SMTP__PORT": str(smtp_port),
            "NEWSLETTER_WORKERS__LEASE_SECONDS": str(lease),
            "NEWSLETTER_WORKERS__BATCH": str(batch),
            "NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET}


def readers(n: int) -> list[str]:
    return [f"Reader{i:03}@Example.com" for i in range(n)]


def expected_ids(n: int) -> set[str]:
    return {message_id(ISSUE, e, DOMAIN) for e in readers(n)}


def queue_issue(project: Project, env: dict[str, str], n: int,
                monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan the issue for `n` readers and queue it, as `send --queue` does after its plan."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(project.settings)
    inputs = load_inputs(settings)
    lst = inputs.roster.select("morning-brief")[0]
    day = dt.date.fromisoformat(ISSUE_DATE)
    edition = compose_edition(inputs, lst, day)
    rendered = render_edition(Renderer.from_settings(settings), edition, lst.locale,
                              settings.schedule.timezone)
    url = env["NEWSLETTER_DATABASE"]
    plan_rows(url, ISSUE, lst.id, readers(n), DOMAIN)
    database = parse_database(url)
    engine = create_engine(database.sqlalchemy_url)
    try:
        enqueue(database, engine, edition, rendered.variants,
                [Subscriber(email=e, name=f"Name {e[6:9]}") for e in readers(n)],
                dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC), settings.workers.batch)
    finally:
        engine.dispose()


def query(url: str, sql: str, **params: object) -> list[tuple]:
    # The program's pooled engine per URL (pg_url's teardown disposes of it): the tests
    # poll with this, and a new connection per poll would load a busy machine more.
    with engine_of(parse_database(url)).connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def unsent(url: str) -> int:
    return query(url, "SELECT count(*) FROM deliveries WHERE status <> 'sent'")[0][0]


@contextmanager
def workers(project: Project, env: dict[str, str], count: int = 1,
            prefix: tuple[str, ...] = (), stop_wait: float = 10
            ) -> Iterator[list[subprocess.Popen]]:
    """`count` real `newsletter worker` processes (SIGTERM afterwards; kill -9 after
    `stop_wait` seconds: a worker hung on a dead link may not get to finish)."""
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
            **env, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([*prefix, sys.executable, "-m", "newsletter",
                               "--config", str(project.settings), "worker"],
                              cwd=project.root, env=full, stdout=subprocess.DEVNULL,
                              stderr=open(_log_name(project), "w"))  # noqa: SIM115
             for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=stop_wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_name(project: Project) -> Path:
    return project.root / f"worker{len(list(project.root.glob('worker*.log')))}.log"


def logs(project: Project) -> str:
    return "\n".join(p.read_text() for p in sorted(project.root.glob("worker*.log")))


@pytest.fixture
def queued_db(pg_url: str) -> str:  # noqa: F811
    prepare(pg_url)
    return pg_url


def owned_by(url: str, pid: int) -> dict[str, int]:
    rows = query(url, "SELECT status, count(*) FROM deliveries WHERE lease_owner LIKE :o "
                 "GROUP BY status", o=f"%:{pid}:%")
    return {status: count for status, count in rows}


def test_kill_9_mid_batch_is_taken_over_after_the_lease(
        project: Project, queued_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 40
    with id_sink(delay=0.05) as (sink, port):
        env = worker_env(queued_db, "127.0.0.1", port)
        queue_issue(project, env, n, monkeypatch)
        with workers(project, env, 2) as (victim, _other):
            # Mid-batch: the victim has sent some of its batch and holds the rest.
            wait_for(lambda: (h := owned_by(queued_db, victim.pid)).get("sent", 0) >= 2
                     and h.get("pending", 0) >= 2, 60, "the victim mid-batch")
            victim.kill()
            victim.wait()
            at_kill = sink.count()
            wait_for(lambda: unsent(queued_db) == 0, 60, "the other worker to finish: "
                     + logs(project)[-2000:])
            wait_for(lambda: query(queued_db, "SELECT state FROM issues")[0][0] == "complete",
                     60, "the issue marked complete")
    ids = sink.ids()
    assert set(ids) == expected_ids(n)  # nobody missed
    duplicates = sum(c - 1 for c in Counter(ids).values())
    assert duplicates <= 1, (duplicates, at_kill)  # one connection: one message in flight


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with private_cluster() as made:
        yield made


def fresh_database(cluster: Cluster, host: str | None = None) -> str:
    """A new database on `cluster`, at revision 0002; its URL (via `host`)."""
    import psycopg

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE nl")
    prepare(cluster.url(database="nl"))
    return cluster.url(host, "nl")


def test_postgresql_restarted_mid_send_workers_reconnect_and_finish(
        project: Project, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_database(cluster)
    n = 60
    with id_sink(delay=0.05) as (sink, port):
        env = worker_env(url, "127.0.0.1", port)
        queue_issue(project, env, n, monkeypatch)
        with workers(project, env, 2):
            wait_for(lambda: sink.count() >= 10, 60, "the send under way")
            cluster.restart()
            wait_for(lambda: unsent(url) == 0, 60, "the workers to finish: "
                     + logs(project)[-3000:])
    ids = sink.ids()
    assert set(ids) == expected_ids(n)
    # At most the message each worker had in flight when the server went away.
    assert sum(c - 1 for c in Counter(ids).values()) <= 2


def test_a_worker_cut_off_from_the_database_stops_within_its_lease(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    lease, n = 5, 40
    with network_namespace() as ns, private_cluster(f"127.0.0.1,{ns.db_host}") as cluster, \
            id_sink(delay=0.1, host=ns.smtp_host) as (sink, port):
        url = fresh_database(cluster, ns.db_host)
        env = worker_env(url, ns.smtp_host, port, lease=lease)
        queue_issue(project, env, n, monkeypatch)
        local = cluster.url(database="nl")
        with workers(project, env, 1, prefix=tuple(ns.command()), stop_wait=2) as (cut_off,):
            wait_for(lambda: (h := owned_by(local, cut_off.pid)).get("sent", 0) >= 2
                     and h.get("pending", 0) >= 2, 60, "the worker mid-batch: "
                     + logs(project)[-2000:])
            ns.cut_database()
            cut = time.monotonic()
            with workers(project, {**env, "NEWSLETTER_DATABASE": local}, 1):
                wait_for(lambda: unsent(local) == 0, 60, "the other worker to finish")
            assert cut_off.poll() is None  # it hangs on the dead link, but sends nothing
    from_cut_off = [d.at - cut for d in sink.delivered if d.peer != ns.smtp_host]
    assert from_cut_off and max(from_cut_off) < lease  # it stopped within its lease
    ids = sink.ids()
    assert set(ids) == expected_ids(n)
    assert sum(c - 1 for c in Counter(ids).values()) <= 1


def test_two_sends_queue_each_batch_once_and_each_message_goes_once(
        project: Project, queued_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 30
    with id_sink() as (sink, port):
        env = worker_env(queued_db, "127.0.0.1", port)
        queue_issue(project, env, n, monkeypatch)
        # A second send of the same issue, as on another machine: its plan finds the same
        # rows; storing and queueing again adds no batch and no job.
        again = _enqueue_again(project, env, n)
        assert (again.batches, again.jobs) == (3, 0)
        assert query(queued_db, "SELECT count(*) FROM procrastinate_jobs")[0][0] == 3
        with workers(project, env, 2):
            wait_for(lambda: unsent(queued_db) == 0, 60, "the workers to finish")
            # A send after the workers are done finds nothing to queue.
            assert _enqueue_again(project, env, 0).batches == 0
    ids = sink.ids()
    assert sorted(ids) == sorted(expected_ids(n))  # each exactly once


def _enqueue_again(project: Project, env: dict[str, str], n: int):  # type: ignore[no-untyped-def]
    settings = load_settings(project.settings)
    inputs = load_inputs(settings)
    lst = inputs.roster.select("morning-brief")[0]
    edition = compose_edition(inputs, lst, dt.date.fromisoformat(ISSUE_DATE))
    rendered = render_edition(Renderer.from_settings(settings), edition, lst.locale, None)
    database = parse_database(env["NEWSLETTER_DATABASE"])
    engine = create_engine(database.sqlalchemy_url)
    try:
        return enqueue(database, engine, edition, rendered.variants,
                       [Subscriber(email=e) for e in readers(n)],
                       dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC), settings.workers.batch)
    finally:
        engine.dispose()


def test_sigterm_finishes_the_message_in_flight_and_gives_the_batch_back(
        project: Project, queued_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with id_sink(delay=0.3) as (sink, port):
        env = worker_env(queued_db, "127.0.0.1", port, lease=60)
        queue_issue(project, env, 10, monkeypatch)
        with workers(project, env, 1) as (worker,):
            wait_for(lambda: sink.count() >= 2, 60, "the send under way")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=10) == 0
        sent = query(queued_db, "SELECT count(*) FROM deliveries WHERE status = 'sent'")[0][0]
        assert 2 <= sent < 10
        assert sink.count() == sent  # the message in flight was finished and recorded
        # Given back: a new worker need not wait a 60 s lease.
        assert query(queued_db, "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT "
                     "NULL AND status <> 'sent'")[0][0] == 0
        with workers(project, env, 1):
            wait_for(lambda: unsent(queued_db) == 0, 60, "a new worker to finish")
    assert sorted(sink.ids()) == sorted(expected_ids(10))


def test_a_lease_is_on_the_database_clock_and_taken_over_when_it_ends(
        queued_db: str) -> None:
    from newsletter.workers import rows

    plan_rows(queued_db, ISSUE, "morning-brief", readers(4), DOMAIN)
    engine = create_engine(parse_database(queued_db).sqlalchemy_url)
    try:
        with engine.begin() as conn:
            rows.set_personal(conn, ISSUE, [(e, e, None, "v") for e in readers(4)])
            assert rows.assign_batches(conn, ISSUE, 3) == [1, 2]
            assert rows.assign_batches(conn, ISSUE, 3) == [1, 2]  # again: no new batch
        with engine.begin() as conn:
            assert len(rows.claim(conn, ISSUE, 1, "a", 0.5)) == 3
            assert rows.claim(conn, ISSUE, 1, "b", 30) == []  # a's lease holds
        wait_for(lambda: _claimable(engine, "b"), 5, "a's lease to end")
        with engine.begin() as conn:
            assert rows.renew(conn, ISSUE, 1, "a", 30) == 0  # a lost it: no renewal
            assert rows.claim(conn, ISSUE, 2, "b", 30)[0].address == readers(4)[3]
    finally:
        engine.dispose()


def test_an_in_process_send_takes_the_rows_a_dead_send_left_but_not_a_workers(
        queued_db: str) -> None:
    from newsletter.workers import rows

    plan_rows(queued_db, ISSUE, "morning-brief", readers(4), DOMAIN)
    emails = [e.lower() for e in readers(4)]
    engine = create_engine(parse_database(queued_db).sqlalchemy_url)
    try:
        with engine.begin() as conn:
            rows.set_personal(conn, ISSUE, [(e, e, None, "v") for e in readers(4)])
            rows.assign_batches(conn, ISSUE, 2)
            assert len(rows.claim(conn, ISSUE, 1, "host:1:worker", 120)) == 2
            # A send killed before it gave its rows back: its lease has two minutes left.
            assert rows.hold(conn, ISSUE, emails[2:], rows.SEND_OWNER + "host:2:dead",
                             120) == set(emails[2:])
        with engine.begin() as conn:  # the next send, under the send lock
            ours = rows.hold(conn, ISSUE, emails, rows.SEND_OWNER + "host:3:next", 120)
        assert ours == set(emails[2:])  # the dead send's rows, not the live worker's
    finally:
        engine.dispose()


def test_a_send_killed_mid_list_leaves_the_rest_to_the_next_send_at_once(
        project: Project, pg_url: str) -> None:  # noqa: F811
    n = 30
    _many_readers(project, n)
    with id_sink(delay=0.05) as (sink, port):
        env = worker_env(pg_url, "127.0.0.1", port, lease=120)
        first = _send(project, env, "--no-queue")
        wait_for(lambda: sink.count() >= 5, 60, "the first send under way")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        # The lease of the killed send has two minutes to run: the next send does not wait.
        second = _send(project, env, "--no-queue")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, (out, err)
        assert "not attempted" not in out + err
    counts = Counter(sink.ids())
    assert set(counts) == expected_ids(n)
    assert sum(counts.values()) - n <= 1, counts  # at most the message in flight twice
    assert query(pg_url, "SELECT state FROM issues") == [("complete",)]


def _claimable(engine, owner: str) -> bool:  # type: ignore[no-untyped-def]
    from newsletter.workers import rows

    with engine.begin() as conn:
        return len(rows.claim(conn, ISSUE, 1, owner, 30)) == 3


def test_send_queue_with_sqlite_is_one_line_of_error(project: Project) -> None:
    done = project.run("send", "--queue", "--date", ISSUE_DATE)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: send --queue needs a PostgreSQL database (database: postgresql://…); this "
        "one is the SQLite file outbox/newsletter.sqlite3"]


def test_worker_with_sqlite_is_one_line_of_error(project: Project) -> None:
    done = project.run("worker")
    assert done.returncode != 0
    assert done.stderr.startswith("error: newsletter worker needs a PostgreSQL database")
    assert len(done.stderr.strip().splitlines()) == 1


def _many_readers(project: Project, n: int) -> None:
    lines = "".join(f"      - email: {e}\n        name: Name {i}\n"
                    for i, e in enumerate(readers(n)))
    project.write("config/subscribers.yaml",
                  "lists:\n  morning-brief:\n    title: The Morning Brief\n"
                  "    subscribers:\n" + lines)


def _send(project: Project, env: dict[str, str], *args: str) -> subprocess.Popen:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
            **env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "newsletter", "--config",
                             str(project.settings), "send", "--date", ISSUE_DATE, *args],
                            cwd=project.root, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_send_queue_at_once_then_an_in_process_send_mail_each_reader_once(
        project: Project, pg_url: str) -> None:  # noqa: F811
    n = 30
    _many_readers(project, n)
    with id_sink(delay=0.1) as (sink, port):
        env = worker_env(pg_url, "127.0.0.1", port)
        # Two machines send the issue at once (the send lock makes one wait for the
        # other); `workers:` is set, so --queue is the default.
        first, second = (_send(project, env, "--wait", "30"),
                         _send(project, env, "--wait", "30"))
        outputs = sorted((p.communicate(timeout=60)[0] for p in (first, second)),
                         key=lambda out: "already" in out)
        assert [p.returncode for p in (first, second)] == [0, 0], outputs
        assert outputs == [
            f"{ISSUE}: {n} reader(s) for the workers in 3 batch(es) (3 new job(s))\n",
            f"{ISSUE}: {n} reader(s) for the workers in 3 batch(es) (0 new job(s), the "
            "others queued already)\n"]
        assert sink.count() == 0  # `send --queue` sends nothing itself
        # A worker and an in-process send of the queued issue at once: each sends only
        # the rows it holds (which of them gets which depends on who starts first).
        with workers(project, env, 1):
            inline = _send(project, env, "--no-queue")
            out, err = inline.communicate(timeout=60)
            assert inline.returncode in (0, 1), (out, err)
            wait_for(lambda: unsent(pg_url) == 0, 60, "everyone sent")
            wait_for(lambda: query(pg_url, "SELECT state FROM issues")[0][0] == "complete",
                     60, "the issue complete")
    assert sorted(sink.ids()) == sorted(expected_ids(n))  # each reader exactly once


def test_revision_0002_goes_down_and_up_again(queued_db: str) -> None:
    from alembic import command

    from newsletter.db.migrate import alembic_config

    def tables() -> set[str]:
        return {t for (t,) in query(queued_db, "SELECT tablename FROM pg_tables WHERE "
                                    "schemaname = 'public'")}

    assert {"procrastinate_jobs", "issue_templates"} <= tables()
    engine = create_engine(parse_database(queued_db).sqlalchemy_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        assert not {t for t in tables() if t.startswith("procrastinate_")}
        assert "issue_templates" not in tables()
        assert query(queued_db, "SELECT count(*) FROM information_schema.columns WHERE "
                     "table_name = 'deliveries' AND column_name = 'lease_until'") == [(0,)]
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert {"procrastinate_jobs", "issue_templates"} <= tables()
    finally:
        engine.dispose()


class _PausedRelay:
    """A relay gate whose relay another worker has paused (what RelayGate raises then)."""

    gap = 0.0

    def connection(self):  # type: ignore[no-untyped-def]
        from contextlib import nullcontext

        return nullcontext()

    def before_send(self) -> None:
        from newsletter.errors import DeliveryError

        err = DeliveryError("paused")
        err.reason = "20 failures in a row through the relay"  # type: ignore[attr-defined]
        raise err

    def after_send(self, ok: bool) -> None:
        pass


def test_a_relay_paused_for_everyone_pauses_the_issue_and_gives_the_batch_back(
        project: Project, queued_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from newsletter.workers.batch import deliver_batch
    from newsletter.workers.runner import worker_engine

    with id_sink() as (sink, port):
        env = worker_env(queued_db, "127.0.0.1", port)
        queue_issue(project, env, 5, monkeypatch)
        settings = load_settings(project.settings)
        engine = worker_engine(settings.database_config, 5)
        try:
            done = deliver_batch(settings, engine, ISSUE, 1, "me", stop=threading.Event(),
                                 gate=_PausedRelay, suppress=lambda *a: None)
        finally:
            engine.dispose()
    assert done.claimed == 5 and sink.count() == 0
    assert query(queued_db, "SELECT state, note FROM issues") == [
        ("paused", "20 failures in a row through the relay")]
    assert query(queued_db, "SELECT count(*) FROM deliveries WHERE lease_owner IS NULL "
                 "AND status = 'pending'") == [(5,)]


def test_the_next_send_queue_resumes_a_relay_paused_for_everyone(
        project: Project, pg_url: str) -> None:  # noqa: F811
    from newsletter.workers.limits import Paused, RelayGate

    _many_readers(project, 3)
    with id_sink() as (_sink, port):
        env = worker_env(pg_url, "127.0.0.1", port)
        prepare(pg_url)
        relay = f"127.0.0.1:{port}"
        gate = RelayGate(engine_of(parse_database(pg_url)), relay, rate_limit=0,
                         connections=1, pause_after_failures=2, lease_seconds=5, owner="t")
        try:
            gate.after_send(False)
            with pytest.raises(Paused):
                gate.after_send(False, "r@example.org: 550 no")
        finally:
            gate.close()
        assert query(pg_url, "SELECT count(*) FROM relay_limits WHERE paused_at IS NOT NULL"
                     )[0][0] == 1
        out, err = _send(project, env).communicate(timeout=60)
        assert f"resumed sending through {relay} (it was paused: " in out, (out, err)
        assert query(pg_url, "SELECT count(*) FROM relay_limits WHERE paused_at IS NOT NULL"
                     )[0][0] == 0
        assert f"{ISSUE}: 3 reader(s) for the workers" in out


def test_a_scheduled_morning_on_postgresql_goes_to_the_workers(
        project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    from newsletter.scheduler import scheduled_send

    _many_readers(project, 12)
    for key, value in worker_env(pg_url, "127.0.0.1", 1).items():
        monkeypatch.setenv(key, value)
    morning = dt.datetime.fromisoformat(f"{ISSUE_DATE}T07:00:05+00:00")
    with caplog.at_level("INFO", logger="newsletter"):
        scheduled_send(str(project.settings), now=morning)
    assert f"{ISSUE}: 12 reader(s) handed to the workers" in caplog.text, caplog.text
    # Queued as `send` queues it (batches of 10): nothing sent by the scheduler itself.
    assert query(pg_url, "SELECT count(*) FROM procrastinate_jobs")[0][0] == 2
    assert unsent(pg_url) == 12
