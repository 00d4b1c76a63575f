"""Delivery that never loses or doubles a message, against misbehaving aiosmtpd servers."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.delivery.throttle import Throttle
from newsletter.digest import DeliveryReport, load_inputs, run_send
from newsletter.ledger import SqliteLedger
from newsletter.settings import load_settings
from tests.conftest import ISSUE_DATE, Project, clean_env
from tests.smtp_server import Sink, free_port, start_server

DATE = dt.date.fromisoformat(ISSUE_DATE)
NOW = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)


def readers(n: int) -> list[str]:
    return [f"reader{i:03d}@example.com" for i in range(n)]


def use_list(project: Project, emails: list[str]) -> None:
    lines = "".join(f"      - {e}\n" for e in emails)
    project.subscribers.write_text(
        f"lists:\n  morning-brief:\n    title: The Morning Brief\n    subscribers:\n{lines}")


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def smtp(project: Project, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A loopback SMTP server the project is configured to use."""
    port = free_port()
    controller = start_server(sink, port=port)
    monkeypatch.setenv("NEWSLETTER_DELIVERY__BACKEND", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(port))
    monkeypatch.setenv("NEWSLETTER_SMTP__SECURITY", "none")
    yield port
    controller.stop()


def send(sleeps: list[float] | None = None, **kwargs) -> DeliveryReport:
    """One `send` run in this process, as the CLI does it (minus printing)."""
    settings = load_settings(Path("config/newsletter.yaml"))
    ledger = SqliteLedger(settings.ledger)
    try:
        [report] = run_send(load_inputs(settings), DATE, NOW, ledger,
                            sleep=(sleeps if sleeps is not None else []).append, **kwargs)
        return report
    finally:
        ledger.close()


def rows(project: Project, issue: str = f"morning-brief/{ISSUE_DATE}") -> dict:
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        return {email: (row.status, row.attempts) for email, row in
                ledger.deliveries(issue).items()}
    finally:
        ledger.close()


def received(sink: Sink) -> Counter[str]:
    return Counter(r.recipients[0] for r in sink.received)


ACTIVE = ["ada@example.com", "linus@example.com", "zoe@example.org"]


def test_a_451_is_retried_with_backoff_and_delivered(project: Project, sink: Sink,
                                                     smtp: int) -> None:
    sink.defer["linus@example.com"] = 2
    sleeps: list[float] = []
    report = send(sleeps)
    assert report.ok and report.sent == 3
    assert received(sink) == Counter(ACTIVE)
    assert sleeps == [5.0, 10.0]  # delivery.retry_backoff, doubled
    assert rows(project)["linus@example.com"] == ("sent", 3)


def test_a_451_past_the_retries_waits_for_the_next_send(project: Project, sink: Sink,
                                                        smtp: int) -> None:
    sink.defer["linus@example.com"] = 4
    first = send()
    assert not first.ok and [r.recipient for r in first.failed] == ["linus@example.com"]
    assert rows(project)["linus@example.com"] == ("failed-temporary", 3)
    second = send()
    assert second.ok and second.sent == 1 and second.earlier == 2
    assert received(sink) == Counter(ACTIVE)


def test_a_550_is_recorded_others_delivered_and_suppressed_afterwards(
        project: Project, sink: Sink, smtp: int) -> None:
    sink.refuse.add("ada@example.com")
    result = project.run("send", "--date", ISSUE_DATE,
                         env={k: v for k, v in os.environ.items() if k.startswith("NEWSLETTER")})
    assert result.returncode == 1
    assert received(sink) == Counter(["linus@example.com", "zoe@example.org"])
    assert rows(project)["ada@example.com"] == ("failed-permanent", 1)
    status = project.run("status", env=dict(os.environ))
    assert (f"morning-brief/{ISSUE_DATE} [sending]: 2 sent, 0 pending, 1 failed, 1 skipped"
            in status.stdout)
    assert ("failed-permanent: ada@example.com after 1 attempt(s): 550 5.1.1 mailbox "
            "unavailable") in status.stdout
    # The next issue honours the bounce, although the YAML still lists ada.
    sink.refuse.clear()
    project.write("articles/2026-11-25-new.md",
                  "---\ntitle: Next day\npublished: 2026-11-25T05:00:00+00:00\n---\nNews.\n")
    [next_day] = run_send(load_inputs(load_settings(project.settings)), DATE + dt.timedelta(1),
                          NOW, SqliteLedger(project.outbox / "newsletter.sqlite3"))
    assert ("ada@example.com", True) in [(s.email, r.startswith("suppressed"))
                                         for s, r in next_day.skipped]
    assert "ada@example.com" not in [r.recipients[0] for r in sink.received[2:]]


def test_a_dropped_connection_reconnects_and_carries_on(project: Project, sink: Sink,
                                                        smtp: int) -> None:
    sink.drop_at = {2}
    report = send()
    assert report.ok and received(sink) == Counter(ACTIVE)
    assert len(set(sink.sessions)) == 2


def test_a_relay_that_keeps_dropping_ends_the_run_and_loses_nothing(
        project: Project, sink: Sink, smtp: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP__RECONNECTS", "2")
    sink.drop_at = set(range(2, 100))
    report = send()
    # Each drop comes after the message went out whole (the server may have it): it goes
    # once more, never a third time, whatever smtp.reconnects allows.
    assert report.error is not None and "2 times without confirming it" in str(report.error)
    assert report.sent == 1 and len(report.not_attempted) == 2
    assert sorted(s for s, _ in rows(project).values()) == [
        "pending", "pending", "sent", "skipped"]
    sink.drop_at = set()
    again = send()
    assert again.ok and again.sent == 2 and again.earlier == 1
    assert received(sink) == Counter(ACTIVE)  # each exactly once


def test_an_unreachable_server_loses_nothing(project: Project, sink: Sink, smtp: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(free_port()))
    report = send()
    assert report.error is not None and report.sent == 0 and len(report.not_attempted) == 3
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp))
    assert send().ok and received(sink) == Counter(ACTIVE)


def test_a_sent_issue_is_not_sent_again_unless_asked(project: Project, sink: Sink,
                                                     smtp: int) -> None:
    assert send().sent == 3
    again = send()
    assert again.ok and again.sent == 0 and again.earlier == 3 and not again.not_attempted
    assert len(sink.received) == 3
    cli = project.run("send", "--date", ISSUE_DATE, env=dict(os.environ))
    assert cli.returncode == 0 and "already sent to every subscriber" in cli.stdout
    assert send(resend=True).sent == 3
    assert received(sink) == Counter({a: 2 for a in ACTIVE})


def test_the_issue_keeps_its_articles_and_the_next_issue_skips_them(
        project: Project, sink: Sink, smtp: int) -> None:
    first = send()
    project.write("articles/2026-11-24-late.md", """\
        ---
        title: A late scoop
        published: 2026-11-24T08:00:00+00:00
        lead: true
        ---
        Breaking.
        """)
    use_list(project, [*ACTIVE, "newcomer@example.com"])
    second = send()
    assert second.sent == 1  # the newcomer gets the issue the others got
    subjects = {r.message["Subject"] for r in sink.received}
    assert subjects == {f"The Morning Brief: {first.issue.lead.title}"}
    tomorrow = load_inputs(load_settings(project.settings))
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    [report] = run_send(tomorrow, DATE + dt.timedelta(1), NOW, ledger)
    carried = {a.id for a in (first.issue.lead, *first.issue.headlines)}
    assert carried.isdisjoint({a.id for a in (report.issue.lead, *report.issue.headlines)})
    assert report.issue.lead.title == "A late scoop"


def test_failures_in_a_row_pause_the_run_and_a_later_send_resumes(
        project: Project, sink: Sink, smtp: int, monkeypatch: pytest.MonkeyPatch) -> None:
    emails = readers(6)
    use_list(project, emails)
    monkeypatch.setenv("NEWSLETTER_DELIVERY__PAUSE_AFTER_FAILURES", "2")
    sink.refuse.update(emails[:2])
    report = send()
    assert report.paused and "2 failures in a row" in report.paused
    # The run of failures that paused it is no evidence against those readers: pending.
    assert report.sent == 0 and len(report.not_attempted) == 6 and not report.failed
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    assert ledger.issue(f"morning-brief/{ISSUE_DATE}").state == "paused"
    assert ledger.suppressed("morning-brief") == {}
    ledger.close()
    sink.refuse.clear()  # the cause is gone
    again = send()
    assert again.ok and again.sent == 6
    assert sorted(received(sink)) == emails


def test_parallel_connections_each_reused_up_to_their_cap(
        project: Project, sink: Sink, smtp: int, monkeypatch: pytest.MonkeyPatch) -> None:
    emails = readers(12)
    use_list(project, emails)
    monkeypatch.setenv("NEWSLETTER_SMTP__CONNECTIONS", "3")
    monkeypatch.setenv("NEWSLETTER_SMTP__MESSAGES_PER_CONNECTION", "3")
    assert send().ok
    assert received(sink) == Counter(emails)
    per_session = Counter(sink.sessions)
    assert len(per_session) >= 4 and max(per_session.values()) <= 3


def test_unsubscribe_command_is_honoured_while_the_yaml_lists_the_address(
        project: Project, sink: Sink, smtp: int) -> None:
    result = project.run("unsubscribe", "Zoe@Example.org", "--list", "morning-brief")
    assert result.returncode == 0
    assert "Zoe@example.org will get no more issues of list 'morning-brief'" in result.stdout
    report = send()
    assert report.ok and received(sink) == Counter(ACTIVE[:2])
    assert ("zoe@example.org", "suppressed") in [(s.email, r.split(":")[0])
                                                 for s, r in report.skipped]
    assert project.run("unsubscribe", "zoe@example.org", "--list", "nope").returncode == 2


def test_throttle_spaces_messages_without_real_waiting() -> None:
    now = [0.0]
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(round(seconds, 6))
        now[0] += seconds

    throttle = Throttle(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        throttle.wait()
    assert waited == [0.25, 0.25, 0.25, 0.25]
    assert now[0] == pytest.approx(1.0)


# --- other processes: the lock, SIGTERM and SIGKILL ---------------------------------------


def _spawn_send(project: Project, port: int, *extra: str,
                connections: int = 1) -> subprocess.Popen:
    env = {**clean_env(), "NEWSLETTER_DELIVERY__BACKEND": "smtp",
           "NEWSLETTER_SMTP__PORT": str(port), "NEWSLETTER_SMTP__SECURITY": "none",
           "NEWSLETTER_SMTP__CONNECTIONS": str(connections)}
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--date", ISSUE_DATE,
                             *extra], cwd=project.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_cannot_send_at_once_and_a_killed_holder_frees_the_lock(
        project: Project, sink: Sink, smtp: int) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from newsletter.lock import ProcessLock\n"
         "lock = ProcessLock(Path('outbox/newsletter.sqlite3.lock'), 'sending')\n"
         "lock.acquire(); print('locked', flush=True); sys.stdin.read()"],
        cwd=project.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        blocked = _spawn_send(project, smtp)
        _, err = blocked.communicate(timeout=60)
        assert blocked.returncode == 2
        assert f"sending is locked by pid {holder.pid}" in err and "Traceback" not in err
        assert sink.received == []
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    after = _spawn_send(project, smtp)
    _, err = after.communicate(timeout=60)
    assert after.returncode == 0, err
    assert received(sink) == Counter(ACTIVE)


def test_sigterm_finishes_the_message_in_flight_and_a_rerun_completes(
        project: Project, sink: Sink, smtp: int) -> None:
    emails = readers(20)
    use_list(project, emails)
    process: list[subprocess.Popen] = []

    def terminate_after_five(s: Sink) -> None:
        if len(s.received) == 5:
            process[0].send_signal(signal.SIGTERM)

    sink.on_message = terminate_after_five
    process.append(_spawn_send(project, smtp))
    out, err = process[0].communicate(timeout=60)
    assert process[0].returncode == 1, err
    assert "stopped on request" in out and "Traceback" not in err
    delivered = received(sink)
    recorded = {e for e, (status, _) in rows(project).items() if status == "sent"}
    assert recorded == set(delivered)  # everything the server took is recorded
    assert 5 <= len(recorded) < 20
    sink.on_message = None
    rerun = _spawn_send(project, smtp)
    rerun.communicate(timeout=60)
    assert rerun.returncode == 0
    assert received(sink) == Counter(emails)  # nobody twice, nobody missing


CRASH_RUNS = 5


@pytest.mark.parametrize("connections", [1, 3])
def test_sigkill_at_a_random_moment_then_rerun_covers_everyone(
        project: Project, sink: Sink, smtp: int, connections: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    emails = readers(40)
    use_list(project, emails)
    rng = random.Random(2026 + connections)
    duplicates_per_run = []
    for run in range(CRASH_RUNS):
        sink.received.clear()
        for db in project.outbox.glob("newsletter.sqlite3*"):
            db.unlink()
        kill_at = rng.randint(1, len(emails) - 1)
        process: list[subprocess.Popen] = []
        killed = threading.Event()

        def kill(s: Sink, at: int = kill_at, process: list = process,
                 killed: threading.Event = killed) -> None:
            if len(s.received) >= at and not killed.is_set():
                process[0].send_signal(signal.SIGKILL)
                killed.set()

        sink.on_message = kill
        process.append(_spawn_send(project, smtp, connections=connections))
        process[0].communicate(timeout=60)
        assert process[0].returncode == -signal.SIGKILL
        sink.on_message = None
        rerun = _spawn_send(project, smtp, connections=connections)
        _, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        counts = received(sink)
        assert set(counts) == set(emails), f"run {run}: someone got nothing"
        duplicates = sum(n - 1 for n in counts.values())
        assert duplicates <= connections, f"run {run}: {duplicates} duplicates"
        duplicates_per_run.append((kill_at, duplicates))
    with capsys.disabled():
        print(f"\ncrash test, {connections} connection(s): (killed after message, re-sent) "
              f"= {duplicates_per_run}")
