"""Plain-text article pages, as saved from a news site.

The shape (see `shared/samples/the-week-article-page.txt`): the headline, the story's
paragraphs, site boilerplate (a tagline, sign-up promos, often duplicated), an author bio,
then related-headline blocks separated by lines holding a single `-`: a title line and a
summary line that may start with a section label such as "Speed Read".
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter.errors import ContentError, Problem
from newsletter.models import Article
from newsletter.sources.sanitize import absolute_url, sanitize_html
from newsletter.sources.text import ARTICLE_LIMIT, one_line, summarize
from newsletter.yamlfile import read_text

# A story paragraph reads as prose: several words ending in sentence punctuation.
_PROSE = re.compile(r"^(?:\S+\s+){3,}\S*[.!?…][\"'”’»)]*$")
_PROMO = re.compile(
    r"\b(sign up|subscribe|subscription|newsletters?|your inbox|free trial|follow us|"
    r"share this|advertisement|cookies?)\b",
    re.IGNORECASE,
)
_NAME_WORD = r"(?:[A-Z][\w.'’-]*|de|da|van|von|der|del|la|le|bin|al)"
_BIO = re.compile(
    rf"^(?P<name>[A-Z][\w.'’-]*(?:\s+{_NAME_WORD}){{1,4}})\s+(?:is|was)\s+(?:a|an|the)\b"
    r"[^.]{0,80}?\b(?:writer|reporter|editor|correspondent|journalist|columnist|"
    r"contributor|author|critic|producer|analyst)s?\b"
)
_FUNCTION_WORDS = {"the", "a", "an", "of", "in", "on", "at", "to", "for", "and", "or", "by"}
_URL = re.compile(r"^https?://\S+$")
# Labels a site prints before a summary. Others are learned from the page itself:
# a capitalised (or all-lowercase) run of two or three words that starts several summaries.
KNOWN_LABELS = (
    "speed read", "talking point", "the explainer", "today's big question",
    "in the spotlight", "instant opinion", "under the radar", "in depth",
    "the week recommends", "the week unwrapped", "why everyone's talking about",
)


def read_textpage(path: Path, tz: ZoneInfo,
                  warnings: list[Problem] | None = None) -> list[Article]:
    """Read one text page: its story (with body and byline), then each related headline.

    The page carries no date, so the file's modification time is its publication time.
    """
    text = read_text(path, "article page", ContentError, limit=ARTICLE_LIMIT).lstrip("\ufeff")
    lines = [one_line(line) for line in text.splitlines()]
    head, *blocks = _split_blocks(lines)
    head = [line for line in head if line]
    if not head:
        raise ContentError("the page is empty", file=path,
                           fix="put the headline on the first line, then the story")
    title, rest = head[0], head[1:]
    body, author = _story(rest)
    if not body:
        raise ContentError("no story paragraphs after the headline", file=path, line=1,
                           fix="follow the headline with the story's paragraphs")
    published = dt.datetime.fromtimestamp(path.stat().st_mtime, tz)
    story_id = path.as_posix()
    story = Article(
        id=story_id,
        title=title,
        summary=summarize("\n\n".join(body)),
        body="\n\n".join(body),
        # Escaped text, but through the one allow-list all article HTML goes through.
        body_html=sanitize_html(
            "\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in body), None),
        author=author,
        published=published,
        source=path,
    )
    related = _related(blocks)
    return [story] + [
        Article(
            id=f"{story_id}#{position}",
            title=title_,
            url=url,
            summary=summary,
            section=section,
            published=published,
            source=path,
            related_to=story_id,
            related_position=position,
        )
        for position, (title_, summary, section, url) in enumerate(related, start=1)
    ]


def _split_blocks(lines: list[str]) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line == "-":
            blocks.append([])
        else:
            blocks[-1].append(line)
    return blocks


def _story(lines: list[str]) -> tuple[list[str], str | None]:
    """The story paragraphs (up to the first boilerplate line, without repeats) and byline."""
    body: dict[str, None] = {}  # in order, each once (a set beside a list: no n² scan)
    author = None
    in_story = True
    for line in lines:
        bio = _BIO.match(line)
        if bio:
            author = author or bio.group("name")
            in_story = False
        elif in_story and _PROSE.match(line) and not _PROMO.search(line):
            body.setdefault(line)
        else:
            in_story = False
    return list(body), author


def _related(blocks: list[list[str]]) -> list[tuple[str, str, str | None, str | None]]:
    entries = []
    for block in blocks:
        content = [line for line in block if line]
        url = next((line for line in content
                    if _URL.match(line) and absolute_url(line, None) == line), None)
        content = [line for line in content if line != url]
        if content:
            entries.append((content[0], " ".join(content[1:]), url))
    labels = set(_labels([summary for _, summary, _ in entries]))
    most_words = max(len(label.split()) for label in labels)
    result = []
    for title, summary, url in entries:
        section = None
        label = _label_of(summary, labels, most_words)
        if label is not None:
            section = label.title().replace("'S", "'s")
            summary = summary[len(label):].strip()
        result.append((title, summary, section, url))
    return result


def _label_of(summary: str, labels: set[str], most_words: int) -> str | None:
    """The longest of `labels` that `summary` starts with, if any: only the summary's own
    first words are looked up, so a page with thousands of labels costs no more."""
    words = summary.split()
    for size in range(min(most_words, len(words) - 1), 0, -1):
        candidate = " ".join(words[:size]).lower()
        if candidate in labels and _starts_with_label(summary, candidate):
            return candidate
    return None


def _labels(summaries: list[str]) -> list[str]:
    """Known labels plus those that start two or more summaries, longest first."""
    counts: Counter[str] = Counter()
    for summary in summaries:
        words = summary.split()
        # Single words are too often a sentence's subject ("The", "Trump") to be a label.
        for size in (2, 3):
            candidate = " ".join(words[:size])
            if (len(words) > size and _starts_with_label(summary, candidate.lower())
                    and words[size - 1].lower() not in _FUNCTION_WORDS):
                counts[candidate.lower()] += 1
    learned = {label: n for label, n in counts.items() if n >= 2}
    # Keep only the best-supported length for labels that extend one another: a two-word
    # label and the three-word ones that start with it.
    longer: dict[str, int] = {}  # two-word label → the best count of one extending it
    for label, n in learned.items():
        head = label.rsplit(" ", 1)[0] if label.count(" ") == 2 else None
        if head is not None:
            longer[head] = max(longer.get(head, 0), n)
    kept = [label for label, n in learned.items()
            if longer.get(label, 0) <= n
            and (label.count(" ") < 2 or learned.get(label.rsplit(" ", 1)[0], 0) <= n)]
    return sorted(set(KNOWN_LABELS) | set(kept), key=lambda s: (-len(s), s))


def _starts_with_label(summary: str, label: str) -> bool:
    """A label is a Title-Case or lowercase run of words followed by a capitalised word."""
    size = len(label.split())
    words = summary.split()
    if len(words) <= size or " ".join(words[:size]).lower() != label:
        return False
    printed = words[:size]
    uniform = all(w[:1].isupper() for w in printed) or all(w.islower() for w in printed)
    return uniform and words[size][:1].isupper()
