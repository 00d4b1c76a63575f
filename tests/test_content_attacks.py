"""Hostile article and feed content cannot stop a send, crash a run or break the splice:
markup nested deeper than the HTML parser reads, lone surrogates (from YAML or character
references), invalid character references in a feed."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from email import message_from_bytes, policy
from zoneinfo import ZoneInfo

import pytest

from newsletter.errors import TemplateError
from newsletter.fastmime import MessageTemplate
from newsletter.message import build_message
from newsletter.models import Subscriber
from newsletter.render import Renderer
from newsletter.sources.feed import parse_feed
from newsletter.sources.sanitize import MAX_DEPTH, MAX_HTML, absolute_url, clean_html
from newsletter.sources.text import one_line
from newsletter.sources.textpage import read_textpage
from tests.conftest import ISSUE_DATE, REPO, Project
from tests.test_render import ADA, ISSUE, LEAD, NEWSLETTER

TZ = ZoneInfo("Europe/London")
_TAG = re.compile(r"<(/?)([a-z0-9]+)[^>]*>")


def _depth(html: str) -> int:
    deepest = depth = 0
    for closing, name in _TAG.findall(html):
        if name in ("br", "hr", "img"):
            continue
        depth += -1 if closing else 1
        deepest = max(deepest, depth)
    return deepest


def _mail(rendered) -> str:
    built = MessageTemplate(rendered, NEWSLETTER, dt.datetime(2026, 11, 24, tzinfo=dt.UTC))
    msg = message_from_bytes(built.build(Subscriber(email="ada@example.com", name="Ada")).data,
                             policy=policy.default)
    return "".join(part.get_content() for part in msg.iter_parts())


@pytest.mark.parametrize("markup", [
    "<blockquote>" * 300 + "deep words" + "</blockquote>" * 300,
    "<p>" + "<em>" * 400 + "deep words" + "</em>" * 400 + "</p>",
    "<ul>" + "<li><ul>" * 200 + "<li>deep words</li>" + "</ul></li>" * 200 + "</ul>",
])
def test_deep_nesting_is_flattened_and_cannot_stop_the_render(markup: str) -> None:
    cleaned = clean_html(markup, None)
    assert _depth(cleaned.html) <= MAX_DEPTH
    assert "deep words" in cleaned.html
    assert any("nest" in item for item in cleaned.removed)
    lead = LEAD.model_copy(update={"body_html": cleaned.html})
    rendered = Renderer(REPO / "templates", NEWSLETTER).render(
        ISSUE.model_copy(update={"lead": lead}))
    html = rendered.html.fill(ADA)
    assert "deep words" in html and "ada@example.com" in html
    assert "unsubscribe?list=brief" in html


def test_ordinary_nesting_is_kept_as_written() -> None:
    markup = "<blockquote>" * 20 + "<p><em><strong>x</strong></em></p>" + "</blockquote>" * 20
    cleaned = clean_html(markup, None)
    assert cleaned.html == markup and cleaned.removed == ()


def test_a_deeply_nested_markdown_article_is_sent(project: Project) -> None:
    project.write("articles/2026-11-24-deep.md", "---\ntitle: Deep quotes\n"
                  "published: 2026-11-24T07:00:00+00:00\nlead: true\n---\n"
                  + "> " * 300 + "Deep words.\n")
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    mails = sorted((project.outbox / "mail").rglob("*.eml"))
    assert mails
    text = mails[0].read_text()
    assert "Deep words." in text


SURROGATES = "A\ud800B\udfffC"


def test_lone_surrogates_in_any_field_cannot_stop_the_render_or_the_build() -> None:
    lead = LEAD.model_copy(update={
        "title": SURROGATES, "summary": SURROGATES, "body": SURROGATES,
        "body_html": f"<p>{SURROGATES}</p>", "author": SURROGATES, "section": SURROGATES,
        "image_alt": SURROGATES, "url": f"https://example.com/{SURROGATES}"})
    issue = ISSUE.model_copy(update={"lead": lead, "list_title": SURROGATES})
    renderer = Renderer(REPO / "templates", NEWSLETTER)
    rendered = renderer.render(issue)
    assert "ada@example.com" in rendered.html.fill(ADA)
    body = _mail(rendered)
    assert "A\ufffdB\ufffdC" in body and "ada@example.com" in body
    assert "\ufffd" in renderer.render_web(issue)


FEED = """\
<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>F</title><link>https://f.example.com/</link>
<item><title>Hostile &#xD800; entry &#x110000; &#0;</title><link>https://f.example.com/a</link>
<pubDate>Tue, 24 Nov 2026 06:30:00 GMT</pubDate>
<description>Hello &#xDFFF; &amp;#xD800; world</description></item>
</channel></rss>
"""


def test_a_feed_with_invalid_character_references_is_read() -> None:
    load = parse_feed(FEED.encode(), "feed.xml")
    [article] = load.articles
    assert article.title.startswith("Hostile \ufffd entry")
    for value in (article.title, article.summary, article.body, article.body_html):
        value.encode("utf-8")  # no lone surrogate left
    assert "Hello" in article.body


def test_a_feed_with_invalid_character_references_is_sent(project: Project) -> None:
    project.write("feed.xml", FEED)
    settings = project.settings.read_text().replace(
        "  paths: [articles]\n", "  paths: [articles]\n  feeds: [feed.xml]\n")
    project.settings.write_text(settings)
    result = project.run("compose", "--date", ISSUE_DATE, "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Hostile" in result.stdout


@pytest.mark.parametrize("title", ["'   '", '"\\x00\\x01\\t"', '"\\u2028"'])
def test_a_title_without_text_is_one_clear_error(project: Project, title: str) -> None:
    project.write("articles/2026-11-24-blank.md", f"---\npublished: 2026-11-24T07:00:00+00:00\n"
                  f"title: {title}\nlead: true\n---\nBody words.\n")
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: articles/2026-11-24-blank.md:3: title: the title has no text — write the "
        "headline after 'title:'"]
    assert not (project.outbox / "mail").exists()


def test_feed_categories_and_front_matter_sections_are_one_line_of_text(
        project: Project) -> None:
    # A terminal escape in a category would reach `compose`'s output; a line break in a
    # section would start a line of its own in the text part.
    project.write("feed.xml", """\
        <?xml version="1.0"?><rss version="2.0"><channel><title>C</title>
        <item><title>Tide tables</title><link>https://c.example.org/1</link>
        <category>Tide&#27;]0;owned&#7;s</category><category>x&#10;&#10;Unsub</category>
        <pubDate>Tue, 24 Nov 2026 05:00:00 GMT</pubDate><description>Text.</description></item>
        </channel></rss>
        """)
    project.write("articles/2026-11-24-esc.md", '---\ntitle: Escapes\nsection: "a\\e[31m\\nb"\n'
                  'tags: ["t\\e]0;x\\a", "  "]\npublished: 2026-11-24T07:00:00+00:00\n---\n'
                  "Body.\n")
    settings = project.settings.read_text().replace(
        "  paths: [articles]\n", "  paths: [articles]\n  feeds: [feed.xml]\n")
    project.settings.write_text(settings)
    result = project.run("compose", "--date", ISSUE_DATE, "--explain")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout
    out = project.run("compose", "--date", ISSUE_DATE, "--json")
    articles = [json.loads(out.stdout)["lead"], *json.loads(out.stdout)["headlines"]]
    sections = {a["title"]: a["section"] for a in articles}
    assert sections["Tide tables"] == "tide ]0;owned s"
    assert sections["Escapes"] == "a [31m b"
    tags = {a["title"]: a.get("tags") for a in articles}
    assert tags["Tide tables"] == ["x unsub"]
    assert tags["Escapes"] == ["t ]0;x"]


def test_an_article_image_cannot_widen_the_mail_past_its_column() -> None:
    cleaned = clean_html('<p><img src="https://e.example/wide.png" alt="w" width="4000" '
                         'height="2000"><img src="https://e.example/n.png" alt="n" '
                         'width="300" height="200"></p>', None)
    assert 'width="536" height="268"' in cleaned.html  # Outlook sizes by the attribute
    assert 'width="300" height="200"' in cleaned.html
    lead = LEAD.model_copy(update={
        "body_html": '<p><img src="https://e.example/natural.png" alt="no size"></p>'})
    html = Renderer(REPO / "templates", NEWSLETTER).render(
        ISSUE.model_copy(update={"lead": lead})).html.fill(ADA)
    [img] = re.findall(r'<img src="https://e.example/natural.png"[^>]*>', html)
    assert "max-width:100%" in img.replace(" ", "")  # the rest: by the inlined CSS


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029", "\x9b"])
def test_a_link_with_a_line_separator_is_no_link(project: Project, char: str) -> None:
    # The text part prints links on lines of their own: a separator would cut one in two.
    assert absolute_url(f"https://e.example/a{char}b", None) is None
    assert clean_html(f'<p><a href="https://e.example/a{char}b">text</a></p>',
                      None).html == "<p>text</p>"
    escape = f"\\u{ord(char):04x}"
    project.write("articles/2026-11-24-sep.md", f'---\ntitle: Sep\nurl: "https://e.example/a'
                  f'{escape}b"\npublished: 2026-11-24T07:00:00+00:00\n---\nBody.\n')
    result = project.run("compose", "--date", ISSUE_DATE)
    assert result.returncode == 2
    assert "articles/2026-11-24-sep.md:3: url: must be an absolute http(s) URL" in result.stderr


def test_a_text_page_with_thousands_of_labels_is_read_in_linear_time(tmp_path) -> None:
    # Every summary starts with a label of its own, twice: section labels were learned by
    # comparing each with every other (10 s for 350 KB; hours for a page at the 10 MB cap).
    lines = ["Harbour bridge reopens after repairs",
             "The swing bridge reopened at dawn, ahead of schedule and under budget."]
    for i in range(5000):
        label = f"Q{i:05d}x Zz{i:05d}q"
        for k in range(2):
            lines += ["-", f"Headline {i} {k}", f"{label} Something happened today {i}",
                      f"https://e.example/{i}/{k}"]
    page = tmp_path / "page.txt"
    page.write_text("\n".join(lines))
    started = time.process_time()
    articles = read_textpage(page, TZ)
    assert time.process_time() - started < 3.0  # well under 1 s; 15 s before
    assert len(articles) == 10001
    assert articles[1].section == "Q00000X Zz00000Q"
    assert articles[1].summary == "Something happened today 0"


def test_a_long_story_is_read_in_linear_time(tmp_path) -> None:
    # Each paragraph was looked up in a list of those before it (4 minutes at the 10 MB cap).
    page = tmp_path / "page.txt"
    page.write_text("\n".join(["Harbour bridge reopens after repairs"] + [
        f"This is sentence number {i} of the story here." for i in range(40000)]
        + ["This is sentence number 7 of the story here."]))
    started = time.process_time()
    [story] = read_textpage(page, TZ)
    assert time.process_time() - started < 3.0  # under 1 s; 10 s before
    paragraphs = story.body.split("\n\n")
    assert len(paragraphs) == 40000 and paragraphs[7].endswith("number 7 of the story here.")


def test_no_content_string_is_longer_than_the_html_parser_reads() -> None:
    # lxml stops at a text node or attribute value of 10,000,000 characters, and both fit in
    # an article file or feed (10 MiB): the rest of the mail, unsubscribe link included,
    # was cut off, and every send stopped.
    huge = "ab " * 3_400_000
    cleaned = clean_html(f"<p>{huge}</p>", None)
    assert len(cleaned.html) <= MAX_HTML + 10
    assert any("cut" in item for item in cleaned.removed)
    assert len(one_line(huge)) <= 10_000
    assert absolute_url("https://e.example/" + "a" * 10_000, None) is None
    lead = LEAD.model_copy(update={
        "body_html": cleaned.html, "title": one_line(huge), "image_alt": one_line(huge),
        "summary": one_line(huge), "author": one_line(huge)})
    rendered = Renderer(REPO / "templates", NEWSLETTER).render(
        ISSUE.model_copy(update={"lead": lead}))
    html = rendered.html.fill(ADA)
    assert "ada@example.com" in html and "unsubscribe?list=brief" in html


@pytest.mark.parametrize("builder", ["fastmime", "reference"])
def test_an_encoded_word_look_alike_in_a_header_is_shown_as_written(builder: str) -> None:
    forged = "=?utf-8?b?SGk=?= fake =?x?q?y?="
    lead = LEAD.model_copy(update={"title": forged})
    issue = ISSUE.model_copy(update={"lead": lead, "list_title": f"List {forged}"})
    rendered = Renderer(REPO / "templates", NEWSLETTER).render(issue)
    reader = Subscriber(email="ada@example.com", name=forged)
    now = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    if builder == "fastmime":
        data = MessageTemplate(rendered, NEWSLETTER, now).build(reader).data
    else:
        data = build_message(rendered, reader, NEWSLETTER, now).data
    msg = message_from_bytes(data, policy=policy.default)
    assert str(msg["Subject"]) == f"List {forged}: {forged}"
    assert msg["To"].addresses[0].display_name == forged
    assert f"List {forged} <brief.example.com>" in str(msg["List-Id"]).replace('"', "")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_content_the_inliner_cannot_read_is_not_blamed_on_the_template() -> None:
    # Past the sources' limits (an Article built by other code): the error names content.
    lead = LEAD.model_copy(update={
        "body_html": "<blockquote>" * 300 + "x" + "</blockquote>" * 300})
    with pytest.raises(TemplateError) as caught:
        Renderer(REPO / "templates", NEWSLETTER).render(ISSUE.model_copy(update={"lead": lead}))
    assert "inlining the CSS lost a personal field" in str(caught.value)
    assert "Bridge reopens" in str(caught.value)
