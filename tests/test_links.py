"""UTM tags on article links: off by default, added from settings when asked."""

from __future__ import annotations

import re
from email import message_from_bytes, policy

from newsletter.links import tag_url
from tests.conftest import ISSUE_DATE, Project


def test_tag_url_keeps_what_is_there() -> None:
    tags = {"utm_source": "brief", "utm_medium": "email"}
    assert tag_url("https://e.com/a?x=1#top", tags) == (
        "https://e.com/a?x=1&utm_source=brief&utm_medium=email#top")
    assert tag_url("https://e.com/a?utm_source=own", tags) == (
        "https://e.com/a?utm_source=own&utm_medium=email")
    assert tag_url("mailto:a@e.com", tags) == "mailto:a@e.com"


def _html(project: Project) -> str:
    eml = project.outbox / "mail" / "morning-brief" / ISSUE_DATE / "ada@example.com.eml"
    return message_from_bytes(eml.read_bytes(), policy=policy.default).get_body(
        ("html",)).get_content()


def test_links_are_untagged_by_default(project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    assert "utm_" not in _html(project)


def test_article_links_are_tagged_from_settings_not_the_unsubscribe_link(
        project: Project) -> None:
    project.settings.write_text(project.settings.read_text() + (
        "links:\n  utm_source: newsletter\n  utm_medium: email\n"
        "  utm_campaign: '{list}-{date}'\n"))
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    html = _html(project)
    tags = "utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=morning-brief-2026-11-24"
    assert f'href="https://news.example.com/2026/11/bridge?{tags}"' in html
    assert f'href="https://news.example.com/2026/11/ferry?{tags}"' in html
    [unsubscribe] = re.findall(r'href="(https://news.example.com/unsubscribe[^"]*)"', html)
    assert re.fullmatch(r"https://news.example.com/unsubscribe\?t=[\w-]+", unsubscribe)
