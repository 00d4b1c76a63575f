"""Small text helpers shared by the readers."""

from __future__ import annotations

import re

from inscriptis import get_text

# An article file is read whole, then converted: larger is a mistake (and a long wait).
ARTICLE_LIMIT = 10 * 1024 * 1024
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s")
# C0 and C1 control characters and DEL: no place in a title, a name or a header.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Lone surrogates (a JSON escape) are no characters: nothing can encode them.
_SURROGATES = re.compile("[\ud800-\udfff]")
# A title, name or line longer than this is no line (and lxml, which inlines the mail's CSS,
# stops reading at an attribute of 10,000,000 characters): the rest is cut.
LINE_LIMIT = 10_000


def one_line(text: str) -> str:
    """`text` as one line of words: control characters and runs of white space become one
    space (a title reaches the Subject header, a name the To header)."""
    words = _SURROGATES.sub("\ufffd", _CONTROLS.sub(" ", text)).split()
    return " ".join(words)[:LINE_LIMIT].rstrip()


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML fragment: paragraphs separated by blank lines."""
    if not html.strip():
        return ""
    text = get_text(html)
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def summarize(body: str, limit: int = 200) -> str:
    """The first paragraph of `body`, cut at a sentence or word boundary within `limit`."""
    first = " ".join(body.strip().split("\n\n", 1)[0].split())
    if len(first) <= limit:
        return first
    cut = first[:limit]
    sentences = [m.end() for m in _SENTENCE_END.finditer(cut)]
    if sentences and sentences[-1] > limit // 2:
        return cut[:sentences[-1]].strip()
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "…"
