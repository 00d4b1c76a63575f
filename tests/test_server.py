"""`newsletter serve` over real HTTP on loopback: one-click unsubscribe and its guards."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn

from newsletter.ledger import SqliteLedger
from newsletter.server import create_app
from newsletter.settings import load_settings
from newsletter.unsubscribe import token
from tests.conftest import ISSUE_DATE, Project
from tests.smtp_server import free_port

SECRET = "a-long-random-test-secret"


@pytest.fixture
def served(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real uvicorn server for the project, on a free loopback port."""
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(load_settings(project.settings)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    ready = threading.Event()
    for _ in range(500):  # wait for the socket, not for time to pass
        if server.started or not thread.is_alive():
            break
        ready.wait(0.01)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


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
    assert f"token={token(SECRET, 'morning-brief', email)}" in https
    return https


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
    lambda q: q.replace("ada%40example.com", "linus%40example.com"),  # someone else's address
    lambda q: q[:-3] + "AAA",  # an altered token
    lambda q: q.split("&token=")[0],  # no token
])
def test_a_forged_or_altered_link_is_403(project: Project, served: str, change) -> None:
    url = local(link_in_sent_mail(project, "ada@example.com"), served)
    status, _ = call(change(url), "POST", b"List-Unsubscribe=One-Click")
    assert status == 403
    assert suppressed(project) == {}


def test_unknown_list_is_404_and_health_is_ok(project: Project, served: str) -> None:
    assert call(f"{served}/unsubscribe?list=nope&email=a%40b.c&token=x", "POST", b"")[0] == 404
    assert call(f"{served}/healthz") == (200, "ok")


def test_serve_without_a_secret_is_a_clear_error(project: Project) -> None:
    result = project.run("serve")
    assert result.returncode == 2 and "NEWSLETTER_UNSUBSCRIBE__SECRET" in result.stderr
    assert "Traceback" not in result.stderr


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
    body = message_from_bytes(eml, policy=policy.default).get_body(("html",)).get_content()
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
