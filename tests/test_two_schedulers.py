"""`newsletter schedule` on two machines with a PostgreSQL database: one leads, the other
stands by; kill -9 the leader and the standby sends that morning's issue, once. Real
processes on the real PostgreSQL, on a clock the test sets (tests/clocked.py)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project, clean_env
from tests.pg import pg_url  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parent.parent
UTC = dt.UTC


class Machine:
    """One `newsletter schedule` process on the shared clock."""

    def __init__(self, project: Project, clock_file: Path, env: dict[str, str]) -> None:
        self.log = project.root / f"schedule-{id(self)}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.clocked", str(clock_file), "schedule"],
            cwd=project.root, env=env, stdout=subprocess.PIPE,
            stderr=self.log.open("w"), text=True)

    def line(self) -> str:
        return self.process.stdout.readline()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def machines(project: Project, pg_url: str) -> Iterator[tuple[Project, Path, dict[str, str]]]:  # noqa: F811
    settings = project.settings.read_text()
    project.settings.write_text(f"database: {pg_url}\n" + settings)
    clock_file = project.root / "clock"
    env = {**clean_env(), "PYTHONPATH": str(REPO)}
    yield project, clock_file, env


def _set(clock_file: Path, when: dt.datetime) -> None:
    clock_file.write_text(when.isoformat())
    # A new stamp every time, whatever the file system's timestamp granularity.
    stamp = time.time_ns()
    os.utime(clock_file, ns=(stamp, stamp))


def _emls(project: Project) -> list[Path]:
    return sorted(project.outbox.glob("**/*.eml"))


def _wait(condition, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_standby_takes_over_from_a_killed_leader_and_sends_the_morning_once(
        machines: tuple[Project, Path, dict[str, str]]) -> None:
    project, clock_file, env = machines
    _set(clock_file, dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    # Two machines start at once: one leads, the other stands by.
    one, two = Machine(project, clock_file, env), Machine(project, clock_file, env)
    try:
        lines = {one: one.line(), two: two.line()}
        leader, standby = (one, two) if "leading" in lines[one] else (two, one)
        assert "leading (other schedulers stand by)" in lines[leader], lines
        assert lines[standby].startswith("scheduler standing by: newsletter schedule pid "
                                         f"{leader.process.pid} on "), lines
        # The leader's morning: 07:00 comes, the leader sends, the standby does nothing.
        _set(clock_file, dt.datetime(2026, 11, 24, 6, 59, 59, tzinfo=UTC))
        time.sleep(0.3)
        assert _emls(project) == []
        _set(clock_file, dt.datetime(2026, 11, 24, 7, 0, 3, tzinfo=UTC))
        _wait(lambda: len(_emls(project)) == 3, "the leader sent the morning")
        first = _emls(project)
        # The next morning, with news, the leader is killed before 07:00.
        project.write("articles/2026-11-25-market.md", """\
            ---
            title: The fish market moves to the quay
            url: https://news.example.com/2026/11/market
            published: 2026-11-25T05:00:00+00:00
            ---
            Stalls open on the quay from Thursday.
            """)
        _set(clock_file, dt.datetime(2026, 11, 25, 6, 59, tzinfo=UTC))
        time.sleep(0.3)
        leader.kill()
        _set(clock_file, dt.datetime(2026, 11, 25, 7, 0, 3, tzinfo=UTC))
        line = standby.line()  # it takes over once the server ends the leader's session
        assert line.startswith("scheduler running:") and "leading" in line, line
        _wait(lambda: len(_emls(project)) == 6, "the standby sent the morning")
        time.sleep(0.5)  # and nothing more: once
        sent = _emls(project)
        assert len(sent) == 6 and set(first) < set(sent)
        assert sorted({p.parent.name for p in sent}) == ["2026-11-24", "2026-11-25"]
    finally:
        one.kill()
        two.kill()
        for log in sorted(project.root.glob("schedule-*.log")):  # shown when it fails
            print(log.name, log.read_text(), sep="\n")


def test_a_leader_killed_mid_send_leaves_the_rest_of_the_morning_to_the_standby(
        machines: tuple[Project, Path, dict[str, str]]) -> None:
    from collections import Counter

    from tests.smtp_server import Sink, free_port, start_server

    project, clock_file, env = machines
    port = free_port()
    sink = Sink()
    server = start_server(sink, port=port)
    env = {**env, "NEWSLETTER_DELIVERY__BACKEND": "smtp", "NEWSLETTER_SMTP__PORT": str(port)}
    _set(clock_file, dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    one, two = Machine(project, clock_file, env), Machine(project, clock_file, env)
    try:
        lines = {one: one.line(), two: two.line()}
        leader, standby = (one, two) if "leading" in lines[one] else (two, one)
        assert lines[standby].startswith("scheduler standing by"), lines
        # The relay has the first message when the leader dies, before its reply: the
        # leader's job already points at tomorrow, and the message is in flight.
        sink.on_message = lambda s: leader.kill() if len(s.received) == 1 else None
        _set(clock_file, dt.datetime(2026, 11, 24, 7, 0, 3, tzinfo=UTC))
        line = standby.line()
        assert line.startswith("scheduler running:"), line
        assert "catching up on Europe/London" in line, line
        wanted = {"ada@example.com", "linus@example.com", "zoe@example.org"}
        _wait(lambda: {r for m in sink.received for r in m.recipients} == wanted,
              "the standby sent the rest of the morning")
        time.sleep(0.5)
        counts = Counter(r for m in sink.received for r in m.recipients)
        # Everyone once; at most the message in flight twice.
        assert set(counts) == wanted and sum(counts.values()) - len(wanted) <= 1, counts
        assert leader.process.returncode == -signal.SIGKILL
    finally:
        one.kill()
        two.kill()
        server.stop()
        for log in sorted(project.root.glob("schedule-*.log")):
            print(log.name, log.read_text(), sep="\n")


def test_a_leader_whose_lock_session_ends_stops_and_exits_for_a_restart(
        machines: tuple[Project, Path, dict[str, str]], pg_url: str) -> None:  # noqa: F811
    import psycopg

    project, clock_file, env = machines
    _set(clock_file, dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    leader = Machine(project, clock_file, env)
    try:
        assert "leading" in leader.line()
        with psycopg.connect(pg_url, autocommit=True) as admin:  # as a server restart does
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s", (f"newsletter schedule pid {leader.process.pid} "
                                                 f"on {os.uname().nodename}"[:63],)).fetchall()
        assert ended == [(True,)]
        out, _ = leader.process.communicate(timeout=20)
        assert leader.process.returncode == 1
        assert "scheduler stopped" not in out
        log = leader.log.read_text()
        assert "the scheduler lost its lock: the lock is no longer held" in log or (
            "the scheduler lost its lock: the database is out of reach" in log), log
        assert "stopped scheduling — start it again" in log and "Traceback" not in log, log
    finally:
        leader.kill()
