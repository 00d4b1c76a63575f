"""The send loop over several processes (delivery.parallel): real forked processes, a real
aiosmtpd on loopback, the real SQLite ledger, each process with its own connection to it."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.delivery.base import DeliveryBackend, DeliveryResult, MessageRefused
from newsletter.delivery.parallel import ledger_opener, process_count
from newsletter.delivery.smtp import SmtpBackend
from newsletter.dispatch import DispatchOptions, dispatch
from newsletter.ledger import SqliteLedger
from newsletter.message import OutgoingMessage
from newsletter.models import Subscriber
from newsletter.settings import SmtpSection
from tests.smtp_server import Sink, free_port, start_server
from tests.test_smtp_pipelining import PipeliningSink

ISSUE = "2026-11-24-brief"
READERS = [Subscriber(email=f"r{i}@example.com") for i in range(40)]


@pytest.fixture
def sink() -> PipeliningSink:
    return PipeliningSink()


@pytest.fixture
def port(sink: Sink) -> Iterator[int]:
    port = free_port()
    controller = start_server(sink, port=port)
    yield port
    controller.stop()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    ledger.record_issue(ISSUE, "brief", dt.date(2026, 11, 24), ())
    ledger.plan(ISSUE, ((s.email, f"<{s.email}>", "pending") for s in READERS))
    yield ledger
    ledger.close()


def build(subscriber: Subscriber) -> OutgoingMessage:
    return OutgoingMessage("brief", ISSUE, "brief@example.com", subscriber.email,
                           f"<{subscriber.email}>", "hi", b"Subject: hi\r\n\r\nhello\r\n")


def backends(port: int, pids: Path) -> Callable[[], DeliveryBackend]:
    """SMTP backends that note which process opened them (one line per connection)."""
    def open_backend() -> DeliveryBackend:
        with pids.open("a") as out:
            out.write(f"{os.getpid()}\n")
        return SmtpBackend(SmtpSection(host="127.0.0.1", port=port, security="none",
                                       timeout=5), "client.example.com")
    return open_backend


def options(**kwargs: object) -> DispatchOptions:
    defaults: dict[str, object] = {"connections": 4, "processes": 2, "retry_backoff": 0}
    return DispatchOptions(**{**defaults, **kwargs})  # type: ignore[arg-type]


def statuses(ledger: SqliteLedger) -> Counter[str]:
    return Counter(ledger.statuses(ISSUE).values())


def test_every_reader_exactly_once_from_two_processes(
        sink: PipeliningSink, port: int, ledger: SqliteLedger, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    results: list[DeliveryResult] = []
    outcome = dispatch(READERS, build, backends(port, pids), options(), ledger=ledger,
                       issue_id=ISSUE, on_result=results.append)
    assert outcome.sent == len(READERS) and not outcome.failed and outcome.error is None
    assert sorted(r.recipients[0] for r in sink.received) == sorted(
        s.email for s in READERS)
    assert statuses(ledger) == {"sent": len(READERS)}
    assert len(results) == len(READERS)  # every result reached the parent's callback
    openers = pids.read_text().split()
    assert len(openers) == 4 and len(set(openers)) == 2 and str(os.getpid()) not in openers


def test_refusals_and_retries_are_counted_as_with_threads(
        sink: PipeliningSink, port: int, ledger: SqliteLedger, tmp_path: Path) -> None:
    sink.refuse.update({"r3@example.com", "r8@example.com"})
    sink.defer.update({"r5@example.com": 1, "r6@example.com": 5})  # r6: every attempt
    outcome = dispatch(READERS, build, backends(port, tmp_path / "pids"),
                       options(retries=3), ledger=ledger, issue_id=ISSUE, sleep=lambda _: None)
    assert set(outcome.failed) == {"r3@example.com", "r8@example.com", "r6@example.com"}
    assert outcome.failed["r6@example.com"].status == "failed-temporary"
    assert outcome.sent == len(READERS) - 3
    assert Counter(r.recipients[0] for r in sink.received) == {
        s.email: 1 for s in READERS if s.email not in outcome.failed}
    assert statuses(ledger) == {"sent": 37, "failed-permanent": 2, "failed-temporary": 1}


def test_a_stop_mid_run_leaves_every_reply_recorded(
        sink: PipeliningSink, port: int, ledger: SqliteLedger, tmp_path: Path) -> None:
    stop = threading.Event()

    def on_message(s: PipeliningSink) -> None:
        if len(s.received) == 10:
            stop.set()
        time.sleep(0.02)  # a relay's pace: the stop reaches the processes mid-list

    sink.on_message = on_message
    outcome = dispatch(READERS, build, backends(port, tmp_path / "pids"), options(),
                       ledger=ledger, issue_id=ISSUE, stop=stop)
    assert outcome.stopped and outcome.error is None
    received = {r.recipients[0] for r in sink.received}
    recorded = {e for e, status in ledger.statuses(ISSUE).items() if status == "sent"}
    # Each connection finishes the message in hand and records it: nothing unconfirmed.
    assert recorded == received and outcome.sent == len(received) < len(READERS)
    assert outcome.sent + len(outcome.not_attempted) == len(READERS)
    assert {s.email for s in outcome.not_attempted} == {s.email for s in READERS} - received


def test_a_message_refusal_in_one_process_stops_every_process(
        sink: PipeliningSink, port: int, ledger: SqliteLedger, tmp_path: Path) -> None:
    sink.refuse_data["*"] = "554 5.7.1 rejected by policy"
    outcome = dispatch(READERS, build, backends(port, tmp_path / "pids"), options(),
                       ledger=ledger, issue_id=ISSUE)
    assert isinstance(outcome.error, MessageRefused)
    assert "554 5.7.1 rejected by policy" in str(outcome.error)
    assert outcome.sent == 0 and not outcome.failed
    assert {s.email for s in outcome.not_attempted} == {s.email for s in READERS}
    assert statuses(ledger) == {"pending": len(READERS)}


def test_a_pause_counts_failures_across_processes(
        sink: PipeliningSink, port: int, ledger: SqliteLedger, tmp_path: Path) -> None:
    sink.refuse.update(s.email for s in READERS)
    outcome = dispatch(READERS, build, backends(port, tmp_path / "pids"),
                       options(pause_after_failures=6), ledger=ledger, issue_id=ISSUE)
    assert outcome.paused and "failures in a row" in outcome.paused
    assert not outcome.failed and outcome.sent == 0  # absolved: nobody is to blame
    assert {s.email for s in outcome.not_attempted} == {s.email for s in READERS}
    assert statuses(ledger) == {"pending": len(READERS)}


def test_an_unreachable_server_is_one_error_and_everyone_stays_pending(
        ledger: SqliteLedger, tmp_path: Path) -> None:
    outcome = dispatch(READERS, build, backends(free_port(), tmp_path / "pids"), options(),
                       ledger=ledger, issue_id=ISSUE)
    assert outcome.error is not None and "cannot connect" in str(outcome.error)
    assert outcome.sent == 0
    assert {s.email for s in outcome.not_attempted} == {s.email for s in READERS}
    assert statuses(ledger) == {"pending": len(READERS)}


def test_processes_are_one_per_core_at_most() -> None:
    cores = os.cpu_count() or 1
    assert process_count(1) == 1
    assert process_count(64) == cores
    assert ledger_opener(None) is not None


def test_without_a_way_to_reopen_the_ledger_it_keeps_to_threads(
        sink: PipeliningSink, port: int, ledger: SqliteLedger, tmp_path: Path) -> None:
    class Wrapped(SqliteLedger):  # a ledger the fan-out does not know how to reopen
        pass

    wrapped = Wrapped(ledger.path)
    pids = tmp_path / "pids"
    outcome = dispatch(READERS, build, backends(port, pids), options(), ledger=wrapped,
                       issue_id=ISSUE)
    wrapped.close()
    assert outcome.sent == len(READERS)
    assert set(pids.read_text().split()) == {str(os.getpid())}


def test_a_recipient_spelled_otherwise_than_the_entry_is_still_that_readers(
        sink: PipeliningSink, port: int, ledger: SqliteLedger, tmp_path: Path) -> None:
    def shouting(subscriber: Subscriber) -> OutgoingMessage:
        message = build(subscriber)
        return OutgoingMessage(message.list_id, message.issue_id, message.sender,
                               subscriber.email.upper(), message.message_id, message.subject,
                               message.data)

    outcome = dispatch(READERS, shouting, backends(port, tmp_path / "pids"), options(),
                       ledger=ledger, issue_id=ISSUE)
    assert outcome.sent == len(READERS) and outcome.error is None
    assert statuses(ledger) == {"sent": len(READERS)}
