"""`newsletter bounces fetch` over IMAP, against a real Dovecot on loopback (ssl and
starttls with a trustme certificate): handled mail moved to the processed folder (made
when missing, a non-ASCII name in modified UTF-7), or flagged, or deleted; mail left in
place untouched; and each way it can fail, as one line."""

from __future__ import annotations

import imaplib
import os
import socket

import pytest
import yaml

from tests import bounce_mail
from tests.conftest import ISSUE_DATE, Project
from tests.mailservers import REFUSING_READERS, MailServers
from tests.smtp_server import free_port
from tests.test_bounces_fetch import (
    BASE,
    ENV,
    SECRET,
    ledger_rows,
    one_error,
    return_path,
    sent,  # noqa: F401  (the fixture)
    suppressions,
)

ALL = "*"


def use_imap(project: Project, servers: MailServers, **imap: object) -> None:
    """The project's bounces block pointed at the Dovecot (keyword arguments override
    bounces.imap's keys)."""
    block = servers.bounces_settings(security=str(imap.pop("security", "ssl")))
    assert block["address"] == BASE
    block["imap"].update(imap)  # type: ignore[union-attr]
    text = project.settings.read_text().partition("\nbounces:")[0] + "\n"
    project.settings.write_text(text + yaml.safe_dump({"bounces": block}, sort_keys=False))


def fetch(project: Project, servers: MailServers, **env: str):  # type: ignore[no-untyped-def]
    return project.run("bounces", "fetch", env={**ENV, **servers.env(), **env})


def files(servers: MailServers, folder: str = "INBOX") -> dict[str, str]:
    """Each mail file of a folder on disk: its unique name -> its Maildir flags."""
    path = servers.maildir if folder == "INBOX" else servers.maildir / f".{folder}"
    found = {}
    for sub in ("new", "cur"):
        if (path / sub).is_dir():
            for name in os.listdir(path / sub):
                key, _, flags = name.partition(":2,")
                found[key] = flags
    return found


def hard_bounce() -> bytes:
    return bounce_mail.dsn(return_path("linus@example.com"), "linus@example.com")


def stranger() -> bytes:
    return bounce_mail.mail(BASE, "Someone <someone@elsewhere.test>", "Are you hiring?")


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_fetch_over_imap_moves_handled_mail_to_processed(
        sent: Project, mail_servers: MailServers, security: str) -> None:  # noqa: F811
    use_imap(sent, mail_servers, security=security)
    mail_servers.add_message(hard_bounce())
    mail_servers.add_message(stranger())
    result = fetch(sent, mail_servers)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    port = mail_servers.imaps_port if security == "ssl" else mail_servers.imap_port
    assert lines[0].startswith(
        f"bounces fetch: 2 mails in INBOX on 127.0.0.1:{port}: 1 hard bounce,")
    assert "1 left in INBOX (1 not understood)" in lines[0]
    assert "left in INBOX: UID " in lines[1] and "'Are you hiring?'" in lines[1]
    assert suppressions(sent)[(ALL, "linus@example.com")][0] == "hard-bounce"
    [moved] = mail_servers.messages("Processed")
    assert moved["Subject"] == "Undelivered Mail Returned to Sender"
    [kept] = mail_servers.messages("INBOX")
    assert kept["Subject"] == "Are you hiring?"
    assert "S" not in "".join(files(mail_servers).values())  # read with PEEK: still unread

    before = ledger_rows(sent), files(mail_servers), files(mail_servers, "Processed")
    again = fetch(sent, mail_servers)
    assert again.returncode == 0, again.stderr
    assert "1 mail in INBOX" in again.stdout and "0 hard bounces" in again.stdout
    assert (ledger_rows(sent), files(mail_servers), files(mail_servers, "Processed")) == before


def test_a_non_ascii_processed_folder_is_made_in_modified_utf7(
        sent: Project, mail_servers: MailServers) -> None:  # noqa: F811
    use_imap(sent, mail_servers, processed_folder="Traité & bounces")
    mail_servers.add_message(hard_bounce())
    result = fetch(sent, mail_servers)
    assert result.returncode == 0, result.stderr
    # Dovecot keeps the folder under its modified UTF-7 name (RFC 3501 5.1.3).
    assert list(files(mail_servers, "Trait&AOk- &- bounces").values()) == [""]
    assert files(mail_servers) == {}


def test_without_a_processed_folder_handled_mail_is_flagged_and_not_read_again(
        sent: Project, mail_servers: MailServers) -> None:  # noqa: F811
    use_imap(sent, mail_servers, processed_folder=None)
    mail_servers.add_message(hard_bounce())
    mail_servers.add_message(stranger())
    result = fetch(sent, mail_servers)
    assert result.returncode == 0, result.stderr
    flags = sorted(files(mail_servers).values())
    assert flags == ["", "FS"]  # the stranger's mail untouched, the bounce seen and flagged
    again = fetch(sent, mail_servers)
    assert "1 mail in INBOX" in again.stdout  # only the stranger's


def test_delete_processed_deletes_only_handled_mail(
        sent: Project, mail_servers: MailServers) -> None:  # noqa: F811
    use_imap(sent, mail_servers, delete_processed=True)
    mail_servers.add_message(hard_bounce())
    mail_servers.add_message(stranger())
    assert fetch(sent, mail_servers).returncode == 0
    assert [m["Subject"] for m in mail_servers.messages("INBOX")] == ["Are you hiring?"]
    assert files(mail_servers, "Processed") == {}


def test_without_move_it_copies_and_expunges_that_uid_only(
        sent: Project, mail_servers: MailServers,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server without MOVE: COPY, \\Deleted and UID EXPUNGE of the handled mail; what
    another client marked deleted stays until that client expunges it."""
    from newsletter.inbound import mailbox_imap
    from newsletter.inbound.fetch import run_fetch
    from newsletter.settings import load_settings

    use_imap(sent, mail_servers)
    mail_servers.add_message(hard_bounce())
    theirs = mail_servers.add_message(stranger()).name
    with imaplib.IMAP4_SSL("127.0.0.1", mail_servers.imaps_port,
                           ssl_context=mail_servers.ssl_context()) as other:
        other.login(mail_servers.username, mail_servers.password)
        other.select("INBOX")
        typ, _ = other.uid("STORE", "2", "+FLAGS.SILENT", r"(\Deleted)")
        assert typ == "OK"
        other.logout()
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    for name, value in mail_servers.env().items():
        monkeypatch.setenv(name, value)
    real = mailbox_imap.ImapMailbox.__init__

    def without_move(self: mailbox_imap.ImapMailbox, imap: object, conn: imaplib.IMAP4,
                     capabilities: set[str]) -> None:
        real(self, imap, conn, capabilities - {"MOVE"})  # type: ignore[arg-type]

    monkeypatch.setattr(mailbox_imap.ImapMailbox, "__init__", without_move)
    report = run_fetch(load_settings(sent.settings))
    assert report.handled == 1 and report.counts["hard"] == 1 and report.read == 1
    assert list(files(mail_servers)) == [theirs]  # still there, marked deleted by them
    assert files(mail_servers)[theirs] == "T"
    assert [m["Subject"] for m in mail_servers.messages("Processed")] == [
        "Undelivered Mail Returned to Sender"]


# --- failures: one line, non-zero, nothing changed ------------------------------------

def test_a_wrong_password_is_one_line(sent: Project,  # noqa: F811
                                      mail_servers: MailServers) -> None:
    use_imap(sent, mail_servers)
    mail_servers.add_message(hard_bounce())
    line = one_error(fetch(sent, mail_servers,
                           NEWSLETTER_BOUNCES__IMAP__PASSWORD="not-the-password"), code=2)
    assert "refused the login of 'bounces'" in line
    assert "NEWSLETTER_BOUNCES__IMAP__PASSWORD" in line and "not-the-password" not in line
    assert len(files(mail_servers)) == 1 and ledger_rows(sent)[0] == []


def test_a_missing_password_is_one_line(sent: Project,  # noqa: F811
                                        mail_servers: MailServers) -> None:
    use_imap(sent, mail_servers)
    result = sent.run("bounces", "fetch", env=ENV)
    assert "NEWSLETTER_BOUNCES__IMAP__PASSWORD" in one_error(result)


def test_a_missing_folder_is_one_line(sent: Project,  # noqa: F811
                                      mail_servers: MailServers) -> None:
    use_imap(sent, mail_servers, folder="Bounces")
    line = one_error(fetch(sent, mail_servers), code=2)
    assert "the folder 'Bounces' cannot be opened" in line and "bounces.imap.folder" in line
    assert "INBOX" in line  # the folders there are named


def test_an_untrusted_certificate_is_one_line(sent: Project,  # noqa: F811
                                              mail_servers: MailServers) -> None:
    use_imap(sent, mail_servers, ca_file=None)
    line = one_error(fetch(sent, mail_servers), code=2)
    assert "certificate" in line and "not trusted" in line and "bounces.imap.ca_file" in line


def test_starttls_on_the_ssl_port_is_one_line(sent: Project,  # noqa: F811
                                              mail_servers: MailServers) -> None:
    """A plain start on a port that waits for TLS: no greeting comes."""
    use_imap(sent, mail_servers, security="starttls", port=mail_servers.imaps_port,
             timeout=1)
    line = one_error(fetch(sent, mail_servers), code=1)
    assert f"127.0.0.1:{mail_servers.imaps_port} did not answer within 1 s" in line
    assert "needs security: ssl" in line


def test_a_server_that_is_down_is_one_line(sent: Project,  # noqa: F811
                                           mail_servers: MailServers) -> None:
    use_imap(sent, mail_servers, port=free_port())
    line = one_error(fetch(sent, mail_servers), code=1)
    assert "refused the connection" in line


def test_a_server_that_never_answers_is_one_line(sent: Project,  # noqa: F811
                                                 mail_servers: MailServers) -> None:
    with socket.socket() as silent:  # accepts (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        use_imap(sent, mail_servers, port=silent.getsockname()[1], timeout=0.5)
        line = one_error(fetch(sent, mail_servers), code=1)
    assert "did not answer within 0.5 s" in line and "bounces.imap.timeout" in line


def test_plain_imap_on_loopback(sent: Project, mail_servers: MailServers) -> None:  # noqa: F811
    """security: none, allowed on loopback only (the settings refuse it elsewhere)."""
    use_imap(sent, mail_servers, security="none", port=mail_servers.imap_port, ca_file=None)
    mail_servers.add_message(hard_bounce())
    result = fetch(sent, mail_servers)
    assert result.returncode == 0, result.stderr
    assert "1 hard bounce," in result.stdout



def test_postfix_dsns_fetched_over_imap_suppress_with_evidence(
        project: Project, mail_servers: MailServers) -> None:
    """The whole loop: send through Postfix, the remote refuses two readers, Postfix's own
    DSNs reach Dovecot at their VERP addresses, `bounces fetch` reads them over IMAP."""
    project.write("config/subscribers.yaml", REFUSING_READERS)
    mail_servers.settings(project.settings, security="ssl")
    env = {**ENV, **mail_servers.env()}
    done = project.run("send", "--date", ISSUE_DATE, env=env)
    assert done.returncode == 0, done.stderr
    mail_servers.wait_for_mail(2)
    result = project.run("bounces", "fetch", env=env)
    assert result.returncode == 0, result.stderr
    assert "2 mails in INBOX" in result.stdout and "1 hard bounce, 1 soft bounce," in (
        result.stdout)
    assert "nothing left in INBOX" in result.stdout
    found = suppressions(project)
    assert set(found) == {(ALL, "dead@example.com")}  # one soft bounce is not enough
    reason, evidence = found[(ALL, "dead@example.com")]
    assert reason == "hard-bounce" and evidence["status"] == "5.1.1"
    assert evidence["issue"] == f"morning-brief/{ISSUE_DATE}"
    assert len(mail_servers.messages("Processed")) == 2 and mail_servers.messages() == []
    again = project.run("bounces", "fetch", env=env)
    assert "0 mails in INBOX" in again.stdout and set(suppressions(project)) == set(found)
