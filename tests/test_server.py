"""`newsletter serve` over real HTTP on loopback: one-click unsubscribe and its guards."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from newsletter.ledger import SqliteLedger
from newsletter.settings import load_settings
from newsletter.unsubscribe import read_token, token
from newsletter.web import create_app
from tests.conftest import ISSUE_DATE, Project
from tests.web_server import call as request
from tests.web_server import one_click, running

SECRET = "a-long-random-test-secret"


@pytest.fixture
def served(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real uvicorn server for the project, on a loopback port."""
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    with running(create_app(load_settings(project.settings))) as base:
        yield base


def call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    answer = request(url, method, body)
    return answer.status, answer.body


def suppressed(project: Project) -> dict[str, str]:
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        return ledger.suppressed("morning-brief")
    finally:
        ledger.close()


def link_in_sent_mail(project: Project, email: str) -> str:
    result = project.run("send", "--date", ISSUE_DATE,
                         env={"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    eml = project.outbox / "mail" / "morning-brief" / ISSUE_DATE / f"{email}.eml"
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    https = str(msg["List-Unsubscribe"]).split(",")[0].strip().strip("<>")
    assert read_token(SECRET, urlsplit(https).query.removeprefix("t=")) == (
        "morning-brief", email)
    return https


def old_link(email: str, list_id: str = "morning-brief") -> str:
    """A link as issues sent by earlier versions carry it: address in clear, HMAC token."""
    query = urlencode({"list": list_id, "email": email,
                       "token": token(SECRET, list_id, email)})
    return f"https://news.example.com/unsubscribe?{query}"


def local(url: str, base: str) -> str:
    parts = urlsplit(url)
    return f"{base}{parts.path}?{parts.query}"


def test_one_click_post_unsubscribes_and_the_next_send_skips(project: Project,
                                                            served: str) -> None:
    url = local(link_in_sent_mail(project, "linus@example.com"), served)
    status, body = call(url, "POST", b"List-Unsubscribe=One-Click")
    assert status == 200 and "gets no more" in body
    assert "linus@example.com" in suppressed(project)
    assert call(url, "POST", b"List-Unsubscribe=One-Click")[0] == 200  # idempotent
    project.write("articles/2026-11-25-new.md",
                  "---\ntitle: Next day\npublished: 2026-11-25T05:00:00+00:00\n---\nNews.\n")
    result = project.run("send", "--date", "2026-11-25",
                         env={"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET})
    assert result.returncode == 0 and "1 suppressed" in result.stdout
    assert not (project.outbox / "mail/morning-brief/2026-11-25/linus@example.com.eml").exists()


def test_get_shows_a_button_and_changes_nothing(project: Project, served: str) -> None:
    url = local(link_in_sent_mail(project, "ada@example.com"), served)
    status, body = call(url)
    assert status == 200 and '<form method="post"' in body and "Unsubscribe</button>" in body
    assert suppressed(project) == {}


@pytest.mark.parametrize("change", [
    lambda q: q[:-3] + ("AAA" if not q.endswith("AAA") else "BBB"),  # an altered token
    lambda q: q[:-1],  # a shortened one
    lambda q: q.split("?")[0] + "?t=",  # an empty one
    lambda q: q.split("?")[0],  # none
])
def test_a_forged_or_altered_link_is_403(project: Project, served: str, change) -> None:
    url = local(link_in_sent_mail(project, "ada@example.com"), served)
    status, _ = call(change(url), "POST", b"List-Unsubscribe=One-Click")
    assert status == 403
    assert suppressed(project) == {}


def test_links_of_earlier_versions_still_unsubscribe(project: Project, served: str) -> None:
    url = local(old_link("ada@example.com"), served)
    status, body = call(url)
    assert status == 200 and '<form method="post"' in body and suppressed(project) == {}
    assert one_click(url).status == 200
    assert "ada@example.com" in suppressed(project)


@pytest.mark.parametrize("change", [
    lambda q: q.replace("ada%40example.com", "linus%40example.com"),  # someone else's address
    lambda q: q[:-3] + "AAA",  # an altered token
    lambda q: q.split("&token=")[0],  # no token
])
def test_an_altered_link_of_an_earlier_version_is_403(project: Project, served: str,
                                                       change) -> None:
    assert one_click(change(local(old_link("ada@example.com"), served))).status == 403
    assert suppressed(project) == {}


def test_unknown_list_is_404_and_health_is_ok(project: Project, served: str) -> None:
    assert call(f"{served}/unsubscribe?list=nope&email=a%40b.c&token=x", "POST", b"")[0] == 404
    assert call(f"{served}/healthz") == (200, "ok")


def test_the_secret_is_refused_in_the_settings_file(project: Project, tmp_path: Path) -> None:
    project.settings.write_text(project.settings.read_text()
                                + "unsubscribe:\n  secret: s3cr3t-in-file\n")
    result = project.run("config", "show")
    assert result.returncode == 2 and "s3cr3t-in-file" not in result.stderr
    assert "unsubscribe.secret: secrets don't belong in the settings file" in result.stderr


def test_sent_issues_are_archived_linked_and_served(project: Project, served: str) -> None:
    link_in_sent_mail(project, "zoe@example.org")
    page = project.outbox / "archive" / "morning-brief" / f"{ISSUE_DATE}.html"
    text = page.read_text()
    assert "Harbour bridge reopens after repairs" in text and "<style>" in text
    for private in ("zoe@example.org", "ada@example.com", "token=", "Good morning", "NLSLOT"):
        assert private not in text
    eml = (project.outbox / "mail/morning-brief" / ISSUE_DATE / "zoe@example.org.eml").read_bytes()
    html = message_from_bytes(eml, policy=policy.default).get_body(("html",))
    assert html is not None
    body = html.get_content()
    web_url = f"https://news.example.com/archive/morning-brief/{ISSUE_DATE}.html"
    assert f'<a href="{web_url}"' in body and "View in browser" in body
    status, index = call(f"{served}/archive/morning-brief/")
    assert status == 200 and f'<a href="{ISSUE_DATE}.html">Tuesday, 24 November 2026</a>' in index
    status, served_page = call(f"{served}/archive/morning-brief/{ISSUE_DATE}.html")
    assert status == 200 and served_page == text


def test_test_sends_and_dry_runs_archive_nothing(project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE, "--dry-run").returncode == 0
    assert project.run("send", "--date", ISSUE_DATE, "--to", "ed@example.net").returncode == 0
    assert not (project.outbox / "archive").exists()
