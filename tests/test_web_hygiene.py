"""`serve` hygiene: 4xx for odd input, security headers, no open redirect, the archive and
nothing else, an access log without queries, and a ledger that never stalls the loop."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from newsletter.ledger import SqliteLedger
from newsletter.settings import load_settings
from newsletter.unsubscribe import opaque_token, token
from newsletter.web import create_app
from newsletter.web.headers import ARCHIVE_CSP
from tests.conftest import ISSUE_DATE, Project, clean_env
from tests.web_server import Answer, call, one_click, running

SECRET = "a-long-random-test-secret-for-hygiene"
PAGE = f"/archive/morning-brief/{ISSUE_DATE}.html"


@pytest.fixture
def served(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The project after one send (so the archive has pages), served on loopback."""
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    result = project.run("send", "--date", ISSUE_DATE,
                         env={"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    with running(create_app(load_settings(project.settings))) as base:
        yield base


def link(email: str = "ada@example.com") -> str:
    return f"/unsubscribe?t={opaque_token(SECRET, 'morning-brief', email)}"


@pytest.mark.parametrize("query", [
    {"list": "morning-brief", "email": "ada@example.com", "token": "é"},
    {"list": "morning-brief", "email": "ada@example.com", "token": "\udcff"},
    {"t": "é"},
    {"t": "\x00"},
    {"t": "A" * 10_000},
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_odd_tokens_are_refused_not_a_server_error(served: str, query: dict[str, str],
                                                   method: str) -> None:
    url = f"{served}/unsubscribe?{urlencode(query, errors='surrogatepass')}"
    answer = call(url, method, b"List-Unsubscribe=One-Click" if method == "POST" else None)
    assert answer.status == 403, answer.body


def assert_hardened(answer: Answer) -> None:
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


@pytest.mark.parametrize(("path", "method", "status"), [
    ("/healthz", "GET", 200),
    ("/nowhere", "GET", 404),
    ("/healthz", "POST", 405),
    (link(), "GET", 200),
    (link(), "POST", 200),
    ("/unsubscribe?t=nope", "POST", 403),
    ("/unsubscribe?list=gone&email=a%40b.c&token=x", "GET", 404),
    (PAGE, "GET", 200),
    ("/archive/morning-brief/", "GET", 200),
    ("/archive/morning-brief", "GET", 307),
    ("/archive/morning-brief/missing.html", "GET", 404),
])
def test_every_answer_sends_the_security_headers(served: str, path: str, method: str,
                                                 status: int) -> None:
    answer = call(f"{served}{path}", method, b"" if method == "POST" else None)
    assert answer.status == status
    assert_hardened(answer)


def test_archive_pages_carry_a_strict_policy_with_no_script(served: str) -> None:
    for path in (PAGE, "/archive/morning-brief/"):
        answer = call(f"{served}{path}")
        assert answer.status == 200 and answer.headers["Content-Type"] == \
            "text/html; charset=utf-8"
        assert answer.headers["Content-Security-Policy"] == ARCHIVE_CSP
    assert "script-src" not in ARCHIVE_CSP and ARCHIVE_CSP.startswith("default-src 'none'")


def test_the_unsubscribe_page_is_not_cached(served: str) -> None:
    answer = call(f"{served}{link()}")
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/archive/morning-brief", "/archive"])
def test_the_slash_redirect_ignores_the_host_header(project: Project, served: str,
                                                    path: str) -> None:
    if path == "/archive":
        project.write("outbox/archive/index.html", "<!DOCTYPE html><title>all</title>")
    answer = call(f"{served}{path}", headers={"Host": "evil.example"})
    assert answer.status == 307
    assert answer.headers["Location"] == f"{path.rsplit('/', 1)[1]}/"
    forwarded = call(f"{served}{path}", headers={"X-Forwarded-Host": "evil.example",
                                                  "X-Forwarded-Proto": "https"})
    assert "evil" not in forwarded.headers["Location"]


@pytest.mark.parametrize("path", ["/unsubscribe/", "/healthz/", "/unsubscribe//"])
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_a_trailing_slash_never_redirects_a_token_to_the_host_header(
        project: Project, served: str, path: str, method: str) -> None:
    url = f"{served}{path}{link()[len('/unsubscribe'):]}"
    answer = call(url, method, headers={"Host": "evil.example"})
    assert answer.status == 404
    assert "Location" not in answer.headers
    assert SqliteLedger(project.outbox / "newsletter.sqlite3").suppressed("morning-brief") == {}


def test_serve_publishes_archive_pages_and_nothing_else(project: Project, served: str,
                                                        tmp_path_factory) -> None:
    archive = project.outbox / "archive" / "morning-brief"
    outside = tmp_path_factory.mktemp("outside")
    (outside / "private.html").write_text("<p>private</p>")
    (outside / "index.html").write_text("<p>private index</p>")
    project.write("outbox/archive/morning-brief/.hidden.html", "<p>hidden</p>")
    project.write("outbox/archive/.git/index.html", "<p>dot folder</p>")
    project.write("outbox/archive/morning-brief/notes.txt", "not a page")
    project.write("outbox/archive/morning-brief/ada@example.com.eml", "From: x\n\nmail")
    project.write("outbox/archive/morning-brief/page.HTML", "<p>odd case</p>")
    (archive / "leak.html").symlink_to(outside / "private.html")
    (archive / "elsewhere").symlink_to(outside, target_is_directory=True)
    (archive / "inside.html").symlink_to(archive / f"{ISSUE_DATE}.html")
    (archive / "to-hidden.html").symlink_to(archive / ".hidden.html")
    os.mkfifo(archive / "fifo.html")  # must not hang the server
    refused = [
        "morning-brief/.hidden.html", ".git/index.html", ".git/", "morning-brief/notes.txt",
        "morning-brief/ada@example.com.eml", "morning-brief/page.HTML",
        "morning-brief/leak.html", "morning-brief/elsewhere/private.html",
        "morning-brief/elsewhere/", "morning-brief/to-hidden.html", "morning-brief/fifo.html",
        "morning-brief/%2e%2e/%2e%2e/newsletter.sqlite3", "%2e%2e/unsubscribe.key",
        "morning-brief/..%2f..%2funsubscribe.key", "morning-brief/%00.html",
        "morning-brief//" + f"{ISSUE_DATE}.html", "morning-brief/" + "x" * 5000 + ".html",
        "morning-brief/%5c..%5c..%5cunsubscribe.key",
    ]
    for path in refused:
        answer = call(f"{served}/archive/{path}")
        assert answer.status == 404, (path, answer.status)
        assert "private" not in answer.body and "hidden" not in answer.body
        assert_hardened(answer)
    assert call(f"{served}/archive/morning-brief/inside.html").status == 200
    assert call(f"{served}{PAGE}").status == 200


@pytest.mark.parametrize("configured", [True, False])
def test_the_access_log_has_no_query(project: Project, configured: bool) -> None:
    """The real `newsletter serve`, with or without a configured secret (the generated one
    then), its log captured as an operator's terminal would."""
    env = {**clean_env(), "NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET} if configured \
        else clean_env()
    assert project.run("send", "--date", ISSUE_DATE, env=env).returncode == 0
    secret = SECRET if configured else (project.outbox / "unsubscribe.key").read_text().strip()
    with socket.socket() as probe:  # a free port for the settings; serve binds it itself
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve"], cwd=project.root,
        env={**env, "NEWSLETTER_SERVE__PORT": str(port), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        log: list[str] = []
        for line in server.stdout:  # wait for the server to say it is up, not for time
            log.append(line)
            if "Uvicorn running on" in line:
                break
        base = f"http://127.0.0.1:{port}"
        old = urlencode({"list": "morning-brief", "email": "linus@example.com",
                         "token": token(secret, "morning-brief", "linus@example.com")})
        forged = urlencode({"list": "morning-brief", "email": "ada@example.com",
                            "token": "forged"})
        assert one_click(f"{base}/unsubscribe?{old}").status == 200
        assert call(f"{base}/unsubscribe?{forged}").status == 403
        assert call(f"{base}{PAGE}?utm_source=ada%40example.com").status == 200
        opaque = opaque_token(secret, "morning-brief", "zoe@example.org")
        assert one_click(f"{base}/unsubscribe?t={opaque}").status == 200
        health = call(f"{base}/healthz")
    finally:
        server.terminate()
        rest, _ = server.communicate(timeout=20)
    text = "".join(log) + rest
    assert text.count('"POST /unsubscribe HTTP/1.1" 200') == 2, text
    assert '"GET /unsubscribe HTTP/1.1" 403' in text
    assert f'"GET {PAGE} HTTP/1.1" 200' in text
    for private in ("linus", "ada", "zoe", opaque, "%40", "token", "?"):
        assert private not in text, private
    assert health.status == 200 and health.headers["Server"] is None  # no version banner


def test_the_confirmation_page_asks_the_ledger_off_the_event_loop(
        project: Project, served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow ledger (here: held until the test lets go) stalls only its own request:
    /healthz answers meanwhile, and the page asks for one address, not the whole list."""
    asked: list[tuple[str, tuple]] = []
    inside, release = threading.Event(), threading.Event()
    real_query = SqliteLedger._query

    def slow_query(self: SqliteLedger, sql: str, params: tuple = ()) -> list[tuple]:
        if "suppressions" in sql:
            asked.append((sql, params))
            inside.set()
            release.wait(timeout=20)
        return real_query(self, sql, params)

    monkeypatch.setattr(SqliteLedger, "_query", slow_query)
    page: list[Answer] = []
    old_link = urlencode({"list": "morning-brief", "email": "ada@example.com",
                          "token": token(SECRET, "morning-brief", "ada@example.com")})
    waiting = threading.Thread(
        target=lambda: page.append(call(f"{served}/unsubscribe?{old_link}")))
    waiting.start()
    try:
        assert inside.wait(timeout=10)
        assert call(f"{served}/healthz", timeout=5).status == 200  # not stalled
    finally:
        release.set()
        waiting.join(timeout=20)
    assert page[0].status == 200 and "Unsubscribe</button>" in page[0].body
    [(sql, params)] = asked
    db = sqlite3.connect(project.outbox / "newsletter.sqlite3")
    try:
        plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        db.close()
    assert "USING" in plan and "email=?" in plan, plan  # the primary key, both columns


def test_is_suppressed_is_one_indexed_lookup(project: Project) -> None:
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        for n in range(20_000):
            ledger._db.execute("INSERT INTO suppressions (list_id, email, reason, created) "
                               "VALUES ('morning-brief', ?, 'x', '')", (f"r{n}@example.com",))
        ledger.suppress("*", "everywhere@example.com", "complaint")
        steps = []
        ledger._db.set_progress_handler(lambda: steps.append(1), 1000)
        assert ledger.is_suppressed("morning-brief", "R19999@example.com")
        assert ledger.is_suppressed("morning-brief", "everywhere@example.com")
        assert not ledger.is_suppressed("morning-brief", "nobody@example.com")
        assert not ledger.is_suppressed("other", "r1@example.com")
        assert len(steps) < 5  # a scan of 20,000 rows takes hundreds of thousands of steps
    finally:
        ledger.close()
