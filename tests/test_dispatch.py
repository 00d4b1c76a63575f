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
