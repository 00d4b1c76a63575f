"""PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, against a real aiosmtpd that
offers it (aiosmtpd 1.4 handles pipelined commands but does not advertise them), and a raw
server that answers nothing until it has the whole group."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from newsletter.delivery.base import DeliveryBackend, MessageRefused
from newsletter.delivery.smtp import SmtpBackend
from newsletter.delivery.wire import stuff
from newsletter.errors import DeliveryError
from newsletter.message import OutgoingMessage
from newsletter.settings import SmtpSection
from tests.smtp_server import Sink, free_port, start_server

BODY = b"Subject: hi\r\n\r\n.leading dot\r\nline\r\n..two\r\n.\r\nend\r\n"


class PipeliningSink(Sink):
    """The tests' aiosmtpd sink, offering PIPELINING; `drop_at_rcpt`: RCPT numbers
    (1-based) at which it closes the connection, mid-group."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drop_at_rcpt: set[int] = set()
        self.rcpt_commands = 0
        self.closing_once: set[str] = set()  # recipients answered 421 once at RCPT

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.rcpt_commands += 1
        if self.rcpt_commands in self.drop_at_rcpt:
            server.transport.close()
            return "421 closing"  # never arrives
        if address in self.closing_once:
            self.closing_once.discard(address)
            return "421 4.3.2 shutting down"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


def message(to: str, data: bytes = BODY) -> OutgoingMessage:
    return OutgoingMessage("list", "issue", "brief@example.com", to, f"<{to}>", "hi", data)


@pytest.fixture
def sink() -> PipeliningSink:
    return PipeliningSink()


@pytest.fixture
def backend(sink: PipeliningSink) -> Iterator[SmtpBackend]:
    port = free_port()
    controller = start_server(sink, port=port)
    backend = SmtpBackend(SmtpSection(host="127.0.0.1", port=port, security="none",
                                      timeout=5, reconnects=2), "client.example.com")
    backend.open()
    yield backend
    backend.close()
    controller.stop()


def test_the_server_offers_it_and_the_client_uses_it(backend: SmtpBackend,
                                                     sink: PipeliningSink) -> None:
    assert backend._pipelining
    results = [backend.send(message(f"r{i}@example.com")) for i in range(5)]
    assert [r.status for r in results] == ["sent"] * 5
    assert [r.recipients for r in sink.received] == [[f"r{i}@example.com"] for i in range(5)]
    # The bytes arrive as sent: dot-stuffing undone by the server.
    assert all(r.data.replace(b"\r\n", b"\n") == BODY.replace(b"\r\n", b"\n")
               for r in sink.received)
    assert len(set(sink.sessions)) == 1


def test_a_refused_recipient_keeps_the_replies_in_step(backend: SmtpBackend,
                                                       sink: PipeliningSink) -> None:
    sink.refuse.add("bad@example.com")
    sink.rcpt_replies["full@example.com"] = "452 4.2.2 mailbox full"
    sink.rcpt_replies["blocked@example.com"] = "550 5.7.1 you are on a blocklist"
    statuses = [backend.send(message(to)).status for to in (
        "bad@example.com", "a@example.com", "full@example.com", "blocked@example.com",
        "b@example.com")]
    assert statuses == ["failed-permanent", "sent", "failed-temporary", "failed-temporary",
                        "sent"]
    assert [r.recipients for r in sink.received] == [["a@example.com"], ["b@example.com"]]


def test_a_refused_sender_is_the_messages_fault(backend: SmtpBackend,
                                                sink: PipeliningSink) -> None:
    sink.refuse_sender = "553 5.7.1 sender not allowed"
    with pytest.raises(MessageRefused, match=r"refused the sender brief@example\.com"):
        backend.send(message("a@example.com"))
    sink.refuse_sender = "451 4.3.0 later"
    assert backend.send(message("a@example.com")).status == "failed-temporary"
    sink.refuse_sender = None
    assert backend.send(message("a@example.com")).ok  # the session is still in step


def test_refusals_after_data(backend: SmtpBackend, sink: PipeliningSink) -> None:
    sink.refuse_data["spam@example.com"] = "554 5.7.1 rejected by policy"
    sink.refuse_data["gone@example.com"] = "550 5.1.1 no such user"
    sink.refuse_data["full@example.com"] = "552 5.2.2 mailbox full"
    with pytest.raises(MessageRefused, match=r"554 5\.7\.1 rejected by policy"):
        backend.send(message("spam@example.com"))
    assert backend.send(message("gone@example.com")).status == "failed-permanent"
    assert backend.send(message("full@example.com")).status == "failed-temporary"
    assert backend.send(message("ok@example.com")).ok
    assert [r.recipients for r in sink.received] == [["ok@example.com"]]


def test_a_drop_mid_group_resends_on_a_new_connection(backend: SmtpBackend,
                                                      sink: PipeliningSink) -> None:
    sink.drop_at_rcpt.add(2)
    assert backend.send(message("a@example.com")).ok
    assert backend.send(message("b@example.com")).ok  # dropped at its RCPT, then again
    assert [r.recipients for r in sink.received] == [["a@example.com"], ["b@example.com"]]
    assert len(set(sink.sessions)) == 2


def test_a_421_in_the_group_is_a_drop(backend: SmtpBackend, sink: PipeliningSink) -> None:
    sink.closing_once.add("a@example.com")
    assert backend.send(message("a@example.com")).ok
    assert [r.recipients for r in sink.received] == [["a@example.com"]]


def test_a_drop_after_the_final_dot_goes_again_once(backend: SmtpBackend,
                                                    sink: PipeliningSink) -> None:
    sink.drop_at = {1, 2}  # the first two DATA: the message went out whole both times
    with pytest.raises(DeliveryError, match="2 times without confirming it"):
        backend.send(message("a@example.com"))
    assert sink.received == []


def test_a_server_that_keeps_dropping_ends_the_run(backend: SmtpBackend,
                                                   sink: PipeliningSink) -> None:
    sink.drop_at_rcpt.update(range(1, 10))
    with pytest.raises(DeliveryError, match="dropped the connection 3 times in a row"):
        backend.send(message("a@example.com"))


class StrictServer:
    """Answers no command of a group until the group's DATA has arrived: a client that
    waited for the reply to MAIL FROM would wait for ever (here: its timeout)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 strict\r\n")
            group: list[bytes] = []
            while line := lines.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-strict\r\n250 PIPELINING\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                elif verb == b"DATA":
                    conn.sendall(b"250 ok\r\n" * len(group) + b"354 go\r\n")
                    group.clear()
                    body = b""
                    while (line := lines.readline()) not in (b".\r\n", b""):
                        body += line
                    self.received.append(body)
                    conn.sendall(b"250 queued\r\n")
                else:
                    group.append(line)


def test_the_whole_group_goes_before_any_reply_is_awaited() -> None:
    server = StrictServer()
    backend = SmtpBackend(SmtpSection(host="127.0.0.1", port=server.port, security="none",
                                      timeout=3, reconnects=0), "client.example.com")
    with backend:
        assert backend.send(message("a@example.com")).ok
        assert backend.send(message("b@example.com")).ok
    assert server.received == [stuff(BODY)[:-3]] * 2  # dot-stuffed on the wire


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    sink, port = Sink(), free_port()  # aiosmtpd as it is: no PIPELINING offered
    controller: Controller = start_server(sink, port=port)
    sink.refuse.add("bad@example.com")
    try:
        with SmtpBackend(SmtpSection(host="127.0.0.1", port=port, security="none"),
                         "client.example.com") as backend:
            assert isinstance(backend, SmtpBackend) and not backend._pipelining
            assert backend.send(message("bad@example.com")).status == "failed-permanent"
            assert backend.send(message("a@example.com")).ok
    finally:
        controller.stop()
    assert [r.recipients for r in sink.received] == [["a@example.com"]]


@pytest.mark.parametrize("data", [
    BODY, b".", b"", b"no final line break", b"a\n.bare LF\r\n", b"..\r\n.\r\n",
    b"x\r\n.\r\n.\r\n", b"\r\n.", "Zoë\r\n.é\r\n".encode()])
def test_dot_stuffing_is_smtplibs(data: bytes) -> None:
    quoted = smtplib._quote_periods(data)  # type: ignore[attr-defined]
    expected = quoted + (b"" if quoted[-2:] == b"\r\n" else b"\r\n") + b".\r\n"
    assert stuff(data) == expected


# The next message's commands behind this body (RFC 2920 3.1): one round trip a message.

class RawServer:
    """PIPELINING on any number of connections: keeps the bodies that ended with the final
    dot (what a real MTA delivers) and the text of each DATA cut off by a closed
    connection (what it discards). With `watch_ahead`, before answering a final dot it
    looks (up to 0.5 s) whether the next MAIL FROM is already there: `ahead`, per body."""

    def __init__(self, watch_ahead: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.watch_ahead = watch_ahead
        self.delivered: list[bytes] = []
        self.aborted: list[bytes] = []
        self.ahead: list[bool] = []
        self.done = threading.Event()  # set when a connection ends
        self.ended = 0  # connections ended
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import select

        buf = b""

        def line() -> bytes:  # b"" when the connection ends
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return b""
                buf += chunk
            head, buf = buf.split(b"\r\n", 1)
            return head + b"\r\n"

        try:
            with conn:
                conn.sendall(b"220 raw\r\n")
                while command := line():
                    verb = command[:4].upper()
                    if verb == b"EHLO":
                        conn.sendall(b"250-raw\r\n250 PIPELINING\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    elif verb == b"DATA":
                        conn.sendall(b"354 go\r\n")
                        body = b""
                        while (text := line()) != b".\r\n":
                            if not text:
                                self.aborted.append(body)
                                return
                            body += text
                        self.delivered.append(body)
                        if self.watch_ahead:
                            if not buf and select.select([conn], [], [], 0.5)[0]:
                                buf += conn.recv(65536)
                            self.ahead.append(buf.upper().startswith(b"MAIL FROM:"))
                        conn.sendall(b"250 queued\r\n")
                    else:
                        conn.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            self.ended += 1
            self.done.set()


def _send_announcing(backend: DeliveryBackend, recipients: list[str]) -> list[str]:
    """The send loop's way: each message announced before the one before it goes."""
    messages = [message(to) for to in recipients]
    statuses = []
    for this, following in zip(messages, [*messages[1:], None], strict=True):
        if following is not None:
            backend.announce(following)
        statuses.append(backend.send(this).status)
    return statuses


def test_an_announced_message_goes_out_behind_the_body_before_it() -> None:
    server = RawServer(watch_ahead=True)
    backend = SmtpBackend(SmtpSection(host="127.0.0.1", port=server.port, security="none",
                                      timeout=3, reconnects=0), "client.example.com")
    with backend:
        assert backend.lookahead
        assert _send_announcing(backend, [f"r{i}@example.com" for i in range(4)]) == [
            "sent"] * 4
    # Each of the first three bodies had the next commands behind it; the last had none.
    assert server.ahead == [True, True, True, False]
    assert server.delivered == [stuff(BODY)[:-3]] * 4


def test_refusals_with_the_next_message_announced_keep_every_message_whole(
        backend: SmtpBackend, sink: PipeliningSink) -> None:
    sink.refuse.add("bad@example.com")
    sink.refuse_data["gone@example.com"] = "550 5.1.1 no such user"
    sink.refuse_data["full@example.com"] = "552 5.2.2 mailbox full"
    sink.rcpt_replies["later@example.com"] = "451 4.3.0 try later"
    order = ["a@example.com", "bad@example.com", "b@example.com", "gone@example.com",
             "c@example.com", "full@example.com", "later@example.com", "d@example.com"]
    assert _send_announcing(backend, order) == [
        "sent", "failed-permanent", "sent", "failed-permanent", "sent", "failed-temporary",
        "failed-temporary", "sent"]
    assert [r.recipients for r in sink.received] == [
        ["a@example.com"], ["b@example.com"], ["c@example.com"], ["d@example.com"]]
    # No RSET ever went into an open DATA: every message that arrived is exactly the body.
    assert all(r.data.replace(b"\r\n", b"\n") == BODY.replace(b"\r\n", b"\n")
               for r in sink.received)
    assert len(set(sink.sessions)) == 1


def test_drops_and_421s_with_the_next_message_announced(backend: SmtpBackend,
                                                        sink: PipeliningSink) -> None:
    sink.drop_at_rcpt.add(3)  # b's commands, which went out behind a's body
    sink.closing_once.add("d@example.com")
    assert _send_announcing(backend, [f"{c}@example.com" for c in "abcde"]) == ["sent"] * 5
    # a was confirmed before the drop, so it went once; b went again on a new connection.
    assert [r.recipients for r in sink.received] == [[f"{c}@example.com"] for c in "abcde"]
    assert len(set(sink.sessions)) == 3


def test_a_refused_message_with_the_next_one_open_sends_nothing_more(
        backend: SmtpBackend, sink: PipeliningSink) -> None:
    sink.refuse_data["spam@example.com"] = "554 5.7.1 rejected by policy"
    backend.announce(message("next@example.com"))
    with pytest.raises(MessageRefused, match="rejected by policy"):
        backend.send(message("spam@example.com"))
    backend.close()  # with next@'s DATA open: the connection is dropped, not QUIT into it
    assert sink.received == []


def test_a_message_other_than_the_announced_one_never_goes_into_its_data(
        backend: SmtpBackend, sink: PipeliningSink) -> None:
    backend.announce(message("announced@example.com"))
    assert backend.send(message("a@example.com")).ok
    assert backend.send(message("other@example.com")).ok  # a new connection, not that DATA
    assert [r.recipients for r in sink.received] == [["a@example.com"], ["other@example.com"]]
    assert len(set(sink.sessions)) == 2


def test_nothing_is_announced_past_the_connections_limit(sink: PipeliningSink) -> None:
    port = free_port()
    controller = start_server(sink, port=port)
    try:
        with SmtpBackend(SmtpSection(host="127.0.0.1", port=port, security="none",
                                     messages_per_connection=2), "client.example.com"
                         ) as backend:
            assert isinstance(backend, SmtpBackend)
            assert _send_announcing(backend, [f"{c}@example.com" for c in "abcde"]) == [
                "sent"] * 5
    finally:
        controller.stop()
    assert [r.recipients for r in sink.received] == [[f"{c}@example.com"] for c in "abcde"]
    assert len(set(sink.sessions)) == 3


def _readers(n: int) -> list[Any]:
    from newsletter.models import Subscriber

    return [Subscriber(email=f"r{i}@example.com") for i in range(n)]


def test_the_send_loop_announces_each_next_reader_and_a_stop_gives_it_back(
        sink: PipeliningSink) -> None:
    from newsletter.dispatch import DispatchOptions, dispatch

    port = free_port()
    controller = start_server(sink, port=port)
    stop = threading.Event()
    announced: list[str] = []

    class Counting(SmtpBackend):
        def announce(self, following: OutgoingMessage) -> None:
            announced.append(following.recipient)
            super().announce(following)

    def opener() -> SmtpBackend:
        return Counting(SmtpSection(host="127.0.0.1", port=port, security="none"),
                        "client.example.com")

    sink.on_message = lambda s: stop.set() if len(s.received) == 3 else None
    readers = _readers(10)
    try:
        outcome = dispatch(readers, lambda s: message(s.email), opener, DispatchOptions(),
                           stop=stop)
    finally:
        controller.stop()
    # r3 was announced behind r2's body when the stop came: it is not sent, and it is
    # counted as not attempted with everyone after it, so nobody is lost.
    assert outcome.stopped and outcome.sent == 3
    assert [r.recipients for r in sink.received] == [[f"r{i}@example.com"] for i in range(3)]
    assert announced[:3] == ["r1@example.com", "r2@example.com", "r3@example.com"]
    assert sorted(s.email for s in outcome.not_attempted) == sorted(
        f"r{i}@example.com" for i in range(3, 10))


def test_with_a_rate_limit_nothing_is_announced(sink: PipeliningSink) -> None:
    from newsletter.dispatch import DispatchOptions, dispatch

    port = free_port()
    controller = start_server(sink, port=port)
    announced: list[str] = []

    class Counting(SmtpBackend):
        def announce(self, following: OutgoingMessage) -> None:
            announced.append(following.recipient)
            super().announce(following)

    try:
        outcome = dispatch(_readers(3), lambda s: message(s.email), lambda: Counting(
            SmtpSection(host="127.0.0.1", port=port, security="none"), "client.example.com"),
            DispatchOptions(rate_limit=1000))
    finally:
        controller.stop()
    assert outcome.sent == 3 and announced == []


def test_a_workers_backend_announces_only_without_a_shared_rate(backend: SmtpBackend,
                                                                 sink: PipeliningSink) -> None:
    from newsletter.workers.batch import _GatedBackend

    class Relay:
        gap = 0.0

        def connection(self) -> Any:
            import contextlib

            return contextlib.nullcontext()

        def before_send(self) -> None:
            pass

        def after_send(self, ok: bool) -> None:
            pass

    class Lease:  # always inside the lease
        def check(self) -> None:
            pass

    relay = Relay()
    gated = _GatedBackend(backend, relay, Lease())  # type: ignore[arg-type]
    assert gated.lookahead
    first, second = message("a@example.com"), message("b@example.com")
    gated.announce(second)
    assert gated.send(first).ok
    assert backend._ahead is second  # its commands went out behind a's body
    assert gated.send(second).ok
    relay.gap = 0.1  # a shared rate: the next message's DATA must not wait open for it
    assert not gated.lookahead
    assert [r.recipients for r in sink.received] == [["a@example.com"], ["b@example.com"]]


class _FailsAfterTheDot:
    """A socket that hands over everything up to a final dot, then times out on what
    follows it (a send buffer that fills just after the dot, a peer that stalls), whether
    that is in the same write or the next."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._after_dot = False

    def sendall(self, data: bytes) -> None:
        if self._after_dot:
            self._after_dot = False
            raise TimeoutError("timed out")
        end = data.find(b"\r\n.\r\n")
        if end >= 0 and end + 5 < len(data):
            self._sock.sendall(data[:end + 5])
            raise TimeoutError("timed out")
        self._sock.sendall(data)
        self._after_dot = data.endswith(b"\r\n.\r\n")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_write_that_fails_after_the_final_dot_counts_the_message_as_out() -> None:
    server = RawServer()

    class Stalling(SmtpBackend):
        def _connect(self) -> smtplib.SMTP:
            conn = super()._connect()
            conn.sock = _FailsAfterTheDot(conn.sock)  # type: ignore[assignment]
            return conn

    backend = Stalling(SmtpSection(host="127.0.0.1", port=server.port, security="none",
                                   timeout=3, reconnects=3), "client.example.com")
    backend.open()
    backend.announce(message("b@example.com"))
    # Each try hands the server a's whole body: once more at most, then the run stops.
    with pytest.raises(DeliveryError, match="2 times without confirming it"):
        backend.send(message("a@example.com"))
    backend.close()
    deadline = time.monotonic() + 10
    while server.ended < 2 and time.monotonic() < deadline:  # the server reads on its own
        time.sleep(0.01)
    assert len(server.delivered) == 2


def test_a_bug_with_the_next_data_open_never_writes_quit_into_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from newsletter.delivery import wire

    server = RawServer()
    real = wire.stuff

    def stuff(data: bytes) -> bytes:
        if b"boom" in data:
            raise RuntimeError("a bug while preparing the body")
        return real(data)

    monkeypatch.setattr(wire, "stuff", stuff)
    backend = SmtpBackend(SmtpSection(host="127.0.0.1", port=server.port, security="none",
                                      timeout=3), "client.example.com")
    backend.open()
    second = message("b@example.com", b"Subject: boom\r\n\r\nx\r\n")
    backend.announce(second)
    assert backend.send(message("a@example.com")).ok
    with pytest.raises(RuntimeError):
        backend.send(second)  # its DATA is open on the server
    server.done.clear()
    backend.close()  # what the send loop does after a crash
    assert server.done.wait(5)
    assert server.aborted == [b""]  # the DATA was cut off with nothing written into it
    assert len(server.delivered) == 1

