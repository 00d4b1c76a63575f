"""The send loop on its own, with the console backend."""

from __future__ import annotations

import io
import threading

import pytest

from newsletter.delivery.console import ConsoleBackend
from newsletter.dispatch import DispatchOptions, dispatch
from newsletter.models import Subscriber

READERS = [Subscriber(email=f"r{i}@example.com") for i in range(4)]


def test_a_bug_in_a_worker_surfaces_instead_of_passing_for_success() -> None:
    def build(subscriber: Subscriber):
        raise ValueError("template bug")

    with pytest.raises(ValueError, match="template bug"):
        dispatch(READERS, build, lambda: ConsoleBackend(io.StringIO()), DispatchOptions())


def test_a_stop_request_before_the_first_message_sends_nothing() -> None:
    stop = threading.Event()
    stop.set()
    stream = io.StringIO()
    outcome = dispatch(READERS, _never_built, lambda: ConsoleBackend(stream),
                       DispatchOptions(), stop=stop)
    assert outcome.stopped and outcome.sent == 0 and not outcome.failed
    assert outcome.not_attempted == READERS
    assert stream.getvalue() == ""


def _never_built(subscriber: Subscriber):
    raise AssertionError("nothing may be built after a stop request")


def test_a_round_that_needs_no_retry_ends_the_send_without_waiting() -> None:
    # The wait before a retry round is only for readers to try again: a send where every
    # reader was taken must end at once, not after retry_backoff (5 s per worker batch).
    waits: list[float] = []
    stream = io.StringIO()
    outcome = dispatch(READERS, lambda s: _message(s), lambda: ConsoleBackend(stream),
                       DispatchOptions(retries=3, retry_backoff=5.0), sleep=waits.append)
    assert outcome.sent == len(READERS) and not outcome.failed
    assert waits == []


def _message(subscriber: Subscriber):  # type: ignore[no-untyped-def]
    from newsletter.message import OutgoingMessage

    return OutgoingMessage(list_id="brief", issue_id="brief/2026-11-24",
                           sender="brief@example.com", recipient=subscriber.email,
                           message_id=f"<{subscriber.email}>", subject="hi",
                           data=b"Subject: hi\r\n\r\nhello\r\n")
