"""Rendering: CSS inlined once per issue, @media kept, personal fields filled per subscriber."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

import newsletter.render as render_module
from newsletter.digest import load_inputs, run_send
from newsletter.errors import TemplateError
from newsletter.models import Article, Issue
from newsletter.render import PersonalFields, Renderer
from newsletter.settings import NewsletterSection, load_settings
from tests.conftest import REPO, Project

NEWSLETTER = NewsletterSection(sender="The Brief <brief@example.com>",
                               postal_address="1 Quay Street, Harbourton")
LEAD = Article(id="lead", title="Bridge reopens", url="https://example.com/bridge",
               summary="The swing bridge is back.", body="It reopened.",
               body_html="<p>It reopened at <a href='https://example.com/x'>dawn</a>.</p>",
               author="Ann Writer", section="city", image="https://example.com/b.jpg",
               image_alt="The bridge at dawn",
               published=dt.datetime(2026, 11, 24, 6, tzinfo=dt.UTC))
HEADLINE = LEAD.model_copy(update={"id": "h", "title": "Ferry changes", "image": None,
                                   "url": "https://example.com/ferry", "summary": "Fewer boats."})
ISSUE = Issue(list_id="brief", list_title="The Brief", date=dt.date(2026, 11, 24), lead=LEAD,
              headlines=(HEADLINE,))
ADA = PersonalFields(email="ada@example.com", name="Ada Lovelace",
                     unsubscribe_url="https://example.com/unsubscribe?list=brief&email=ada")


@pytest.fixture
def rendered():
    return Renderer(REPO / "templates", NEWSLETTER).render(ISSUE)


def test_css_is_inlined_on_content_elements(rendered) -> None:
    html = rendered.html.fill(ADA)
    lead_title = re.search(r'<h2 class="lead-title" style="([^"]+)"', html)
    assert lead_title and "font-size:26px" in lead_title.group(1).replace(" ", "")
    assert re.search(r'<p class="headline-summary" style="[^"]*font-size:15px', html)
    assert re.search(r'<td class="footer" style="[^"]*font-size:12px', html)


def test_media_rules_stay_in_a_style_block_with_important(rendered) -> None:
    html = rendered.html.fill(ADA)
    [style] = re.findall(r"<style[^>]*>(.*?)</style>", html, re.S)
    assert "@media screen and (max-width: 620px)" in style
    assert "@media (prefers-color-scheme: dark)" in style
    assert "!important" in style
    assert ".lead-title {" not in style.split("@media")[0]  # plain rules were inlined
    assert "!important" not in html.split("</style>", 1)[1]  # never leaked into attributes


def test_email_structure(rendered) -> None:
    html = rendered.html.fill(ADA)
    assert html.startswith("<!DOCTYPE html>")
    assert '<html lang="en-GB"' in html
    assert html.count('role="presentation"') >= 3
    assert 'width="600"' in html and "max-width:600px" in html.replace(" ", "")
    assert re.search(r'<img [^>]*alt="The bridge at dawn"', html)
    assert re.search(r'<div class="preheader" style="display:none;[^"]*mso-hide:all', html)
    assert "The swing bridge is back." in html.split("</div>", 1)[0]
    assert "<!--[if mso]>" in html
    assert 'href="https://example.com/unsubscribe?list=brief&amp;email=ada"' in html
    assert "brief@example.com" in html and "1 Quay Street, Harbourton" in html


def test_personal_fields_are_filled_and_escaped(rendered) -> None:
    mallory = PersonalFields(email="m@example.com", name='<b>Mal</b> "&" Co',
                             unsubscribe_url="https://example.com/u?a=1&b=2")
    html, text = rendered.html.fill(mallory), rendered.text.fill(mallory)
    assert "Good morning, &lt;b&gt;Mal&lt;/b&gt;." in html
    assert "<b>Mal</b>" not in html
    assert 'href="https://example.com/u?a=1&amp;b=2"' in html
    assert "Good morning, <b>Mal</b>." in text
    assert "Unsubscribe: https://example.com/u?a=1&b=2" in text
    nameless = PersonalFields(email="x@example.com", unsubscribe_url="https://e.com/u")
    assert "Good morning, reader." in rendered.html.fill(nameless)
    assert "NLSLOT" not in html + text


def test_text_part_carries_the_lead_and_headlines(rendered) -> None:
    text = rendered.text.fill(ADA)
    assert "Good morning, Ada." in text
    assert "Bridge reopens" in text and "By Ann Writer" in text and "It reopened." in text
    assert "* Ferry changes (city)" in text and "https://example.com/ferry" in text
    assert all(len(line) <= 78 for line in text.splitlines())


def test_premailer_runs_once_per_issue_not_per_subscriber(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = render_module.Premailer

    class CountingPremailer(real):  # type: ignore[misc, valid-type]
        def transform(self, *args, **kwargs):
            calls.append(1)
            return super().transform(*args, **kwargs)

    monkeypatch.setattr(render_module, "Premailer", CountingPremailer)
    inputs = load_inputs(load_settings(project.settings))
    [report] = run_send(inputs, dt.date(2026, 11, 24), dt.datetime.now(dt.UTC), None)
    assert report.sent == 3
    assert len(calls) == 1


def test_users_can_point_templates_at_their_own_folder(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text(
        "<!DOCTYPE html><html><head><style>p { color: red }</style></head>"
        "<body><p>{{ issue.lead.title }} for {{ subscriber.email }}</p></body></html>")
    (tmp_path / "digest.txt").write_text("{{ issue.lead.title }} / {{ subscriber.email }}")
    rendered = Renderer(tmp_path, NEWSLETTER).render(ISSUE)
    assert '<p style="color:red">Bridge reopens for ada@example.com</p>' in rendered.html.fill(ADA)
    assert rendered.text.fill(ADA) == "Bridge reopens / ada@example.com\n"


def test_testing_a_personal_field_in_a_template_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text("<p>\n{% if subscriber.name %}Hi{% endif %}</p>")
    (tmp_path / "digest.txt").write_text("x")
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path, NEWSLETTER).render(ISSUE)
    [problem] = caught.value.problems
    assert problem.line == 2 and str(problem.file).endswith("digest.html")
    assert "or_else" in str(problem)


def test_list_items_in_the_text_part_keep_a_line_each() -> None:
    body = ("Openings return to the usual timetable:\n\n"
            "* on the hour from 7am to 7pm, and on the half hour at weekends when the "
            "tide allows it,\n"
            "* on request, at night.\n\n"
            "1. first\n2. second\n\n"
            "A paragraph\nbroken by its source - mid line.")
    assert render_module.wrap_paragraphs(body) == (
        "Openings return to the usual timetable:\n\n"
        "* on the hour from 7am to 7pm, and on the half hour at weekends when the\n"
        "  tide allows it,\n"
        "* on request, at night.\n\n"
        "1. first\n2. second\n\n"
        "A paragraph broken by its source - mid line.")


def test_variant_page_names_are_distinct_plain_ascii() -> None:
    lead = Article(id="a", title="A", published=dt.datetime(2026, 11, 24, tzinfo=dt.UTC))
    base = Issue(list_id="l", list_title="L", date=dt.date(2026, 11, 24), subject="S",
                 lead=lead)
    names = {topics: render_module.page_name(base.model_copy(update={"topics": topics}))
             for topics in [("c++",), ("c#",), ("local news",), ("local-news",), ("café",),
                            ("city", "sport")]}
    assert names[("city", "sport")] == "2026-11-24.city+sport"
    assert names[("local-news",)] == "2026-11-24.local-news"
    assert len(set(names.values())) == len(names)
    assert all(re.fullmatch(r"[a-z0-9.+-]+", name) for name in names.values())


@pytest.mark.parametrize(("code", "what"), [
    ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
    ("{% macro again(n) %}{{ again(n + 1) }}{% endmacro %}{{ again(0) }}",
     "endless recursion"),
    ("{{ [1, 2][5] }}", "list object has no element 5"),
    ("{{ '%d' % 'x' }}", "%d format: a real number is required, not str"),
])
def test_a_template_that_raises_is_one_error_line_naming_file_and_line(
        project: Project, code: str, what: str) -> None:
    template = project.templates / "digest.html"
    lines = template.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(20, f"{code}\n")  # line 21
    template.write_text("".join(lines), encoding="utf-8")
    result = project.run("preview", "--date", "2026-11-24")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"digest.html:21: template error: {what}" in error
    assert not (project.outbox / "preview").exists()


WIDTH = re.compile(r'\swidth="([^"]*)"')


def test_inlining_keeps_the_templates_pixel_widths_and_adds_no_height(rendered) -> None:
    """Outlook for Windows sizes images and tables from the attribute alone."""
    html = rendered.html.fill(ADA)
    source = (REPO / "templates" / "digest.html").read_text(encoding="utf-8")
    assert WIDTH.findall(html) == WIDTH.findall(source)  # every one, unchanged, in order
    assert re.search(r'<img class="lead-image"[^>]* width="536"', html)
    assert re.search(r'<table [^>]*class="container"[^>]* width="600"', html)
    assert not re.search(r'<[^>]+\sheight="', html)  # height="auto" is not HTML


def _contrast(one: str, two: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    def luminance(colour: str) -> float:
        channels = [int(colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
                   for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(one), luminance(two)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_lead_image_alt_text_reads_on_light_and_dark_backgrounds(rendered) -> None:
    """With images blocked the alt text shows in the img's own colour and font."""
    html = rendered.html.fill(ADA)
    style = re.search(r'<img class="lead-image"[^>]* style="([^"]*)"', html).group(1)
    colour = re.search(r"(?:^|;)\s*color:\s*(#[0-9a-f]{6})", style)
    assert colour, "the lead image has no colour of its own for its alt text"
    light = colour.group(1)
    assert "font-family:Arial" in style and "font-size:15px" in style
    container = re.search(r'class="container"[^>]* bgcolor="(#[0-9a-f]{6})"', html).group(1)
    assert _contrast(light, container) >= 4.5
    dark_css = html.split("@media (prefers-color-scheme: dark)", 1)[1].split("</style>")[0]
    rule = re.search(r"([^{}]*\.lead-image[^{}]*)\{([^}]*)\}", dark_css)
    assert rule, "no dark-mode rule for the lead image"
    dark = re.search(r"color:\s*(#[0-9a-f]{6})\s*!important", rule.group(2)).group(1)
    dark_bg = re.search(r"\.container\s*\{\s*background-color:\s*(#[0-9a-f]{6})",
                        dark_css).group(1)
    assert _contrast(dark, dark_bg) >= 4.5
