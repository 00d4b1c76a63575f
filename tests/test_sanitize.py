"""Article HTML from every source is cleaned to one email-safe allow-list, with a warning."""

from __future__ import annotations

import email
import email.policy
import re
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.errors import ContentError, Problem
from newsletter.sources.markdown import read_markdown
from newsletter.sources.sanitize import clean_html
from tests.conftest import ISSUE_DATE, Project

TZ = ZoneInfo("Europe/London")

# (Markdown body, what the warning names, text that must survive)
HOSTILE = [
    ("<script>alert('x!1')</script>Script text", "<script>", "Script text"),
    ('<p onclick="alert(\'x!1\')">Click text</p>', "onclick attribute", "Click text"),
    ('<p><iframe src="https://evil.example/frame"></iframe>Frame text</p>', "<iframe>",
     "Frame text"),
    ('<form action="https://evil.example/steal"><input name="pw">Form text</form>', "<form>",
     "Form text"),
    ('<p><input type="image" src="https://evil.example/i.png" formaction="https://evil.example/'
     'f">Input text</p>', "<input>", "Input text"),
    ("<svg><script>alert('x!1')</script></svg>Svg text", "<svg> with its content", "Svg text"),
    ('<svg onload="alert(\'x!1\')"/>Svg text', "<svg> with its content", "Svg text"),
    ('<math><mi xlink:href="javascript:alert(\'x!1\')">x</mi></math>Math text',
     "<math> with its content", "Math text"),
    ("<style>p{background:url(https://evil.example/css)}</style>Style text", "<style>",
     "Style text"),
    ('<p style="background:url(javascript:alert(\'x!1\'))">Styled text</p>', "style attribute",
     "Styled text"),
    ('<object data="https://evil.example/o.swf"></object>Object text', "<object>",
     "Object text"),
    ('<embed src="https://evil.example/e.swf">Embed text', "<embed>", "Embed text"),
    ("[Script link](javascript:x!1)", "javascript: link", "Script link"),
    ("[Mixed case](JaVaScRiPt:x!1)", "javascript: link", "Mixed case"),
    ('<a href="&#106;&#x61;vascript:alert(\'x!1\')">Entity link</a>', "javascript: link",
     "Entity link"),
    ('<a href=" javascript:alert(\'x!1\')">Space link</a>', "javascript: link", "Space link"),
    ('<a href="java&#x09;script:alert(\'x!1\')">Tab link</a>', "link", "Tab link"),
    ('<a href="vbscript:msgbox(\'x!1\')">VB link</a>', "vbscript: link", "VB link"),
    ('<a href="data:text/html;base64,PHNjcmlwdD4=">Data link</a>', "data: link", "Data link"),
    ("![Data image](data:image/svg+xml;base64,PHN2Zz4=) Image text", "data: image",
     "Image text"),
    ('<img src=x alt="" width="1" onerror="alert(\'x!1\')"> Error text', "onerror attribute",
     "Error text"),
    ('<base href="https://evil.example/">Base text', "<base>", "Base text"),
    ('<meta http-equiv="refresh" content="0;url=https://evil.example/">Meta text', "<meta>",
     "Meta text"),
    ('<link rel="stylesheet" href="https://evil.example/x.css">Link text', "<link>",
     "Link text"),
    ('<p><a href="https://news.example.com/ok" target="_blank" ping="https://evil.example/p">'
     "Ping link</a></p>", "ping attribute", "Ping link"),
]
# Nothing of these may reach a reader (lower-cased HTML of the mail or the archive page).
FORBIDDEN = ("alert(", "msgbox", "evil.example", "javascript:", "vbscript:", "data:", "<iframe",
             "<form", "<input", "<svg", "<math", "<object", "<embed", "<base", "refresh",
             "onclick", "onerror", "onload", "xlink", "formaction", "ping=",
             "x!1")  # the payloads' marker: a "!" is in no token or id, so never by chance


def _article(tmp_path: Path, body: str, name: str = "hostile.md", **front: str) -> Path:
    meta = {"title": "Hostile", "published": "2026-11-24T06:30:00+00:00",
            "url": "https://news.example.com/2026/11/hostile", **front}
    head = "".join(f"{key}: {value}\n" for key, value in meta.items())
    path = tmp_path / name
    path.write_text(f"---\n{head}---\nFirst paragraph.\n\n{body}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("body", "named", "text"), HOSTILE,
                         ids=[named for _, named, _ in HOSTILE])
def test_hostile_markdown_is_cleaned_with_a_warning_naming_the_article(
        tmp_path: Path, body: str, named: str, text: str) -> None:
    path = _article(tmp_path, body)
    warnings: list[Problem] = []
    [article] = read_markdown(path, TZ, warnings)
    cleaned = article.body_html.lower()
    assert not [bad for bad in FORBIDDEN if bad in cleaned], article.body_html
    assert text in article.body_html and text in article.body
    assert "first paragraph." in cleaned
    assert len(warnings) == 1 and warnings[0].file == path, warnings
    assert named in warnings[0].what and str(warnings[0]).startswith(f"{path}: removed ")


def test_ordinary_markdown_keeps_its_markup_and_gives_no_warning(tmp_path: Path) -> None:
    body = textwrap.dedent("""\
        ## Results

        | Crew | Time |
        |------|------|
        | Harbour | 12:01 |

        A footnote[^1], `code`, *stress*, a [relative link](/results) and an
        ![image](/img/crew.jpg "The crew").

        ```python
        print("<b>not markup</b>")
        ```

        <div class="note"><span id="n">Raw but harmless</span></div>

        [^1]: Timed by the club.
        """)
    warnings: list[Problem] = []
    [article] = read_markdown(_article(tmp_path, body), TZ, warnings)
    assert warnings == []
    html = article.body_html
    assert "<h2>Results</h2>" in html and "<td>Harbour</td>" in html
    assert '<a href="https://news.example.com/results">relative link</a>' in html
    assert re.search(r'<img alt="image" src="https://news.example.com/img/crew.jpg"', html)
    assert "&lt;b&gt;not markup&lt;/b&gt;" in html and "Raw but harmless" in html
    assert "class=" not in html and "<div" not in html


def test_a_relative_link_without_an_article_url_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no-url.md"
    path.write_text("---\ntitle: T\npublished: 2026-11-24\n---\nSee [it](/about).\n")
    warnings: list[Problem] = []
    [article] = read_markdown(path, TZ, warnings)
    assert article.body_html == "<p>See it.</p>"
    assert [w.what for w in warnings] == ["removed relative link '/about'"]


def test_the_allow_list_is_the_feeds_one() -> None:
    cleaned = clean_html('<p><a href="mailto:desk@example.com">mail</a><img src="cid:1">'
                         '<img src="https://img.example.com/a.png" width="100%"></p>', None)
    assert cleaned.html == ('<p><a href="mailto:desk@example.com">mail</a>'
                            '<img src="https://img.example.com/a.png" alt=""></p>')
    assert cleaned.removed == ("cid: image",)


@pytest.mark.parametrize(("key", "value"), [
    ("url", "javascript:alert(1)"),
    ("url", "JaVaScRiPt:alert(1)"),
    ("url", '" https://news.example.com/a"'),
    ("url", '"https://news.example.com/\\x01a"'),
    ("url", "/2026/11/relative"),
    ("url", "data:text/html,hello"),
    ("image", "data:image/png;base64,AAAA"),
    ("image", "vbscript:msgbox(1)"),
    ("image", '"https://img.example.com/a.png\\u0085"'),
])
def test_front_matter_links_and_images_must_be_http(tmp_path: Path, key: str,
                                                    value: str) -> None:
    path = _article(tmp_path, "Text.", **{key: value})
    with pytest.raises(ContentError) as caught:
        read_markdown(path, TZ, [])
    [problem] = caught.value.problems
    assert (problem.file, problem.field) == (path, key)
    assert "absolute http(s) URL" in problem.what


# --- through the CLI: the mail, the archive page and the warning ----------------------------

def _html_parts(project: Project) -> list[str]:
    parts = []
    for path in sorted(project.outbox.rglob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = message.get_body(("html",))
        assert html is not None
        parts.append(html.get_content())
    return parts


def test_hostile_article_reaches_neither_mail_nor_archive_page(project: Project) -> None:
    body = "\n\n".join(markdown for markdown, _, _ in HOSTILE)
    project.write("articles/2026-11-24-hostile.md", """\
        ---
        title: "Hostile <script>alert('x!1')</script> title \\e[31m"
        author: "<b onclick=alert('x!1')>Eve</b>"
        summary: "<img src=x onerror=alert('x!1')>"
        published: 2026-11-24T06:30:00+00:00
        url: https://news.example.com/2026/11/hostile
        image: https://news.example.com/img/hostile.jpg
        image_alt: '"><script>alert(1)</script>'
        lead: true
        ---
        First paragraph.

        """ + textwrap.indent(body, " " * 8).lstrip())
    preview = project.run("preview", "--date", ISSUE_DATE)
    assert preview.returncode == 0, preview.stderr
    assert "warning: articles/2026-11-24-hostile.md: removed <script>, " in preview.stderr
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "removed" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("warning: articles/2026-11-24-hostile.md: removed <script>, ")
    for _, named, _ in HOSTILE:
        assert named in warnings[0]
    pages = _html_parts(project)
    pages.append(next(project.outbox.rglob(f"archive/*/{ISSUE_DATE}.html")).read_text())
    pages += [p.read_text() for p in project.outbox.rglob("preview/**/*.html")]
    assert len(pages) == 5  # three readers, the public page and the preview
    for page in pages:
        lead = page[page.index("First paragraph."):].lower()
        assert not [bad for bad in FORBIDDEN if bad in lead]
        for _, _, text in HOSTILE:
            assert text in page
        # Front matter text stays text: escaped, never markup.
        assert "&lt;script&gt;" in page and "<script" not in page.lower()
        assert "<b onclick" not in page and "&lt;b onclick" in page
        assert '"><script>' not in page
    subjects = {email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"]
                for p in project.outbox.rglob("*.eml")}
    assert all(not re.search(r"[\x00-\x1f\x7f]", s) for s in subjects), subjects
