"""The scheduler's lock (newsletter.workers.leader) on the real PostgreSQL: one leader at a
time, a standby that takes over, and a leader cut off by a network split that stops before
the standby can lead."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from newsletter.db.url import parse_database
from newsletter.workers.leader import Leadership
from tests.pg import pg_url  # noqa: F401  (the fixture)

FAST = {"poll_seconds": 0.1, "check_seconds": 0.2, "fence_seconds": 1.0,
        "release_seconds": 2.5}


class Splittable:
    """A TCP proxy to PostgreSQL that can stop forwarding without closing anything, as a
    network split does: both ends keep their sockets and hear nothing more."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.split = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.split.is_set():
                    continue  # lost on the way
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(pg_url: str) -> Iterator[tuple[str, Splittable]]:  # noqa: F811
    parts = urlsplit(pg_url)
    made = Splittable(parts.hostname or "127.0.0.1", parts.port or 5432)
    via = urlunsplit((parts.scheme, f"{parts.username}@127.0.0.1:{made.port}", *parts[2:]))
    yield via, made
    made.close()


def test_one_leads_the_other_stands_by_and_takes_over_when_it_closes(
        pg_url: str) -> None:  # noqa: F811
    database = parse_database(pg_url)
    first, second = Leadership(database, **FAST), Leadership(database, **FAST)
    stop = threading.Event()
    told: list[str] = []
    try:
        assert first.wait(stop, told.append) and first.confirm()
        took = threading.Event()
        standby = threading.Thread(target=lambda: second.wait(stop, told.append)
                                   and took.set(), daemon=True)
        standby.start()
        deadline = time.monotonic() + 5
        while not told:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert told[0] == f"{first.name} (127.0.0.1) leads", told
        assert not took.wait(0.5)  # it stands by while the leader lives
        first.close()
        assert took.wait(5) and second.confirm()
    finally:
        stop.set()
        first.close()
        second.close()


def test_a_leader_whose_session_is_ended_stops_leading(pg_url: str) -> None:  # noqa: F811
    leader = Leadership(parse_database(pg_url), **FAST)
    reasons: list[str] = []
    try:
        assert leader.wait(threading.Event(), print)
        leader.on_lost(reasons.append)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = %s", (leader.name,))
        assert leader.lost.wait(3)
        deadline = time.monotonic() + 3
        while not reasons:  # the callbacks run just after `lost` is set
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not leader.confirm() and len(reasons) == 1, reasons
    finally:
        leader.close()


def test_a_leader_cut_off_by_a_split_stops_before_the_standby_leads(
        pg_url: str, proxy: tuple[str, Splittable]) -> None:  # noqa: F811
    via, network = proxy
    leader = Leadership(parse_database(via), **FAST)
    standby = Leadership(parse_database(pg_url), **FAST)
    stop = threading.Event()
    try:
        assert leader.wait(stop, print)
        stopped: list[float] = []
        leader.on_lost(lambda _: stopped.append(time.monotonic()))
        network.split.set()
        split = time.monotonic()
        threading.Timer(10, stop.set).start()  # the server never freeing it: a failure
        assert standby.wait(stop, lambda _: None)
        leads = time.monotonic()
        # The leader stopped by its fence, while the server still held its lock; the server
        # freed it only once the session had been silent for release_seconds.
        assert stopped and stopped[0] < leads, (stopped, leads)
        assert stopped[0] - split <= FAST["fence_seconds"] + 0.5
        assert leads - split >= FAST["release_seconds"] - FAST["check_seconds"] - 0.1
    finally:
        stop.set()
        leader.close()
        standby.close()
