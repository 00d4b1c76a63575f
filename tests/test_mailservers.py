"""The real mail servers of the bounce tests work, checked with the standard library only:
Postfix relays to the remote and writes its own DSNs (RFC 3464) to the VERP address, they
land in Dovecot's Maildir, and Dovecot serves them over IMAPS and STARTTLS."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time

import pytest

from newsletter.settings import load_settings
from tests.conftest import Project
from tests.daemons import running_processes
from tests.mailservers import MailServers, delivery_status, running

VERP = "bounces+abc123@bounce.example.com"
BODY = (b"From: The Test Brief <brief@bounce.example.com>\r\nTo: readers@example.test\r\n"
        b"Subject: An issue\r\nMessage-ID: <issue-1@bounce.example.com>\r\n\r\nHello.\r\n")


def _send(servers: MailServers, *recipients: str, sender: str = VERP) -> None:
    with smtplib.SMTP(servers.smtp_host, servers.smtp_port, timeout=10) as client:
        refused = client.sendmail(sender, list(recipients), BODY)
    assert refused == {}  # Postfix takes everything; the remote's refusals come back later


def test_a_refused_recipient_comes_back_as_a_dsn_to_the_verp_address(
        mail_servers: MailServers) -> None:
    _send(mail_servers, "dead@example.test", "live@example.test")
    [dsn] = mail_servers.wait_for_mail(1)
    [delivered] = mail_servers.wait_for_remote(1)
    assert delivered.recipients == ["live@example.test"] and delivered.sender == VERP
    assert b"Hello." in delivered.data
    assert dsn["Delivered-To"] == dsn["X-Original-To"] == dsn["To"] == VERP
    assert dsn["Return-Path"] == "<>"  # a DSN has the null sender: it never bounces back
    assert dsn["From"].addresses[0].username == "MAILER-DAEMON"
    per_message, [recipient] = delivery_status(dsn)
    assert per_message["Reporting-MTA"] == "dns; mta.bounce.example.com"
    assert recipient["Final-Recipient"] == "rfc822; dead@example.test"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert "550 5.1.1" in recipient["Diagnostic-Code"]
    [returned] = [part for part in dsn.walk() if part.get_content_type() == "message/rfc822"]
    assert b"<issue-1@bounce.example.com>" in returned.as_bytes()  # the original comes back


def test_a_full_mailbox_bounces_at_once_with_status_4_2_2(mail_servers: MailServers) -> None:
    assert mail_servers.messages() == [] and mail_servers.remote.received == []  # cleared
    # The remote answers 452 4.2.2; with maximal_queue_lifetime = 0 Postfix does not retry
    # but returns the mail at once, keeping the remote's (temporary) status.
    _send(mail_servers, "full@example.test")
    [dsn] = mail_servers.wait_for_mail(1)
    _per_message, [recipient] = delivery_status(dsn)
    assert recipient["Final-Recipient"] == "rfc822; full@example.test"
    assert (recipient["Action"], recipient["Status"]) == ("failed", "4.2.2")
    assert "452 4.2.2" in recipient["Diagnostic-Code"]
    assert mail_servers.queue_ids() == []
    assert mail_servers.remote.received == []


def test_each_refused_recipient_of_a_message_gets_its_own_dsn(
        mail_servers: MailServers) -> None:
    # Postfix reports the permanent failure and the expired deferral separately.
    _send(mail_servers, "dead@example.test", "full@example.test", "live@example.test")
    dsns = mail_servers.wait_for_mail(2)
    statuses = sorted(delivery_status(dsn)[1][0]["Status"] for dsn in dsns)
    assert statuses == ["4.2.2", "5.1.1"]
    assert [r.recipients for r in mail_servers.wait_for_remote(1)] == [["live@example.test"]]


def _inbox(client: imaplib.IMAP4, servers: MailServers) -> list[bytes]:
    assert client.login(servers.username, servers.password)[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    typ, data = client.uid("SEARCH", "ALL")
    assert typ == "OK"
    uids = data[0].split()
    messages = []
    for uid in uids:
        typ, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK"
        messages.append(fetched[0][1])
    return messages


def test_imaps_with_the_trustme_ca_sees_the_dsn(mail_servers: MailServers) -> None:
    _send(mail_servers, "dead@example.test")
    mail_servers.wait_for_mail(1)
    with imaplib.IMAP4_SSL(mail_servers.imap_host, mail_servers.imaps_port,
                           ssl_context=mail_servers.ssl_context(), timeout=10) as client:
        [raw] = _inbox(client, mail_servers)
    assert b"report-type=delivery-status" in raw and b"Status: 5.1.1" in raw


def test_starttls_with_the_trustme_ca_sees_the_dsn(mail_servers: MailServers) -> None:
    _send(mail_servers, "dead@example.test")
    mail_servers.wait_for_mail(1)
    with imaplib.IMAP4(mail_servers.imap_host, mail_servers.imap_port, timeout=10) as client:
        assert "STARTTLS" in client.capabilities
        assert client.starttls(ssl_context=mail_servers.ssl_context())[0] == "OK"
        [raw] = _inbox(client, mail_servers)
    assert b"Status: 5.1.1" in raw


def test_a_wrong_password_is_refused(mail_servers: MailServers) -> None:
    for _attempt in range(2):
        with imaplib.IMAP4_SSL(mail_servers.imap_host, mail_servers.imaps_port,
                               ssl_context=mail_servers.ssl_context(), timeout=10) as client, \
                pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(mail_servers.username, mail_servers.password + "x")
    started = time.monotonic()
    with imaplib.IMAP4_SSL(mail_servers.imap_host, mail_servers.imaps_port,
                           ssl_context=mail_servers.ssl_context(), timeout=10) as client:
        assert client.login(mail_servers.username, mail_servers.password)[0] == "OK"
    # Dovecot's penalty for failed logins from an IP (seconds, doubling) is off on
    # loopback: the product's tests of a refused login must not slow down the next ones.
    assert time.monotonic() - started < 1.5


def test_the_certificate_is_only_trusted_through_the_ca_file(
        mail_servers: MailServers) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(mail_servers.imap_host, mail_servers.imaps_port,
                          ssl_context=ssl.create_default_context(), timeout=10)


def test_mail_put_in_the_maildir_is_served_and_moved_over_imap(
        mail_servers: MailServers) -> None:
    # What `bounces fetch` does with handled mail: MOVE it to the processed folder.
    mail_servers.add_message(BODY)
    with imaplib.IMAP4_SSL(mail_servers.imap_host, mail_servers.imaps_port,
                           ssl_context=mail_servers.ssl_context(), timeout=10) as client:
        assert len(_inbox(client, mail_servers)) == 1
        assert client.create("Processed")[0] == "OK"
        assert client.uid("MOVE", "1:*", "Processed")[0] == "OK"
    assert mail_servers.messages() == []
    [moved] = mail_servers.messages("Processed")
    assert moved["Message-ID"] == "<issue-1@bounce.example.com>"


def test_nothing_is_left_running_or_listening_after_the_servers_stop(
        mail_servers_session: MailServers) -> None:
    # A second set of its own, so that stopping it can be watched.
    with running() as servers:
        masters = servers.master_pids()
        ports = (servers.smtp_port, servers.imap_port, servers.imaps_port)
        assert all(masters.values()) and all(running_processes(p) for p in masters.values()
                                             if p)
        base = servers.base
    assert not [running_processes(pid) for pid in masters.values() if pid and
                running_processes(pid)]
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert not base.exists()


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_the_settings_helper_points_a_project_at_the_servers(
        project: Project, mail_servers: MailServers, security: str) -> None:
    mail_servers.settings(project.settings, security=security)
    settings = load_settings(project.settings)
    assert (settings.delivery.backend, settings.smtp.host, settings.smtp.port) == (
        "smtp", "127.0.0.1", mail_servers.smtp_port)
    assert settings.bounces.address == "bounces@bounce.example.com"
    imap = settings.bounces.imap
    assert imap is not None and imap.security == security
    assert imap.effective_port == (mail_servers.imaps_port if security == "ssl"
                                   else mail_servers.imap_port)
    assert imap.ca_file == mail_servers.ca_file and imap.username == "bounces"
    mail_servers.settings(project.settings, source="maildir")
    settings = load_settings(project.settings)
    assert settings.bounces.imap is None and settings.bounces.maildir == mail_servers.maildir
