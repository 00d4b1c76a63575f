"""Feeds in the whole pipeline: configured in settings, read by every command, warned about."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import ISSUE_DATE, REPO, Project

SAMPLE_FEED = REPO / "articles" / "feeds" / "harbourton-events.xml"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _use_feeds(project: Project, *feeds: str) -> None:
    text = project.settings.read_text()
    listed = ", ".join(f'"{feed}"' for feed in feeds)
    project.settings.write_text(text.replace(
        "  max_age_days: 2\n", f"  max_age_days: 2\n  feeds: [{listed}]\n  feed_timeout: 2\n"))


def test_feed_articles_join_the_issue_and_a_dead_feed_is_a_warning(project: Project) -> None:
    shutil.copy(SAMPLE_FEED, project.root / "events.xml")
    dead = f"http://127.0.0.1:{_closed_port()}/feed.xml"
    _use_feeds(project, "events.xml", dead)
    result = project.run("compose", "--date", ISSUE_DATE, "--json")
    assert result.returncode == 0, result.stderr
    issue = json.loads(result.stdout)
    titles = [a["title"] for a in issue["headlines"]]
    assert "Pilot gig race to the outer buoy" in titles
    from_feed = next(a for a in issue["headlines"] if a["title"].startswith("Pilot gig"))
    assert from_feed["url"].startswith("https://example.com/events/")
    assert from_feed["published"].endswith("Z") or from_feed["published"].endswith("+00:00")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and dead in warnings[0] and "Traceback" not in result.stderr
    sent = project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    assert (project.outbox / "newsletter.sqlite3").exists()


def test_every_feed_failing_stops_the_run_with_one_error(project: Project) -> None:
    _use_feeds(project, f"http://127.0.0.1:{_closed_port()}/feed.xml", "missing.xml")
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert any(line.startswith("error:") and "articles.feeds" in line
               for line in result.stderr.splitlines()), result.stderr
    assert not list(project.outbox.rglob("*.eml"))


EMPTY_RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Quiet Quay</title><link>https://quiet.example.org/</link>
<description>Nothing yet.</description></channel></rss>
"""


@contextlib.contextmanager
def _serving(body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/feed.xml"
    finally:
        server.shutdown()
        server.server_close()


def _errors(result) -> list[str]:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_an_empty_feed_as_the_only_source_is_named_in_the_error(project: Project) -> None:
    for article in project.articles.iterdir():
        article.unlink()
    (project.root / "quiet.xml").write_bytes(EMPTY_RSS)
    settings = project.settings.read_text()
    _use_feeds(project, "quiet.xml")
    errors = _errors(project.run("compose", "--date", ISSUE_DATE))
    assert errors == [
        "error: quiet.xml: articles.feeds: the feed has no entries, and there are no other "
        "articles — check the feed's address (or wait for it to publish), or add Markdown "
        "(.md) or text (.txt) articles to articles.paths"]
    with _serving(EMPTY_RSS) as url:
        project.settings.write_text(settings)
        _use_feeds(project, url, "quiet.xml")
        errors = _errors(project.run("send", "--date", ISSUE_DATE))
    assert errors[0].startswith("error: articles.feeds: none of the 2 feeds has an entry")
    assert errors[1:] == [f"error: {url}: articles.feeds: the feed has no entries",
                          "error: quiet.xml: articles.feeds: the feed has no entries"]
    assert not list(project.outbox.rglob("*.eml"))


def test_a_feed_whose_entries_cannot_be_used_says_so(project: Project) -> None:
    for article in project.articles.iterdir():
        article.unlink()
    (project.root / "blank.xml").write_bytes(EMPTY_RSS.replace(
        b"</channel>", b"<item><link>https://quiet.example.org/1</link></item></channel>"))
    _use_feeds(project, "blank.xml")
    result = project.run("compose", "--date", ISSUE_DATE)
    assert _errors(result)[0].startswith(
        "error: blank.xml: articles.feeds: the feed's only entry could not be used, and there "
        "are no other articles — ")
    assert "warning: blank.xml: an entry has neither a title nor any text; skipped" \
        in result.stderr
