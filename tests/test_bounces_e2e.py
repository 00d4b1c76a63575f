"""What comes back, end to end with real mail software (issue 11): `newsletter send` hands
the issue to a real Postfix, which relays it to a remote that refuses two readers; Postfix
writes its own DSNs to the per-message VERP addresses, Dovecot keeps them, and
`newsletter bounces fetch` reads them over IMAP and suppresses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ISSUE_DATE, Project
from tests.mailservers import REFUSING_READERS, MailServers, delivery_status


@pytest.fixture
def sent(project: Project, mail_servers: MailServers) -> MailServers:
    """The issue sent through Postfix, and the two DSNs it caused in the bounce mailbox."""
    project.write("config/subscribers.yaml", REFUSING_READERS)
    mail_servers.settings(project.settings, security="ssl")
    done = project.run("send", "--date", ISSUE_DATE, env=mail_servers.env())
    assert done.returncode == 0, done.stderr
    mail_servers.wait_for_mail(2)
    return mail_servers


def test_postfix_returns_a_dsn_to_each_refused_readers_verp_address(
        sent: MailServers) -> None:
    [delivered] = sent.wait_for_remote(1)
    assert delivered.recipients == ["ada@example.com"]
    local, _, domain = delivered.sender.partition("@")
    assert local.startswith("bounces+b") and domain == "bounce.example.com"
    by_recipient = {}
    for dsn in sent.messages():
        _per_message, [recipient] = delivery_status(dsn)
        by_recipient[recipient["Final-Recipient"]] = (recipient["Status"], dsn["Delivered-To"])
    assert set(by_recipient) == {"rfc822; dead@example.com", "rfc822; full@example.org"}
    assert by_recipient["rfc822; dead@example.com"][0] == "5.1.1"
    assert by_recipient["rfc822; full@example.org"][0] == "4.2.2"
    # Each DSN went to that reader's own VERP address, not to the bounce mailbox's base.
    addresses = {delivered_to for _status, delivered_to in by_recipient.values()}
    assert len(addresses) == 2 and all(a.startswith("bounces+b") for a in addresses)
    assert delivered.sender not in addresses


def _suppressions(project: Project) -> list[dict[str, Any]]:
    done = project.run("suppressions", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("source, security", [("imap", "ssl"), ("imap", "starttls"),
                                              ("maildir", "")])
def test_fetch_suppresses_the_hard_bounce_counts_the_soft_one_and_is_idempotent(
        project: Project, sent: MailServers, source: str, security: str) -> None:
    sent.settings(project.settings, source=source, security=security or "ssl")
    done = project.run("bounces", "fetch", env=sent.env(source))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout
    assert "2 mails" in summary and "1 hard bounce," in summary
    # Postfix writes `Action: failed` for the expired 452 too: only its Status (4.2.2)
    # says that it was a full mailbox, which counts towards soft_limit, not a hard bounce.
    assert "1 soft bounce," in summary and "1 reader suppressed" in summary
    assert "not understood" not in summary and "not ours" not in summary

    [suppression] = _suppressions(project)
    assert (suppression["email"], suppression["reason"]) == ("dead@example.com",
                                                             "hard-bounce")
    assert suppression["evidence"]["status"] == "5.1.1"
    assert "550 5.1.1" in json.dumps(suppression["evidence"])
    listed = project.run("suppressions").stdout
    assert "dead@example.com" in listed and "hard-bounce" in listed and "5.1.1" in listed
    assert "full@example.org" not in listed

    # Handled mail left the inbox for the processed folder; none was deleted.
    assert sent.messages() == []
    assert len(sent.messages("Processed")) == 2

    again = project.run("bounces", "fetch", env=sent.env(source))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 mails" in again.stdout and "suppressed" not in again.stdout
    assert _suppressions(project) == [suppression]
    assert sent.messages() == [] and len(sent.messages("Processed")) == 2
