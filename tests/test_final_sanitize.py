"""The sanitiser's output can neither stop a send nor misnest: every kept image has an `alt`
(so `check` cannot refuse an issue over a feed author's image), and the paragraphs it wraps
bare text into stay well-nested around inline markup that spans blank lines."""

from __future__ import annotations

import email
import email.policy
from html.parser import HTMLParser

import pytest

from newsletter.sources.sanitize import clean_html
from tests.conftest import ISSUE_DATE, Project
from tests.test_feed_pipeline import _use_feeds

IMAGE = "https://news.example.com/x.jpg"
_VOID = frozenset({"br", "hr", "img"})


# --- 1. an image without alt cannot block the issue --------------------------------------

def _sent_html(project: Project) -> list[str]:
    parts = []
    for path in sorted((project.outbox / "mail").rglob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = message.get_body(("html",))
        assert html is not None
        parts.append(html.get_content())
    return parts


def _check_then_send(project: Project) -> None:
    checked = project.run("check", "--date", ISSUE_DATE)
    assert "image without alt text" not in checked.stdout + checked.stderr, checked.stdout
    assert checked.returncode == 0, checked.stdout + checked.stderr
    sent = project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    parts = _sent_html(project)
    assert len(parts) == 3  # the three subscribed readers
    for html in parts:
        assert f'src="{IMAGE}"' in html
        [tag] = [t for t in html.split("<img")[1:] if f'src="{IMAGE}"' in t.split(">")[0]]
        assert ' alt=""' in tag.split(">")[0]


def test_a_markdown_image_without_alt_does_not_stop_the_send(project: Project) -> None:
    project.write("articles/2026-11-24-photo.md", f"""\
        ---
        title: A photo from the quay
        url: https://news.example.com/2026/11/photo
        published: 2026-11-24T07:00:00+00:00
        lead: true
        ---
        The quay at dawn.

        <img src="{IMAGE}">
        """)
    _check_then_send(project)


def test_a_feed_image_without_alt_does_not_stop_the_send(project: Project) -> None:
    for article in project.articles.iterdir():
        article.unlink()
    (project.root / "photos.xml").write_text(f"""\
<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Quay Photos</title><link>https://photos.example.org/</link>
<description>Pictures.</description>
<item><title>The quay at dawn</title><link>https://photos.example.org/1</link>
<pubDate>Tue, 24 Nov 2026 07:00:00 +0000</pubDate>
<description><![CDATA[<p>The quay at dawn.</p><img src="{IMAGE}">]]></description>
</item></channel></rss>
""", encoding="utf-8")
    _use_feeds(project, "photos.xml")
    _check_then_send(project)


@pytest.mark.parametrize(("markup", "expected"), [
    (f'<img src="{IMAGE}">', f'<p><img src="{IMAGE}" alt=""></p>'),
    (f'<img alt="The quay" src="{IMAGE}">', f'<p><img alt="The quay" src="{IMAGE}"></p>'),
    (f'<img alt="" src="{IMAGE}">', f'<p><img alt="" src="{IMAGE}"></p>'),
    (f'<img src="{IMAGE}" width="1072" height="600">',
     f'<p><img src="{IMAGE}" width="536" height="300" alt=""></p>'),
    # An attribute value that reads like an attribute is no source and no alt.
    (f'<img title="x alt=y" src="{IMAGE}">',
     f'<p><img title="x alt=y" src="{IMAGE}" alt=""></p>'),
    ('<img alt="a src=b">', ""),
    ('<img alt="a src=">', ""),
])
def test_every_kept_image_has_alt_and_a_source(markup: str, expected: str) -> None:
    assert clean_html(markup, None).html == expected


# --- 2. wrapped paragraphs are well-nested -------------------------------------------------

class _Nesting(HTMLParser):
    """Fails on an end tag that does not close the innermost open element, and on a
    paragraph inside a link or another paragraph."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.links: list[tuple[str, str]] = []  # (text, href of the innermost open link)
        self._hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        if tag == "p":
            assert "a" not in self.stack, f"<p> inside <a>: {self.stack}"
            assert "p" not in self.stack, f"<p> inside <p>: {self.stack}"
        if tag == "a":
            self._hrefs.append(dict(attrs).get("href") or "")
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in _VOID, tag

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack}"
        self.stack.pop()
        if tag == "a":
            self._hrefs.pop()

    def handle_data(self, data: str) -> None:
        assert not data.strip() or self.stack, f"text outside every element: {data!r}"
        if self._hrefs and data.strip():
            self.links.append((data.strip(), self._hrefs[-1]))


def _well_nested(html: str) -> _Nesting:
    checker = _Nesting()
    checker.feed(html)
    checker.close()
    assert checker.stack == [], f"left open: {checker.stack}"
    return checker


EVIL = '<a href="https://evil.example/">'


@pytest.mark.parametrize("markup", [
    f"{EVIL}one\n\ntwo\n\nthree</a>",
    f"{EVIL}one<br><br>two<br />\n<br>three</a>",
    "<b>one\n\n<i>two\n\nthree</i> four\n\nfive</b>",
    "<b>one\n\n<i>two</b>\n\nthree</i>",  # misnested by the author
    f"<i>{EVIL}<b>one\n\ntwo</b></a>\n\nthree</i>",
    f"<span>{EVIL}one\n\ntwo</a></span>\n\nthree",
    f"<div>{EVIL}one\n\ntwo</a></div>",
    f'{EVIL}one\n\n<img src="{IMAGE}">\n\ntwo</a>',
    "<q>one\n\ntwo</q>",
    '<abbr title="x">one\n\ntwo</abbr> three',
    "<code>one\n\ntwo</code>",
    "<sub>one\n\n<mark>two\n\nthree</mark></sub>",
    "<strong><em><u><s>one\n\ntwo\n\nthree</s></u></em></strong>",
    "<li>one\n\ntwo</li>",
    "<dd>one\n\ntwo</dd>",
    "<figcaption>one\n\ntwo</figcaption>",
    "one\n\ntwo\n\nthree",
])
def test_wrapped_paragraphs_are_well_nested(markup: str) -> None:
    html = clean_html(markup, None).html
    _well_nested(html)
    words = [w for w in ("one", "two", "three", "four", "five") if w in markup]
    text = html
    for word in words:  # every word kept, in order
        assert word in text, (word, html)
        text = text[text.index(word) + len(word):]


def test_a_link_over_blank_lines_stays_a_link_in_each_paragraph() -> None:
    html = clean_html(f"{EVIL}one\n\ntwo\n\nthree</a>", None).html
    checker = _well_nested(html)
    assert html.count("<p>") == 3
    assert checker.links == [(word, "https://evil.example/") for word in ("one", "two", "three")]
