"""`newsletter bounces fetch` from a real Maildir, through the real CLI, after a real send:
suppressions with their evidence, handled mail moved to .Processed, what is not ours or not
understood left in place and reported, a second fetch that changes nothing, one-line
errors."""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import sqlite3
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from newsletter import verp
from newsletter.ledger import ALL_LISTS, SqliteLedger
from tests import bounce_mail
from tests.conftest import ISSUE_DATE, Project

SECRET = "a-long-random-test-secret-for-the-bounces"
BASE = "bounces@bounce.example.com"
ENV = {"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET}
ISSUE = f"morning-brief/{ISSUE_DATE}"
BOUNCES_YAML = f"bounces:\n  address: {BASE}\n  maildir: mail/bounces\n"


def return_path(email: str) -> str:
    return verp.address(BASE, SECRET, "b", ISSUE, email)


def sent_message(project: Project, email: str) -> bytes:
    return (project.outbox / "mail" / "morning-brief" / ISSUE_DATE / f"{email}.eml").read_bytes()


def mailto_of(project: Project, email: str) -> tuple[str, str]:
    """The address and subject of the List-Unsubscribe mailto the reader got."""
    msg = message_from_bytes(sent_message(project, email), policy=policy.default)
    [uri] = [u for u in re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
             if u.startswith("mailto:")]
    address, _, query = uri.removeprefix("mailto:").partition("?subject=")
    from urllib.parse import unquote
    return address, unquote(query)


def message_id_of(project: Project, email: str) -> str:
    msg = message_from_bytes(sent_message(project, email), policy=policy.default)
    return str(msg["Message-ID"])


@pytest.fixture
def sent(project: Project) -> Project:
    """The issue sent (file backend) with bounces.address set, and an empty Maildir."""
    project.settings.write_text(project.settings.read_text() + BOUNCES_YAML)
    result = project.run("send", "--date", ISSUE_DATE, env=ENV)
    assert result.returncode == 0, result.stderr
    (project.root / "mail").mkdir()
    mailbox.Maildir(project.root / "mail" / "bounces", create=True)
    # The mailto is a VERP address too: bounces.address took effect.
    assert mailto_of(project, "linus@example.com")[0] == verp.address(
        BASE, SECRET, "u", ISSUE, "linus@example.com")
    return project


def deliver(project: Project, *raws: bytes) -> list[str]:
    """Put mail into the bounce Maildir as an MDA does (tmp/, then new/)."""
    box = mailbox.Maildir(project.root / "mail" / "bounces", create=False)
    return [box.add(raw) for raw in raws]


def names(folder: Path) -> set[str]:
    return {entry.split(":")[0] for sub in ("new", "cur") if (folder / sub).is_dir()
            for entry in os.listdir(folder / sub)}


def fetch(project: Project, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return project.run("bounces", "fetch", env={**ENV, **(env or {})})


def ledger_rows(project: Project) -> tuple[list[tuple], list[tuple]]:
    db = sqlite3.connect(project.outbox / "newsletter.sqlite3")
    try:
        return (db.execute("SELECT * FROM suppressions ORDER BY email, list_id").fetchall(),
                db.execute("SELECT * FROM events ORDER BY event_id").fetchall())
    finally:
        db.close()


def suppressions(project: Project) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        return {(s.list_id, s.email): (s.reason, s.evidence) for s in ledger.suppressions()}
    finally:
        ledger.close()


def test_fetch_suppresses_with_evidence_moves_what_it_handled_and_leaves_the_rest(
        sent: Project) -> None:
    unsub_to, unsub_subject = mailto_of(sent, "ada@example.com")
    handled = deliver(
        sent,
        bounce_mail.dsn(return_path("linus@example.com"), "linus@example.com",
                        original_message_id=message_id_of(sent, "linus@example.com")),
        bounce_mail.arf(return_path("zoe@example.org"), "zoe@example.org",
                        message_id=message_id_of(sent, "zoe@example.org")),
        bounce_mail.mail(unsub_to, "Ada Lovelace <ada@example.com>", unsub_subject),
        bounce_mail.auto_reply(return_path("ada@example.com"), "ada@example.com"),
        bounce_mail.dsn(return_path("ada@example.com"), "ada@example.com", action="delayed",
                        status="4.4.1", diagnostic="connect to mx: Connection timed out"),
    )
    stranger, forged = deliver(
        sent,
        bounce_mail.mail(BASE, "Someone <someone@elsewhere.test>", "Are you hiring?"),
        # A bounce "about" Ada, sent to a token nobody signed: no evidence of anything.
        bounce_mail.dsn("bounces+b" + "a" * 32 + "@bounce.example.com", "ada@example.com"),
    )
    result = fetch(sent)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "bounces fetch: 7 mails in Maildir mail/bounces: 1 hard bounce, 0 soft bounces, "
        "1 complaint, 1 unsubscribe, 2 ignored (auto-replies, delays), 0 duplicates; "
        "3 readers suppressed; 2 left in mail/bounces (1 not understood, 1 not ours)")
    left = lines[1:3]
    assert any(f"new/{stranger}" in line and "'Are you hiring?'" in line
               and "not understood" in line for line in left), left
    assert any(f"new/{forged}" in line and "not ours" in line and "no signed token" in line
               for line in left), left
    assert "not an error" in lines[3] and len(lines) == 4

    found = suppressions(sent)
    assert set(found) == {(ALL_LISTS, "linus@example.com"), (ALL_LISTS, "zoe@example.org"),
                          ("morning-brief", "ada@example.com")}
    reason, evidence = found[(ALL_LISTS, "linus@example.com")]
    assert reason == "hard-bounce"
    assert evidence["status"] == "5.1.1" and evidence["issue"] == ISSUE
    assert "User unknown" in evidence["diagnostic"] and evidence["source"] == "mailbox"
    assert evidence["at"]
    assert found[(ALL_LISTS, "zoe@example.org")][0] == "complaint"
    assert found[("morning-brief", "ada@example.com")][0] == "unsubscribed"

    root = sent.root / "mail" / "bounces"
    assert names(root) == {stranger, forged}
    assert names(root / ".Processed") == set(handled)
    # Moved as they were (byte for byte), marked seen; left mail untouched in new/.
    assert all(name.endswith(":2,S") for name in os.listdir(root / ".Processed" / "cur"))
    assert sorted(os.listdir(root / "new")) == sorted([stranger, forged])


def test_a_second_fetch_changes_nothing_and_lists_what_is_left_again(sent: Project) -> None:
    deliver(sent,
            bounce_mail.dsn(return_path("linus@example.com"), "linus@example.com"),
            bounce_mail.mail(BASE, "someone@elsewhere.test", "Hello"))
    first = fetch(sent)
    assert first.returncode == 0, first.stderr
    before = ledger_rows(sent), names(sent.root / "mail" / "bounces"), names(
        sent.root / "mail" / "bounces" / ".Processed")
    second = fetch(sent)
    assert second.returncode == 0, second.stderr
    after = ledger_rows(sent), names(sent.root / "mail" / "bounces"), names(
        sent.root / "mail" / "bounces" / ".Processed")
    assert after == before
    assert "1 mail in" in second.stdout and "0 hard bounces" in second.stdout
    assert "1 left in" in second.stdout and "'Hello'" in second.stdout


def test_a_bounce_fetched_again_after_a_crash_is_a_duplicate(sent: Project) -> None:
    """Mail put back (as a crash between the ledger's commit and the move leaves it) is
    read again, its event is on record: nothing more happens, and it is moved."""
    raw = bounce_mail.dsn(return_path("linus@example.com"), "linus@example.com")
    deliver(sent, raw)
    assert fetch(sent).returncode == 0
    before = ledger_rows(sent)
    deliver(sent, raw)
    again = fetch(sent)
    assert again.returncode == 0, again.stderr
    assert "0 hard bounces" in again.stdout and "1 duplicate;" in again.stdout
    assert ledger_rows(sent) == before
    assert names(sent.root / "mail" / "bounces") == set()


class Crash(Exception):
    pass


def test_mail_is_let_go_of_only_after_its_events_are_committed(
        sent: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: when the mailbox is told a mail is handled, another connection to the
    ledger already sees its suppression; a crash right then leaves the mail, and the next
    fetch finds the event on record and finishes the move."""
    from newsletter.inbound.fetch import run_fetch
    from newsletter.inbound.mailbox_maildir import MaildirMailbox
    from newsletter.settings import load_settings

    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    [key] = deliver(sent, bounce_mail.dsn(return_path("linus@example.com"),
                                          "linus@example.com"))
    seen: list[set[tuple[str, str]]] = []

    def crash(self: MaildirMailbox, mail: object) -> None:
        seen.append(set(suppressions(sent)))
        raise Crash

    with monkeypatch.context() as patched:
        patched.setattr(MaildirMailbox, "mark_handled", crash)
        with pytest.raises(Crash):
            run_fetch(load_settings(sent.settings))
    assert seen == [{(ALL_LISTS, "linus@example.com")}]
    assert names(sent.root / "mail" / "bounces") == {key}
    before = ledger_rows(sent)
    report = run_fetch(load_settings(sent.settings))
    assert report.counts["duplicate"] == 1 and report.counts["hard"] == 0
    assert report.handled == 1 and not report.left
    assert ledger_rows(sent) == before
    assert names(sent.root / "mail" / "bounces") == set()
    assert names(sent.root / "mail" / "bounces" / ".Processed") == {key}


def test_soft_bounces_count_and_suppress_at_the_limit(sent: Project) -> None:
    sent.settings.write_text(sent.settings.read_text() + "  soft_limit: 1\n")
    deliver(sent, bounce_mail.dsn(return_path("linus@example.com"), "linus@example.com",
                                  status="4.2.2", diagnostic="452 4.2.2 Mailbox full"))
    result = fetch(sent)
    assert result.returncode == 0, result.stderr
    assert "1 soft bounce," in result.stdout and "1 reader suppressed" in result.stdout
    reason, evidence = suppressions(sent)[(ALL_LISTS, "linus@example.com")]
    assert reason == "soft-bounces" and evidence["status"] == "4.2.2"


def test_without_bounces_address_it_still_fetches_and_warns(sent: Project) -> None:
    sent.settings.write_text(sent.settings.read_text().replace(f"  address: {BASE}\n", ""))
    unsub_to, unsub_subject = mailto_of(sent, "ada@example.com")
    deliver(sent, bounce_mail.mail(unsub_to, "ada@example.com", unsub_subject))
    result = fetch(sent)
    assert result.returncode == 0, result.stderr
    [warning] = result.stderr.splitlines()
    assert warning.startswith("warning: bounces.address is not set") and (
        "cannot be attributed" in warning)
    assert "1 unsubscribe," in result.stdout
    assert suppressions(sent)[("morning-brief", "ada@example.com")][0] == "unsubscribed"


def test_hostile_mail_is_one_report_line_each(sent: Project) -> None:
    """Bytes that are not mail, an escape sequence in a subject, a huge mail: each one
    line in the report, left in place; nothing else happens."""
    garbage = bytes(range(256)) * 40
    escape = bounce_mail.mail(BASE, "x@elsewhere.test", "\x1b]0;pwned\x07\x1b[2J hi")
    huge = b"Subject: big\r\n\r\n" + b"x" * (11 * 1024 * 1024)
    keys = deliver(sent, garbage, escape, huge)
    result = fetch(sent)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    lines = result.stdout.splitlines()
    assert "3 left in" in lines[0]
    assert len([line for line in lines if "left in" in line and "new/" in line]) == 3
    assert any("too large" in line and f"new/{keys[2]}" in line for line in lines)
    assert names(sent.root / "mail" / "bounces") == set(keys)
    assert ledger_rows(sent)[0] == []


def test_an_empty_mailbox(sent: Project) -> None:
    result = fetch(sent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("bounces fetch: 0 mails in Maildir")
    assert "nothing left in" in result.stdout


# --- errors: one line, no traceback, nothing changed ----------------------------------

def one_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_a_missing_maildir_is_one_line(sent: Project) -> None:
    shutil.rmtree(sent.root / "mail" / "bounces")
    line = one_error(fetch(sent))
    assert "mail/bounces" in line and "bounces.maildir" in line and "does not exist" in line
    assert not (sent.root / "mail" / "bounces").exists()  # never made


def test_a_maildir_that_is_a_file_is_one_line(sent: Project) -> None:
    shutil.rmtree(sent.root / "mail" / "bounces")
    (sent.root / "mail" / "bounces").write_text("not a folder")
    assert "is not a folder" in one_error(fetch(sent))


def test_a_folder_that_is_not_a_maildir_is_one_line(sent: Project) -> None:
    shutil.rmtree(sent.root / "mail" / "bounces")
    (sent.root / "mail" / "bounces").mkdir()
    assert "not a Maildir" in one_error(fetch(sent))


def test_nothing_configured_says_what_to_set(project: Project) -> None:
    line = one_error(project.run("bounces", "fetch"))
    assert "no bounce mailbox is configured" in line
    assert "bounces.imap" in line and "bounces.maildir" in line


def test_a_read_only_ledger_stops_the_fetch_and_moves_nothing(sent: Project) -> None:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the read-only ledger tests as root (chattr)")
        pytest.skip("needs root for chattr +i")
    keys = deliver(sent, bounce_mail.dsn(return_path("linus@example.com"), "linus@example.com"))
    ledger = sent.outbox / "newsletter.sqlite3"
    subprocess.run(["chattr", "+i", str(ledger)], check=True)
    try:
        line = one_error(fetch(sent), code=2)
    finally:
        subprocess.run(["chattr", "-i", str(ledger)], check=True)
    assert "newsletter.sqlite3" in line and "stays in the mailbox for the next fetch" in line
    assert names(sent.root / "mail" / "bounces") == set(keys)
    assert not (sent.root / "mail" / "bounces" / ".Processed" / "cur").exists() or not names(
        sent.root / "mail" / "bounces" / ".Processed")
    assert ledger_rows(sent)[0] == []
