"""Markdown articles with YAML front matter."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import markdown
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from newsletter.errors import ContentError, NewsletterError, Problem
from newsletter.models import Article
from newsletter.sources.sanitize import absolute_url, clean_html
from newsletter.sources.text import ARTICLE_LIMIT, html_to_text, one_line, summarize
from newsletter.yamlfile import parse_yaml, read_text

_FENCE = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)
_WHAT_STAYS = ("the mail and the archive page keep only text, links (http, https, mailto) "
               "and images (http, https)")


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    published: dt.datetime | dt.date
    url: str | None = None
    summary: str | None = None
    author: str | None = None
    section: str | None = None
    tags: list[str] = Field(default_factory=list)
    image: str | None = None
    image_alt: str = ""
    lead: bool = False
    priority: int = 0
    draft: bool = False

    @field_validator("url", "image")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # These become a link and an image source in every reader's mail: http(s) only
        # (no javascript:, data: or relative link), and nothing a browser would trim first.
        if value is not None and absolute_url(value, None) != value:
            raise ValueError("must be an absolute http(s) URL, e.g. https://example.com/story")
        return value

    @field_validator("published")
    @classmethod
    def _plausible(cls, value: dt.datetime | dt.date) -> dt.datetime | dt.date:
        # Year 1 or 9999 is a placeholder, and overflows once moved to another time zone.
        if not 1970 <= value.year <= 2999:
            raise ValueError(f"year {value.year} is not a publication date")
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


def read_markdown(path: Path, tz: ZoneInfo,
                  warnings: list[Problem] | None = None) -> list[Article]:
    """Read one `*.md` file; a `draft: true` article yields nothing.

    Its HTML is cleaned to the email-safe allow-list; what that removed is added to
    `warnings`, naming the file.
    """
    text = read_text(path, "article", ContentError, limit=ARTICLE_LIMIT).lstrip("\ufeff")
    if not text.startswith("---"):
        raise ContentError("no front matter", file=path, line=1,
                           fix="start the file with a '---' line, 'title:' and 'published:'")
    end = _FENCE.search(text, 3)
    if end is None:
        raise ContentError("front matter is not closed", file=path, line=1,
                           fix="end it with a '---' line")
    try:
        doc = parse_yaml(text[text.index("\n") + 1:end.start()], path, first_line=2)
    except NewsletterError as err:
        raise ContentError(problems=err.problems) from err
    if not isinstance(doc.data, dict):
        raise ContentError("front matter must be a mapping of keys", file=path, line=2)
    try:
        meta = FrontMatter(**doc.data)
    except ValidationError as err:
        # One problem per key: a bad date fails both halves of `datetime | date`.
        first_error = {e["loc"][:1]: e for e in reversed(err.errors())}
        raise ContentError(problems=[
            Problem(_message(e), path, doc.line_of(key) or 1, str(key[0]))
            for key, e in sorted(first_error.items(), key=lambda item: doc.line_of(item[0]) or 1)
        ]) from err
    if meta.draft:
        return []
    title = one_line(meta.title)
    if not title:  # only spaces or control characters: no headline, and a Subject of none
        raise ContentError("the title has no text", file=path, line=doc.line_of(("title",)) or 2,
                           field="title", fix="write the headline after 'title:'")
    body_md = text[end.end():].strip("\n")
    raw_html = markdown.markdown(body_md, extensions=["extra", "sane_lists"]) if body_md else ""
    # Relative links and images are the article's own page's: resolved against its url.
    cleaned = clean_html(raw_html, meta.url)
    if cleaned.removed and warnings is not None:
        warnings.append(Problem("removed " + ", ".join(cleaned.removed), path, fix=_WHAT_STAYS))
    body = html_to_text(cleaned.html)
    return [Article(
        id=path.as_posix(),
        title=title,
        url=meta.url,
        summary=one_line(meta.summary) if meta.summary else summarize(body),
        body=body,
        body_html=cleaned.html,
        author=one_line(meta.author or "") or None,
        published=_aware(meta.published, tz),
        section=one_line(meta.section).lower() or None if meta.section else None,
        tags=tuple(sorted({one_line(t).lower() for t in meta.tags} - {""})),
        image=meta.image,
        image_alt=one_line(meta.image_alt),
        lead=meta.lead,
        priority=meta.priority,
        source=path,
    )]


def _aware(value: dt.datetime | dt.date, tz: ZoneInfo) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(0, 0))
    return value if value.tzinfo else value.replace(tzinfo=tz)


def _message(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown front matter key (allowed: " + ", ".join(FrontMatter.model_fields) + ")"
    if error["type"] == "missing":
        return "required front matter key is missing"
    if error["loc"][:1] == ("published",):
        reason = error["msg"].removeprefix("Value error, ")
        return ((reason + "; " if error["type"] == "value_error" else "not a date; ")
                + "write e.g. 2026-11-24 or 2026-11-24T06:30:00+00:00")
    return error["msg"].removeprefix("Value error, ")
