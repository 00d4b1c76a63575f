"""Languages: dates in the list's locale, template strings from the templates' catalogs."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import shutil
from pathlib import Path

import pytest

import newsletter.render as render_module
from newsletter.errors import ConfigError, TemplateError
from newsletter.render import PersonalFields, Renderer, date_label
from tests.conftest import ISSUE_DATE, REPO, SUBSCRIBERS_YAML, Project
from tests.test_render import ISSUE, NEWSLETTER

ADA = PersonalFields(email="ada@example.com", name="Ada Lovelace",
                     unsubscribe_url="https://example.com/u?list=brief&email=ada")
MALLORY = PersonalFields(email="m@example.com", name="<&>Mal Lory",
                         unsubscribe_url="https://example.com/u?list=brief&email=m")
NAMELESS = PersonalFields(email="x@example.com", unsubscribe_url="https://example.com/u?x")

PO_HEADER = '''msgid ""
msgstr ""
"Content-Type: text/plain; charset=utf-8\\n"

'''


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(REPO / "templates", NEWSLETTER)


@pytest.fixture
def own_templates(tmp_path: Path) -> Path:
    """A copy of the project's templates that a test may change."""
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "templates", folder)
    return folder


def test_a_german_list_gets_german_dates_and_strings_in_both_parts(renderer: Renderer) -> None:
    rendered = renderer.render(ISSUE, locale="de_DE")
    html, text = rendered.html.fill(ADA), rendered.text.fill(ADA)
    assert '<html lang="de-DE"' in html
    for part in (html, text):
        assert "Dienstag, 24. November 2026" in part
        assert "Guten Morgen, Ada." in part
        assert "Von Ann Writer" in part
        assert "Den ganzen Artikel lesen" in part
        assert "Sie erhalten The Brief an die Adresse ada@example.com." in part
        assert "Good morning" not in part and "Tuesday" not in part
    assert "Im Browser ansehen</a>" in html and "Außerdem heute" in html
    assert ('Sie können sich jederzeit mit einem Klick '
            '<a href="https://example.com/u?list=brief&amp;email=ada"') in html
    assert "Im Browser ansehen: https://example.com/archive/brief/2026-11-24.html" in text
    assert "AUSSERDEM HEUTE\n---------------\n" in text
    assert "Abmelden: https://example.com/u?list=brief&email=ada" in text


def test_personal_fields_pass_through_translations_and_are_filled_per_subscriber(
        renderer: Renderer) -> None:
    rendered = renderer.render(ISSUE, locale="de_DE")
    html, text = rendered.html.fill(MALLORY), rendered.text.fill(MALLORY)
    assert "Guten Morgen, &lt;&amp;&gt;Mal." in html and "<&>Mal" not in html
    assert "Guten Morgen, <&>Mal." in text
    assert "an die Adresse m@example.com." in html + text
    assert "Guten Morgen, Ada." in rendered.html.fill(ADA)  # the same render, another reader
    # The fallback for a missing name is translated too, and filled like the name.
    assert "Guten Morgen, liebe Leserin, lieber Leser." in rendered.html.fill(NAMELESS)
    assert "Guten Morgen, liebe Leserin, lieber Leser." in rendered.text.fill(NAMELESS)
    assert "NLSLOT" not in html + text


def test_translated_html_still_escapes_what_the_issue_carries(renderer: Renderer) -> None:
    issue = ISSUE.model_copy(update={"list_title": "Q&A <Weekly>"})
    html = renderer.render(issue, locale="de_DE").html.fill(ADA)
    assert "Sie erhalten Q&amp;A &lt;Weekly&gt; an die Adresse" in html
    page = renderer.render_web(issue, locale="de_DE")
    assert ('Dies ist eine Ausgabe von Q&amp;A &lt;Weekly&gt;. '
            '<a href="index.html">Alle Ausgaben</a>.') in page


def test_the_default_is_the_newsletter_locale_british_english(renderer: Renderer) -> None:
    rendered = renderer.render(ISSUE)
    html, text = rendered.html.fill(ADA), rendered.text.fill(ADA)
    assert '<html lang="en-GB"' in html
    assert "Tuesday, 24 November 2026" in html and "Tuesday, 24 November 2026" in text
    assert "Good morning, Ada." in text and "View in browser</a>" in html
    assert "ALSO TODAY\n----------\n" in text
    assert "Good morning, reader." in rendered.text.fill(NAMELESS)
    us = Renderer(REPO / "templates", NEWSLETTER, locale="en_US").render(ISSUE)
    assert "Tuesday, November 24, 2026" in us.text.fill(ADA)
    german = NEWSLETTER.model_copy(update={"locale": "de_DE"})
    assert "Dienstag" in Renderer(REPO / "templates", german).render(ISSUE).text.fill(ADA)


def test_a_locale_without_a_catalog_gets_english_strings_and_its_own_dates(
        renderer: Renderer) -> None:
    rendered = renderer.render(ISSUE, locale="fr_FR")
    html, text = rendered.html.fill(ADA), rendered.text.fill(ADA)
    assert '<html lang="fr-FR"' in html
    assert "mardi 24 novembre 2026" in html and "mardi 24 novembre 2026" in text
    assert "Good morning, Ada." in text and "Read the full story" in html


def test_a_regional_locale_falls_back_to_its_language_catalog(
        own_templates: Path) -> None:
    # A de_CH catalog that translates one string; the rest comes from de.
    swiss = own_templates / "locale" / "de_CH" / "LC_MESSAGES" / "messages.po"
    swiss.parent.mkdir(parents=True)
    swiss.write_text(PO_HEADER + 'msgid "Also today"\nmsgstr "Ausserdem heute"\n')
    text = Renderer(own_templates, NEWSLETTER).render(ISSUE, locale="de_CH").text.fill(ADA)
    assert "AUSSERDEM HEUTE" in text and "Guten Morgen, Ada." in text
    austrian = Renderer(own_templates, NEWSLETTER).render(ISSUE, locale="de_AT")
    assert "Dienstag, 24. November 2026" in austrian.text.fill(ADA)
    assert "Guten Morgen, Ada." in austrian.text.fill(ADA)


def test_a_malformed_catalog_is_a_template_error_naming_file_and_line(
        own_templates: Path) -> None:
    catalog = own_templates / "locale" / "de" / "LC_MESSAGES" / "messages.po"
    catalog.write_text(PO_HEADER + 'msgid "Also today"\nmsgstr "Außerdem heute"\nthis is not po\n')
    with pytest.raises(TemplateError) as caught:
        Renderer(own_templates, NEWSLETTER).render(ISSUE, locale="de_DE")
    [problem] = caught.value.problems
    assert problem.file == catalog and problem.line == 7
    assert "malformed" in str(problem) and "on 6" not in str(problem)
    # English lists do not need the German catalog.
    assert "Good morning" in Renderer(own_templates, NEWSLETTER).render(ISSUE).text.fill(ADA)


@pytest.mark.parametrize(("msgid", "msgstr", "says"), [
    ("Good morning, %(name)s.", "Guten Morgen, %(nom)s.", "nom"),
    ("Also today", "Außerdem heute, %(x)s", "%(x)s"),  # a msgid without placeholders
    ("Also today", "100 % heute", "%%"),  # every translation is %-formatted
])
def test_a_translation_that_would_not_format_is_caught_before_rendering(
        own_templates: Path, msgid: str, msgstr: str, says: str) -> None:
    catalog = own_templates / "locale" / "de" / "LC_MESSAGES" / "messages.po"
    catalog.write_text(PO_HEADER + f'msgid "{msgid}"\nmsgstr "{msgstr}"\n')
    with pytest.raises(TemplateError) as caught:
        Renderer(own_templates, NEWSLETTER).render(ISSUE, locale="de")
    [problem] = caught.value.problems
    assert problem.file == catalog and problem.line == 5 and says in str(problem)


def test_a_catalog_that_is_not_utf8_is_a_template_error(own_templates: Path) -> None:
    catalog = own_templates / "locale" / "de" / "LC_MESSAGES" / "messages.po"
    catalog.write_bytes(PO_HEADER.encode() + b'msgid "Also today"\nmsgstr "Au\xdferdem"\n')
    with pytest.raises(TemplateError) as caught:
        Renderer(own_templates, NEWSLETTER).render(ISSUE, locale="de_DE")
    assert caught.value.problems[0].file == catalog


def test_an_unknown_locale_is_a_config_error(renderer: Renderer) -> None:
    with pytest.raises(ConfigError, match="unknown locale 'xx_YY'"):
        renderer.render(ISSUE, locale="xx_YY")


def test_template_authors_get_locale_aware_date_filters(tmp_path: Path) -> None:
    (tmp_path / "digest.html").write_text(
        '<html lang="{{ lang }}"><body><p>{{ issue.date | format_date("long") }}</p>'
        "<p>{{ issue.lead.published | format_datetime('short') }}</p></body></html>")
    (tmp_path / "digest.txt").write_text(
        "{{ locale }}: {{ issue.date | format_date }} {% trans %}Hello{% endtrans %}")
    rendered = Renderer(tmp_path, NEWSLETTER).render(ISSUE, locale="de_DE")
    html = rendered.html.fill(ADA)
    assert '<html lang="de-DE">' in html
    assert "<p>24. November 2026</p>" in html and "<p>24.11.26, 06:00</p>" in html
    # No locale/ folder: the template's own strings.
    assert rendered.text.fill(ADA) == "de_DE: 24.11.2026 Hello\n"
    # A moment in time is shown in the list's zone: 06:00 UTC is 07:00 in Berlin and
    # 19:00 in Auckland.
    for zone, shown in (("Europe/Berlin", "24.11.26, 07:00"), ("Pacific/Auckland",
                                                                "24.11.26, 19:00")):
        html = Renderer(tmp_path, NEWSLETTER).render(ISSUE, "de_DE", zone).html.fill(ADA)
        assert f"<p>{shown}</p>" in html, zone


def test_date_label_keeps_its_british_default() -> None:
    assert date_label(dt.date(2026, 11, 24)) == "Tuesday, 24 November 2026"
    assert date_label(dt.date(2026, 11, 24), "de_DE") == "Dienstag, 24. November 2026"


def test_premailer_runs_once_per_render_and_each_locale_is_set_up_once(
        renderer: Renderer, monkeypatch: pytest.MonkeyPatch) -> None:
    transforms, loads = [], []
    real_transform = render_module.Premailer.transform
    real_load = render_module.load_translations

    def counting_transform(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        transforms.append(1)
        return real_transform(self, *args, **kwargs)

    def counting_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        loads.append(1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(render_module.Premailer, "transform", counting_transform)
    monkeypatch.setattr(render_module, "load_translations", counting_load)
    german = [renderer.render(ISSUE, locale="de_DE") for _ in range(3)]
    assert len(transforms) == 3 and len(loads) == 1
    renderer.render(ISSUE)
    renderer.render_web(ISSUE, locale="de_DE")  # the archive page is never inlined
    assert len(transforms) == 4 and len(loads) == 2
    for reader in (ADA, MALLORY, NAMELESS):  # filling is free: no Jinja, no premailer
        german[0].html.fill(reader)
    assert len(transforms) == 4


def test_a_list_with_a_german_locale_is_sent_in_german(project: Project) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS_YAML.replace(
        "    title: The Morning Brief\n", "    title: The Morning Brief\n    locale: de_DE\n"))
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    eml = project.outbox / "mail" / "morning-brief" / ISSUE_DATE / "zoe@example.org.eml"
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Dienstag, 24. November 2026" in text and "Guten Morgen, Zoë." in text
    assert '<html lang="de-DE"' in html and "Guten Morgen, Zoë." in html
