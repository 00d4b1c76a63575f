"""The final review of issue 12: what falls between the pieces once merged."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.test_preferences as preferences
from newsletter.ledger import SqliteLedger
from newsletter.readers.store import NewReader
from newsletter.unsubscribe import opaque_token
from tests.conftest import ISSUE_DATE, Project
from tests.signup_site import SECRET, prepare, serving
from tests.test_preferences import LIST, Site
from tests.web_server import call

site = preferences.site  # the preference tests' `serve`, as a fixture here

# What issue 12 added to the ledger: a ledger without them is one from before it.
READER_TABLES = ("readers", "confirmation_mails", "forgotten", "forgotten_complaints")


@pytest.fixture
def read_only_old_ledger(project: Project) -> Iterator[Path]:
    """A ledger from before issue 12 (sent once, then one reader unsubscribed), then made
    immutable (`chattr +i`, as root): the commands that only read must still read it."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root to make the ledger immutable")
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    assert project.run("unsubscribe", "linus@example.com").returncode == 0
    path = project.outbox / "newsletter.sqlite3"
    db = sqlite3.connect(path)
    for table in READER_TABLES:
        db.execute(f"DROP TABLE {table}")
    db.commit()
    db.close()
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_old_ledger_read_only_is_still_read(project: Project,
                                               read_only_old_ledger: Path) -> None:
    status = project.run("status")
    assert status.returncode == 0, status.stderr
    assert "file 4, signup 0, import 0" in status.stdout
    assert "3 sent" in status.stdout and "1 suppressed" in status.stdout
    compose = project.run("compose", "--date", ISSUE_DATE)
    assert compose.returncode == 0, compose.stderr
    show = project.run("subscribers", "show", "linus@example.com")
    assert show.returncode == 0, show.stderr
    assert "unsubscribed since" in show.stdout and "sent" in show.stdout
    export = project.run("subscribers", "export", "--format", "csv")
    assert export.returncode == 0, export.stderr
    assert "linus@example.com" in export.stdout and "suppressed" in export.stdout
    dry = project.run("send", "--date", ISSUE_DATE, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "3 sent earlier" in dry.stdout or "sent earlier" in dry.stdout
    # Nothing was written: still the old ledger.
    db = sqlite3.connect(f"file:{read_only_old_ledger}?mode=ro", uri=True)
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert not tables & set(READER_TABLES)


def test_the_preference_page_names_topics_and_list_as_the_sign_up_form_does(
        site: Site) -> None:
    page = site.get(site.token("ada@example.com"))
    form = call(f"{site.base}/subscribe/{LIST}")
    assert page.status == 200 and form.status == 200
    for body in (page.body, form.body):
        assert re.search(r'value="city"[^>]*> City</label>', body), body
        assert "<footer>The Morning Brief</footer>" in body, body


def test_a_one_click_unsubscribe_of_a_forgotten_address_keeps_nothing_of_it(
        site: Site) -> None:
    """An old issue's link, clicked after `forget`: the address is never mailed anyway, and
    storing the suppression would keep it in clear again, which `forget` promised not to."""
    ledger = site.web.ledger
    ledger.forget("linus@example.com")
    link = f"{site.base}/unsubscribe?t={opaque_token(site.secret, LIST, 'linus@example.com')}"
    answer = call(link, "POST", b"List-Unsubscribe=One-Click")
    assert answer.status == 200 and "gets no more" in answer.body
    assert not ledger.is_suppressed(LIST, "linus@example.com")
    assert ledger.is_forgotten("linus@example.com")
    # A reader who is not forgotten is unsubscribed as ever.
    link = f"{site.base}/unsubscribe?t={opaque_token(site.secret, LIST, 'ada@example.com')}"
    assert call(link, "POST", b"List-Unsubscribe=One-Click").status == 200
    assert ledger.is_suppressed(LIST, "ada@example.com")


def test_a_pending_import_who_signs_up_keeps_the_imports_name_and_topics(
        project: Project) -> None:
    """README: "joins, with the name and topics of the import: what they typed on the form
    is not taken, since anyone can post it"."""
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        ledger.import_readers([NewReader(LIST, "sam@example.net", "Sam Imported", ("city",),
                                         "Europe/Paris")], "pending")
        result, row = ledger.sign_up(NewReader(LIST, "Sam@Example.net", "You won! Call 555",
                                               ("culture",), "Asia/Tokyo"))
        assert result == "pending" and row is not None
        assert (row.origin, row.name, row.topics, row.timezone) == (
            "import", "Sam Imported", ("city",), "Europe/Paris")
        assert ledger.confirm(LIST, "sam@example.net", row.nonce or "") == "confirmed"
        kept = ledger.reader_row(LIST, "sam@example.net")
        assert kept is not None and kept.name == "Sam Imported"
    finally:
        ledger.close()


def test_a_reader_unsubscribed_from_every_list_who_confirms_gets_that_list_only(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """`newsletter unsubscribe linus@…` (every list), then Linus signs up and confirms: the
    page said "You are subscribed" while the send kept skipping him as suppressed."""
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    prepare(project)
    gone = project.run("unsubscribe", "linus@example.com")
    assert gone.returncode == 0, gone.stderr
    with serving(project) as signup_site:
        assert signup_site.post(email="linus@example.com").status == 200
        done = signup_site.confirm(signup_site.confirm_link("linus@example.com"))
        assert done.status == 200 and "You are subscribed" in done.body
    sent = project.run("send", "--date", ISSUE_DATE,
                       env={"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET})
    assert sent.returncode == 0, sent.stderr
    assert (project.outbox / "mail/morning-brief" / ISSUE_DATE / "linus@example.com.eml"
            ).exists()
    # His unsubscribe stands for the other lists.
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        assert not ledger.is_suppressed("morning-brief", "linus@example.com")
        for other in ("abendblatt", "open-door"):
            assert ledger.is_suppressed(other, "linus@example.com"), other
    finally:
        ledger.close()
