"""SMTP delivery against a real aiosmtpd server on loopback: plain, STARTTLS + AUTH, SSL."""

from __future__ import annotations

import datetime as dt
import re
import ssl
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme

from newsletter.delivery.base import MessageRefused
from newsletter.delivery.smtp import SmtpBackend
from newsletter.digest import load_inputs, run_send
from newsletter.errors import DeliveryError
from newsletter.ledger import SqliteLedger
from newsletter.message import OutgoingMessage
from newsletter.settings import Settings, load_settings
from tests.conftest import ISSUE_DATE, Project
from tests.smtp_server import Sink, free_port, start_server

DATE = dt.date.fromisoformat(ISSUE_DATE)
NOW = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)
ACTIVE = {"ada@example.com", "linus@example.com", "zoe@example.org"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def port() -> int:
    return free_port()


def _send(monkeypatch: pytest.MonkeyPatch, resend: bool = False, **env: str):
    for key, value in env.items():
        monkeypatch.setenv(f"NEWSLETTER_{key}", value)
    settings = load_settings(Path("config/newsletter.yaml"))
    ledger = SqliteLedger(settings.ledger)
    try:
        return run_send(load_inputs(settings), DATE, NOW, ledger, backend_name="smtp",
                        resend=resend, sleep=lambda seconds: None)
    finally:
        ledger.close()


def _error(reports) -> DeliveryError:
    [report] = reports
    assert report.error is not None and report.sent == 0
    assert len(report.not_attempted) == 3  # nobody lost: all still pending
    return report.error


def test_plain_smtp_one_message_per_active_subscriber(project: Project, sink: Sink, port: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    controller = start_server(sink, port=port)
    try:
        [report] = _send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="none")
    finally:
        controller.stop()
    assert report.ok and report.sent == 3
    assert [s.email for s, _ in report.skipped] == ["grace@example.com"]
    recipients = [r.recipients for r in sink.received]
    assert sorted(r[0] for r in recipients) == sorted(ACTIVE)
    assert all(len(r) == 1 for r in recipients)
    assert all(r.sender == "brief@example.com" for r in sink.received)


def test_received_messages_parse_back_with_correct_parts_and_headers(
        project: Project, sink: Sink, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    controller = start_server(sink, port=port)
    try:
        _send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="none")
    finally:
        controller.stop()
    by_rcpt = {r.recipients[0]: r for r in sink.received}
    raw = by_rcpt["zoe@example.org"].data
    assert b"\r\n" in raw and max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = by_rcpt["zoe@example.org"].message
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_payload()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert str(msg["To"]) == "Zoë Ångström <zoe@example.org>"
    assert msg["To"].addresses[0].display_name == "Zoë Ångström"
    assert "=?utf-8?" in raw.split(b"\r\n\r\n")[0].decode("ascii")  # encoded, not raw 8-bit
    assert msg["From"].addresses[0].addr_spec == "brief@example.com"
    assert msg["Subject"] == "The Morning Brief: Harbour bridge reopens after repairs"
    assert msg["Date"].datetime == NOW
    assert msg["Message-ID"].startswith("<morning-brief.2026-11-24.")
    assert msg["Message-ID"].endswith("@example.com>")
    assert msg["List-Id"] == "The Morning Brief <morning-brief.example.com>"
    unsubscribe = msg["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://news.example.com/unsubscribe?")
    https = unsubscribe.split(",")[0].strip().strip("<>")
    # Opaque (see test_unsubscribe_links.py): one `t` parameter, no address in any form.
    assert list(parse_qs(urlsplit(https).query)) == ["t"]
    assert "zoe@" not in https and "zoe%40" not in https
    assert "<mailto:unsubscribe@example.com?" in unsubscribe
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = html.get_content()
    assert "Good morning, Zoë." in text.get_content()
    assert "Harbour bridge reopens after repairs" in body
    assert f'href="{https}"' in body


def test_message_ids_are_stable_across_runs(project: Project, sink: Sink, port: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    controller = start_server(sink, port=port)
    try:
        _send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="none")
        _send(monkeypatch, resend=True, SMTP__PORT=str(port), SMTP__SECURITY="none")
    finally:
        controller.stop()
    ids = [str(r.message["Message-ID"]) for r in sink.received]
    assert len(set(ids)) == 3 and ids[:3] == ids[3:]


def test_starttls_with_auth(project: Project, sink: Sink, port: int, ca_file: Path,
                            server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> None:
    controller = start_server(sink, port=port, tls_context=server_tls, auth=("user", "s3cret"))
    try:
        [report] = _send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="starttls",
                         SMTP__USERNAME="user", SMTP__PASSWORD="s3cret",
                         SMTP__CA_FILE=str(ca_file))
    finally:
        controller.stop()
    assert report.ok and report.sent == 3
    assert sink.logins == ["user"]  # one login: the connection is reused for the run
    assert sorted(r.recipients[0] for r in sink.received) == sorted(ACTIVE)


def test_implicit_tls(project: Project, sink: Sink, port: int, ca_file: Path,
                      server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> None:
    controller = start_server(sink, port=port, tls_context=server_tls, implicit_tls=True)
    try:
        [report] = _send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="ssl",
                         SMTP__CA_FILE=str(ca_file))
    finally:
        controller.stop()
    assert report.sent == 3 and len(sink.received) == 3


def test_untrusted_certificate_is_refused(project: Project, sink: Sink, port: int,
                                          server_tls: ssl.SSLContext,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    controller = start_server(sink, port=port, tls_context=server_tls)
    try:
        error = _error(_send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="starttls"))
    finally:
        controller.stop()
    assert re.search(r"TLS .* failed", str(error))
    assert sink.received == []


def test_wrong_password_is_a_clear_error_and_sends_nothing(
        project: Project, sink: Sink, port: int, ca_file: Path, server_tls: ssl.SSLContext,
        monkeypatch: pytest.MonkeyPatch) -> None:
    controller = start_server(sink, port=port, tls_context=server_tls, auth=("user", "s3cret"))
    try:
        error = _error(_send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="starttls",
                             SMTP__USERNAME="user", SMTP__PASSWORD="wrong",
                             SMTP__CA_FILE=str(ca_file)))
    finally:
        controller.stop()
    message = str(error)
    assert "refused the login for 'user'" in message and "535" in message
    assert "NEWSLETTER_SMTP__PASSWORD" in message and "wrong" not in message
    assert sink.received == []


def test_closed_port_is_a_clear_error(project: Project, port: int,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    error = _error(_send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="none"))
    assert f"127.0.0.1:{port}" in str(error)


def test_refused_recipient_fails_alone_and_the_run_goes_on(
        project: Project, sink: Sink, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    sink.refuse.add("linus@example.com")
    controller = start_server(sink, port=port)
    try:
        [report] = _send(monkeypatch, SMTP__PORT=str(port), SMTP__SECURITY="none")
    finally:
        controller.stop()
    assert [(r.recipient, r.reply[:3]) for r in report.failed] == [("linus@example.com", "550")]
    assert report.sent == 2 and not report.ok
    assert sorted(r.recipients[0] for r in sink.received) == ["ada@example.com", "zoe@example.org"]


def test_cli_send_over_starttls_prints_summary(project: Project, sink: Sink, port: int,
                                               ca_file: Path, server_tls: ssl.SSLContext) -> None:
    controller = start_server(sink, port=port, tls_context=server_tls, auth=("user", "s3cret"))
    try:
        result = project.run("send", "--date", ISSUE_DATE, "--backend", "smtp", env={
            "NEWSLETTER_SMTP__PORT": str(port), "NEWSLETTER_SMTP__SECURITY": "starttls",
            "NEWSLETTER_SMTP__USERNAME": "user", "NEWSLETTER_SMTP__CA_FILE": str(ca_file),
            "NEWSLETTER_SMTP__PASSWORD": "s3cret"})
    finally:
        controller.stop()
    assert result.returncode == 0, result.stderr
    assert ("morning-brief/2026-11-24 [smtp]: 3 sent, 1 skipped (unsubscribed), 0 failed"
            in result.stdout)
    assert len(sink.received) == 3


def test_cli_exit_status_is_1_when_a_recipient_is_refused(project: Project, sink: Sink,
                                                          port: int) -> None:
    sink.refuse.add("ada@example.com")
    controller = start_server(sink, port=port)
    try:
        result = project.run("send", "--date", ISSUE_DATE, "--backend", "smtp", env={
            "NEWSLETTER_SMTP__PORT": str(port), "NEWSLETTER_SMTP__SECURITY": "none"})
    finally:
        controller.stop()
    assert result.returncode == 1
    assert "2 sent" in result.stdout and "1 failed" in result.stdout
    assert "failed (permanent): ada@example.com: 550 5.1.1 mailbox unavailable" in result.stdout


def test_test_send_goes_only_to_the_given_address(project: Project, sink: Sink,
                                                  port: int) -> None:
    controller = start_server(sink, port=port)
    try:
        result = project.run("send", "--date", ISSUE_DATE, "--backend", "smtp",
                             "--to", "editor@example.net", env={
                                 "NEWSLETTER_SMTP__PORT": str(port),
                                 "NEWSLETTER_SMTP__SECURITY": "none"})
    finally:
        controller.stop()
    assert result.returncode == 0, result.stderr
    assert [r.recipients for r in sink.received] == [["editor@example.net"]]
    msg = sink.received[0].message
    assert msg["Subject"].startswith("[TEST] ")
    assert ".test." in msg["Message-ID"]
    assert "test send" in result.stdout


# A refusal of the message is not the reader's fault --------------------------------------

SMTP_ENV = {"NEWSLETTER_SMTP__SECURITY": "none"}
ISSUE = f"morning-brief/{ISSUE_DATE}"


def _cli_send(project: Project, port: int) -> subprocess.CompletedProcess:
    return project.run("send", "--date", ISSUE_DATE, "--backend", "smtp",
                       env={**SMTP_ENV, "NEWSLETTER_SMTP__PORT": str(port)})


def _ledger_state(project: Project) -> tuple[dict[str, str], dict[str, str]]:
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        return ledger.statuses(ISSUE), ledger.suppressed("morning-brief")
    finally:
        ledger.close()


@pytest.mark.parametrize("reply", [
    "554 5.7.1 Message rejected by policy",
    "552 5.3.4 Message size exceeds fixed limit",
    "552 5.2.3 Message size exceeds fixed maximum message size",  # X.2.3: the message's size
    "500 Line too long (see RFC5321 4.5.3.1.6)",  # aiosmtpd's own answer; no enhanced code
    "550 Message content rejected",
])
def test_a_message_refused_after_data_stops_the_run_and_suppresses_nobody(
        project: Project, sink: Sink, port: int, reply: str) -> None:
    sink.refuse_data["*"] = reply
    controller = start_server(sink, port=port)
    try:
        refused = _cli_send(project, port)
        statuses, suppressed = _ledger_state(project)
        sink.refuse_data.clear()  # the content is fixed: the same command sends to all
        again = _cli_send(project, port)
    finally:
        controller.stop()
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    [line] = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
    assert reply in line and "refused the message" in line
    assert sink.data_commands == 1 + 3  # the first refusal stopped the run
    assert suppressed == {}
    assert statuses == {a: "pending" for a in ACTIVE} | {"grace@example.com": "skipped"}
    assert again.returncode == 0, again.stderr
    assert sorted(r.recipients[0] for r in sink.received) == sorted(ACTIVE)


def test_a_refused_sender_stops_the_run_and_suppresses_nobody(
        project: Project, sink: Sink, port: int) -> None:
    sink.refuse_sender = "553 5.7.1 Sender address rejected: not owned by user"
    controller = start_server(sink, port=port)
    try:
        result = _cli_send(project, port)
    finally:
        controller.stop()
    statuses, suppressed = _ledger_state(project)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "refused the sender brief@example.com" in result.stderr
    assert "553 5.7.1 Sender address rejected" in result.stderr
    assert suppressed == {} and statuses["ada@example.com"] == "pending"


def test_a_refusal_after_data_about_the_mailbox_is_the_readers(
        project: Project, sink: Sink, port: int) -> None:
    # Servers that check mailboxes only after DATA say so with X.1.x / X.2.x; a full
    # mailbox (X.2.2) is the reader's, but only for now: tried again, never suppressed.
    sink.refuse_data["linus@example.com"] = "550 5.1.1 No such user here"
    sink.refuse_data["zoe@example.org"] = "552 5.2.2 Mailbox full"
    controller = start_server(sink, port=port)
    try:
        result = _cli_send(project, port)
    finally:
        controller.stop()
    statuses, suppressed = _ledger_state(project)
    assert result.returncode == 1, result.stderr
    assert set(suppressed) == {"linus@example.com"}
    assert statuses["zoe@example.org"] == "failed-temporary"
    assert statuses["ada@example.com"] == "sent"


@pytest.mark.parametrize("reply", [
    "550 5.7.1 Service unavailable, Client host [127.0.0.1] blocked using Spamhaus",
    "554 5.7.1 <zoe@example.org>: Relay access denied",
    "550 5.4.1 Recipient address rejected: Access denied",
    "552 5.2.2 Mailbox full",
    "550 5.3.0 Mail system full",
])
def test_a_refusal_at_rcpt_about_us_or_a_full_mailbox_suppresses_nobody(
        project: Project, sink: Sink, port: int, reply: str) -> None:
    """Refused at RCPT, but by policy about the sender (blocklists, relaying) or for a full
    mailbox: no evidence against the address. The others are sent, this reader is tried
    again by the next send, and once the server takes it they get the issue."""
    class Policy(Sink):
        refusing = True

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if self.refusing and address == "zoe@example.org":
                return reply
            return await super().handle_RCPT(server, session, envelope, address,
                                             rcpt_options)

    policy_sink = Policy()
    controller = start_server(policy_sink, port=port)
    try:
        result = _cli_send(project, port)
        statuses, suppressed = _ledger_state(project)
        assert result.returncode == 1, result.stderr
        assert suppressed == {}
        assert statuses["zoe@example.org"] == "failed-temporary"
        assert statuses["ada@example.com"] == statuses["linus@example.com"] == "sent"
        policy_sink.refusing = False
        again = _cli_send(project, port)
    finally:
        controller.stop()
    assert again.returncode == 0, again.stdout + again.stderr
    assert [r.recipients[0] for r in policy_sink.received].count("zoe@example.org") == 1


def test_a_refused_recipient_is_suppressed(project: Project, sink: Sink, port: int) -> None:
    sink.refuse.add("linus@example.com")
    controller = start_server(sink, port=port)
    try:
        result = _cli_send(project, port)
    finally:
        controller.stop()
    statuses, suppressed = _ledger_state(project)
    assert result.returncode == 1
    assert list(suppressed) == ["linus@example.com"] and "550 5.1.1" in suppressed[
        "linus@example.com"]
    assert statuses["linus@example.com"] == "failed-permanent"
    assert statuses["ada@example.com"] == statuses["zoe@example.org"] == "sent"


def test_aiosmtpd_refuses_a_line_over_998_octets_as_the_messages_fault(
        sink: Sink, port: int) -> None:
    """The real server's answer to an over-long line, through the backend itself; the
    connection stays usable for the next message."""
    smtp = Settings(smtp={"host": "127.0.0.1", "port": port, "security": "none"}).smtp
    long_line = b"Subject: " + b"x" * 1200 + b"\r\n"

    def message(to: str, head: bytes) -> OutgoingMessage:
        data = head + b"From: a@example.com\r\nTo: " + to.encode() + b"\r\n\r\nHello\r\n"
        return OutgoingMessage("l", "l/2026-11-24", "a@example.com", to, "<m@x>", "s", data)

    controller = start_server(sink, port=port)
    try:
        with SmtpBackend(smtp, local_hostname="example.com") as backend:
            with pytest.raises(MessageRefused, match="500 Line too long"):
                backend.send(message("ada@example.com", long_line))
            assert backend.send(message("ada@example.com", b"Subject: short\r\n")).ok
    finally:
        controller.stop()
    assert [r.recipients for r in sink.received] == [["ada@example.com"]]
