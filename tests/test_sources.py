"""Markdown articles with front matter, and the source registry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.errors import ContentError
from newsletter.sources import load_articles
from newsletter.sources.markdown import read_markdown

TZ = ZoneInfo("Europe/London")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_front_matter_and_body(tmp_path: Path) -> None:
    path = write(tmp_path / "a.md", """---
title: "Bridge:  reopened"
url: https://example.com/bridge
author: Zoë Writer
published: 2026-11-24
section: City
tags: [Harbour, transport, harbour]
image: https://example.com/b.jpg
image_alt: The bridge
lead: true
priority: 3
---
The bridge **reopened** at dawn. Crowds gathered on the quay.

- gears replaced
- cabin rebuilt
""")
    [article] = read_markdown(path, TZ)
    assert article.title == "Bridge: reopened"
    assert article.published == dt.datetime(2026, 11, 24, tzinfo=TZ)
    assert (article.section, article.tags) == ("city", ("harbour", "transport"))
    assert (article.lead, article.priority, article.author) == (True, 3, "Zoë Writer")
    assert "<strong>reopened</strong>" in article.body_html and "<li>" in article.body_html
    assert article.body.startswith("The bridge reopened at dawn.")
    assert "gears replaced" in article.body
    assert article.summary == "The bridge reopened at dawn. Crowds gathered on the quay."


def test_drafts_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "d.md", "---\ntitle: T\npublished: 2026-11-24\ndraft: true\n---\nx")
    assert read_markdown(path, TZ) == []


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("no front matter here", 1, "no front matter"),
    ("---\ntitle: T\npublished: 2026-11-24\n", 1, "front matter is not closed"),
    ("---\ntitle: T\npublished: soon\n---\n", 3, "published: not a date"),
    ("---\ntitle: T\npublished: 2026-11-24\nsubtitle: x\n---\n", 4, "unknown front matter key"),
    ("---\npublished: 2026-11-24\n---\n", 1, "title: required front matter key is missing"),
    ("---\ntitle: T\npublished: 2026-11-24\nurl: /relative\n---\n", 4, "absolute http(s) URL"),
    ("---\ntitle: [unclosed\npublished: 2026-11-24\n---\n", 3, "starts on line 2"),
])
def test_front_matter_mistakes_name_file_and_line(tmp_path: Path, text: str, line: int | None,
                                                  fragment: str) -> None:
    path = write(tmp_path / "bad.md", text)
    with pytest.raises(ContentError) as caught:
        read_markdown(path, TZ)
    [problem] = caught.value.problems
    assert problem.file == path and problem.line == line
    assert fragment in str(problem)


def test_registry_reads_folders_by_extension_and_reports_all_bad_files(tmp_path: Path) -> None:
    write(tmp_path / "arts" / "good.md", "---\ntitle: Good\npublished: 2026-11-24\n---\nBody.")
    write(tmp_path / "arts" / "notes.rst", "ignored: not an article format")
    write(tmp_path / "arts" / ".hidden" / "x.md", "ignored: hidden folder")
    write(tmp_path / "arts" / "bad1.md", "nothing")
    write(tmp_path / "arts" / "sub" / "bad2.md", "---\ntitle: x\n---\n")
    with pytest.raises(ContentError) as caught:
        load_articles([tmp_path / "arts", tmp_path / "missing"], TZ)
    files = [str(p.file) for p in caught.value.problems]
    assert files == [str(tmp_path / "arts" / "bad1.md"), str(tmp_path / "arts" / "sub" / "bad2.md"),
                     str(tmp_path / "missing")]
    (tmp_path / "arts" / "bad1.md").unlink()
    (tmp_path / "arts" / "sub" / "bad2.md").unlink()
    assert [a.title for a in load_articles([tmp_path / "arts"], TZ)] == ["Good"]
