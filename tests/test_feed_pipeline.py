"""Feeds in the whole pipeline: configured in settings, read by every command, warned about."""

from __future__ import annotations

import json
import shutil
import socket

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
