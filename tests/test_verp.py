"""VERP: per-delivery tokens in the Return-Path and the mailto unsubscribe, the EHLO name,
and the settings around them. Delivery over a real aiosmtpd server on loopback."""

from __future__ import annotations

import datetime as dt
import re
import socket
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from newsletter import verp
from newsletter.digest import load_inputs, run_send
from newsletter.ledger import SqliteLedger
from newsletter.secret import unsubscribe_secret
from newsletter.settings import load_settings
from tests.conftest import ISSUE_DATE, Project
from tests.smtp_server import Sink, free_port, start_server

SECRET = "a-test-secret-of-enough-length"
BASE = "bounces@bounce.example.com"
ISSUE = "morning-brief/2026-11-24"
DATE = dt.date.fromisoformat(ISSUE_DATE)
NOW = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)
ACTIVE = {"ada@example.com", "linus@example.com", "zoe@example.org"}


# --- tokens -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["b", "u"])
def test_token_round_trip_names_the_delivery(kind: verp.Kind) -> None:
    address = verp.address(BASE, SECRET, kind, ISSUE, "Ada@Example.com")
    assert re.fullmatch(rf"bounces\+{kind}[a-z2-7]{{32}}@bounce\.example\.com", address)
    assert "ada" not in address.lower().split("@")[0]  # the token shows no address
    found = verp.read_address(SECRET, BASE, address)
    assert found == verp.Tagged(kind, verp.delivery_key(ISSUE, "ada@example.com"))
    # Stable: the same delivery always gets the same address.
    assert address == verp.address(BASE, SECRET, kind, ISSUE, "ada@example.com")
    assert address != verp.address(BASE, SECRET, kind, ISSUE, "zoe@example.org")


def test_case_is_ignored_as_mail_servers_may_change_it() -> None:
    address = verp.address(BASE, SECRET, "b", ISSUE, "ada@example.com")
    key = verp.delivery_key(ISSUE, "ada@example.com")
    for variant in (address.upper(), address.title(), f"<{address}>", f"  {address} "):
        assert verp.read_address(SECRET, BASE, variant) == verp.Tagged("b", key), variant
    assert verp.read_address(SECRET, BASE.upper(), address) == verp.Tagged("b", key)


def _flip(text: str, at: int) -> str:
    return text[:at] + ("a" if text[at] != "a" else "b") + text[at + 1:]


def test_forged_and_foreign_tokens_are_refused() -> None:
    address = verp.address(BASE, SECRET, "b", ISSUE, "ada@example.com")
    local, domain = address.split("@")
    token = local.partition("+")[2]
    refused = {
        "one character of the MAC changed": f"bounces+{_flip(token, len(token) - 1)}@{domain}",
        "one character of the key changed": f"bounces+{_flip(token, 3)}@{domain}",
        "truncated": f"bounces+{token[:-1]}@{domain}",
        "one character longer": f"bounces+{token}a@{domain}",
        "made with another secret": verp.address(BASE, "another-secret-entirely", "b",
                                                 ISSUE, "ada@example.com"),
        "another domain": f"bounces+{token}@bounce.example.net",
        "another mailbox": f"returns+{token}@{domain}",
        "the other kind (the MAC covers it)": f"bounces+u{token[1:]}@{domain}",
        "no token": BASE,
        "an empty token": f"bounces+@{domain}",
        "not base32": f"bounces+b{'1' * 32}@{domain}",
        "not ASCII": f"bounces+b{'é' * 32}@{domain}",
        "no domain": f"bounces+{token}",
    }
    for why, candidate in refused.items():
        assert verp.read_address(SECRET, BASE, candidate) is None, why
    assert verp.read_token(SECRET, "") is None
    assert verp.read_token(SECRET, "x" * 10_000) is None


def test_local_part_fits_rfc_5321_for_the_longest_base() -> None:
    base = f"{'r' * 20}@bounce.example.com"
    for kind in ("b", "u"):
        address = verp.address(base, SECRET, kind, ISSUE, f"{'x' * 64}@example.com")
        local = address.rpartition("@")[0]
        assert len(local.encode()) <= 64
        assert verp.read_address(SECRET, base, address) is not None


# --- delivery over SMTP -----------------------------------------------------------------

def _send(monkeypatch: pytest.MonkeyPatch, port: int, **env: str) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(port))
    monkeypatch.setenv("NEWSLETTER_SMTP__SECURITY", "none")
    for key, value in env.items():
        monkeypatch.setenv(f"NEWSLETTER_{key}", value)
    settings = load_settings(Path("config/newsletter.yaml"))
    ledger = SqliteLedger(settings.ledger)
    try:
        [report] = run_send(load_inputs(settings), DATE, NOW, ledger, backend_name="smtp",
                            sleep=lambda seconds: None)
    finally:
        ledger.close()
    assert report.ok and report.sent == 3


def _mailto(header: str) -> str:
    [mailto] = re.findall(r"<mailto:([^>?]+)", header)
    return mailto


def test_each_message_has_its_own_return_path_and_mailto_naming_its_delivery(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = Sink(), free_port()
    controller = start_server(sink, port=port)
    try:
        _send(monkeypatch, port, BOUNCES__ADDRESS=BASE)
    finally:
        controller.stop()
    settings = load_settings(project.settings)
    secret = unsubscribe_secret(settings)
    ledger = SqliteLedger(settings.ledger)
    try:
        assert len(sink.received) == 3
        for received in sink.received:
            [rcpt] = received.recipients
            msg = message_from_bytes(received.data, policy=policy.default)
            assert re.fullmatch(r"bounces\+b[a-z2-7]{32}@bounce\.example\.com", received.sender)
            back = verp.read_address(secret, BASE, received.sender)
            assert back is not None and back.kind == "b"
            assert ledger.delivery_by_key(back.key) == (ISSUE, rcpt, str(msg["Message-ID"]))
            mailto = _mailto(str(msg["List-Unsubscribe"]))
            assert re.fullmatch(r"bounces\+u[a-z2-7]{32}@bounce\.example\.com", mailto)
            unsub = verp.read_address(secret, BASE, mailto)
            assert unsub == verp.Tagged("u", back.key)
            # The From stays the sender's: only the envelope and the mailto change.
            assert msg["From"].addresses[0].addr_spec == "brief@example.com"
        assert len({r.sender for r in sink.received}) == 3
        assert {r.recipients[0] for r in sink.received} == ACTIVE
    finally:
        ledger.close()


def test_without_a_bounce_address_nothing_changes(project: Project,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = Sink(), free_port()
    controller = start_server(sink, port=port)
    try:
        _send(monkeypatch, port)
    finally:
        controller.stop()
    assert {r.sender for r in sink.received} == {"brief@example.com"}
    for received in sink.received:
        mailto = _mailto(str(received.message["List-Unsubscribe"]))
        assert mailto == "unsubscribe@example.com"


def test_ehlo_uses_smtp_helo(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = Sink(), free_port()
    controller = start_server(sink, port=port)
    try:
        _send(monkeypatch, port, SMTP__HELO="mail.example.com")
    finally:
        controller.stop()
    assert sink.helos == ["mail.example.com"] * 3


def test_ehlo_defaults_to_this_machines_name_not_the_senders_domain(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = Sink(), free_port()
    controller = start_server(sink, port=port)
    try:
        _send(monkeypatch, port)
    finally:
        controller.stop()
    fqdn = socket.getfqdn()
    expected = fqdn if fqdn and fqdn.isascii() and " " not in fqdn else "localhost"
    assert sink.helos == [expected] * 3
    assert "example.com" not in expected


def test_a_test_send_gets_the_plain_bounce_address(project: Project) -> None:
    """A `--to` copy is not in the ledger, so no token could name it."""
    sink, port = Sink(), free_port()
    controller = start_server(sink, port=port)
    try:
        result = project.run("send", "--backend", "smtp", "--date", ISSUE_DATE,
                             "--to", "me@example.net",
                             env={"NEWSLETTER_SMTP__PORT": str(port),
                                  "NEWSLETTER_SMTP__SECURITY": "none",
                                  "NEWSLETTER_BOUNCES__ADDRESS": BASE})
    finally:
        controller.stop()
    assert result.returncode == 0, result.stderr
    [received] = sink.received
    assert received.recipients == ["me@example.net"]
    assert received.sender == BASE
    assert _mailto(str(received.message["List-Unsubscribe"])).startswith("bounces+u")


# --- settings ---------------------------------------------------------------------------

BAD_SETTINGS = {
    "a '+tag' in bounces.address": (
        "bounces:\n  address: bounces+x@bounce.example.com\n", "bounces.address", "+tag"),
    "a local part over 20 characters": (
        f"bounces:\n  address: {'r' * 21}@bounce.example.com\n", "bounces.address",
        "at most 20 characters"),
    "not an address": ("bounces:\n  address: bounces-at-example\n", "bounces.address",
                       "not a valid address"),
    "imap without encryption to another machine": (
        "bounces:\n  imap:\n    host: mail.example.com\n    security: none\n",
        "bounces.imap.security", "unencrypted"),
    "imap and maildir both": (
        "bounces:\n  imap:\n    host: 127.0.0.1\n  maildir: /var/mail/bounces\n",
        "bounces.maildir", "both set"),
    "the imap password in the YAML": (
        "bounces:\n  imap:\n    host: 127.0.0.1\n    password: hunter2-not-here\n",
        "bounces.imap.password", "NEWSLETTER_BOUNCES__IMAP__PASSWORD"),
    "a Mailgun key in the YAML": (
        "webhooks:\n  mailgun_signing_key: key-hunter2-not-here\n",
        "webhooks.mailgun_signing_key", "NEWSLETTER_WEBHOOKS__MAILGUN_SIGNING_KEY"),
    "a Postmark password in the YAML": (
        "webhooks:\n  postmark_password: hunter2-not-here\n",
        "webhooks.postmark_password", "NEWSLETTER_WEBHOOKS__POSTMARK_PASSWORD"),
    "a SendGrid key in the YAML": (
        "webhooks:\n  sendgrid_public_key: MFkwhunter2-not-here\n",
        "webhooks.sendgrid_public_key", "NEWSLETTER_WEBHOOKS__SENDGRID_PUBLIC_KEY"),
}


@pytest.mark.parametrize(("extra", "field", "says"), BAD_SETTINGS.values(), ids=BAD_SETTINGS)
def test_bad_bounce_and_webhook_settings_are_one_line_naming_the_field(
        project: Project, extra: str, field: str, says: str) -> None:
    project.settings.write_text(project.settings.read_text() + extra)
    result = project.run("config", "show")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: config/newsletter.yaml:")
    assert f" {field}: " in line and says in line
    assert "hunter2" not in line and "Traceback" not in result.stderr


def test_good_bounce_settings_are_taken(project: Project) -> None:
    project.settings.write_text(project.settings.read_text() + (
        "bounces:\n  address: Bounces@Bounce.Example.com\n  imap:\n    host: 127.0.0.1\n"
        "    security: none\n    username: bounces\n"))
    result = project.run("config", "show",
                         env={"NEWSLETTER_BOUNCES__IMAP__PASSWORD": "imap-pass-xyz"})
    assert result.returncode == 0, result.stderr
    assert "  address: Bounces@bounce.example.com\n" in result.stdout  # domain lower-cased
    assert "    password: '**********'\n" in result.stdout and "imap-pass-xyz" not in result.stdout
