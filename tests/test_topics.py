"""Reader topics: one rendered variant per distinct choice of articles, never an empty email."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.composer import compose, compose_for_topics, in_topics
from newsletter.digest import _with_recorded, compose_edition, load_inputs, run_send
from newsletter.errors import ContentError
from newsletter.ledger import SqliteLedger
from newsletter.models import Article, SubscriberList
from newsletter.render import Renderer
from newsletter.settings import load_settings
from tests.conftest import ISSUE_DATE, Project

DATE = dt.date.fromisoformat(ISSUE_DATE)
NOW = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)
LONDON = ZoneInfo("Europe/London")
SUBSCRIBERS = """\
lists:
  morning-brief:
    title: The Morning Brief
    subscribers:
      - email: ada@example.com
        name: Ada Lovelace
      - email: city1@example.com
        topics: [city]
      - email: city2@example.com
        topics: [City]
      - email: arts@example.com
        topics: [culture, sport]
      - email: stars@example.com
        topics: [astronomy]
      - email: museums@example.com
        topics: "museums"
      - email: gone@example.com
        topics: [culture]
        status: unsubscribed
"""


def _article(id: str, section: str | None, tags: tuple[str, ...] = (), hours: int = 0) -> Article:
    published = dt.datetime(2026, 11, 24, 6, tzinfo=dt.UTC) - dt.timedelta(hours=hours)
    return Article(id=id, title=f"Story {id}", body="Text.", section=section, tags=tags,
                   published=published)


def test_topics_match_sections_and_tags_in_any_case() -> None:
    article = _article("a", "City", ("Harbour", "transport"))
    assert in_topics(article, ["city"]) and in_topics(article, ["HARBOUR"])
    assert not in_topics(article, ["culture", "sport"])
    assert not in_topics(_article("b", None), ["city"])


def test_a_topic_variant_takes_lead_and_headlines_among_its_topics() -> None:
    articles = [_article("city-new", "city", hours=1), _article("culture", "culture"),
                _article("city-old", "city", hours=5), _article("sport", "sport", ("rowing",))]
    lst = SubscriberList(id="l", title="L")
    options = {"headlines": 8, "max_age_days": 2, "tz": LONDON}
    general = compose(articles, lst, DATE, **options)
    assert general.lead.id == "culture"  # the newest
    variant = compose_for_topics(articles, lst, DATE, ("city",), general, **options)
    assert (variant.lead.id, [a.id for a in variant.headlines]) == ("city-new", ["city-old"])
    assert variant.topics == ("city",) and not variant.fallback
    rowing = compose_for_topics(articles, lst, DATE, ("rowing",), general, **options)
    assert (rowing.lead.id, rowing.headlines) == ("sport", ())


def test_topics_with_nothing_new_fall_back_to_the_general_issue() -> None:
    articles = [_article("city", "city"), _article("old-sport", "sport", hours=24 * 5)]
    lst = SubscriberList(id="l", title="L")
    options = {"headlines": 8, "max_age_days": 2, "tz": LONDON}
    general = compose(articles, lst, DATE, **options)
    for topics in (("astronomy",), ("sport",)):  # no such article; only a stale one
        variant = compose_for_topics(articles, lst, DATE, topics, general, **options)
        assert variant.fallback and variant.article_ids == general.article_ids


def test_a_list_with_sections_only_carries_those(project: Project) -> None:
    articles = [_article("city", "city"), _article("culture", "culture", hours=1)]
    lst = SubscriberList(id="arts", title="Arts", sections=("culture",))
    issue = compose(articles, lst, DATE, headlines=8, max_age_days=2, tz=LONDON)
    assert issue.article_ids == ("culture",)
    with pytest.raises(ContentError, match="no articles in the sections of list 'arts'"):
        compose(articles, SubscriberList(id="arts", title="A", sections=("sport",)), DATE,
                headlines=8, max_age_days=2, tz=LONDON)


def _messages(project: Project) -> dict[str, email.message.EmailMessage]:
    return {p.stem: email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in project.outbox.glob(f"mail/morning-brief/{ISSUE_DATE}/*.eml")}


def _parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    return text, html


def test_renderer_and_inliner_run_once_per_variant_and_everyone_gets_a_full_digest(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS)
    calls = {"render": 0, "inline": 0}
    real_render, real_inline = Renderer.render, Renderer._inline

    def counting_render(self, issue, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["render"] += 1
        return real_render(self, issue, *args, **kwargs)

    def counting_inline(self, html):  # type: ignore[no-untyped-def]
        calls["inline"] += 1
        return real_inline(self, html)

    monkeypatch.setattr(Renderer, "render", counting_render)
    monkeypatch.setattr(Renderer, "_inline", counting_inline)
    settings = load_settings(project.settings)
    inputs = load_inputs(settings)
    ledger = SqliteLedger(settings.ledger)
    try:
        [report] = run_send(inputs, DATE, NOW, ledger)
        edition = compose_edition(inputs, inputs.roster.select(None)[0], DATE, ledger)
    finally:
        ledger.close()
    # general (Ada, the astronomy fallback), city (×2), and one for culture+sport and
    # museums (a tag), which come to the same articles: three renders for six readers.
    assert len(edition.variants()) == 3
    assert calls == {"render": 3, "inline": 3}
    assert report.sent == 6 and report.ok
    messages = _messages(project)
    assert sorted(messages) == ["ada@example.com", "arts@example.com", "city1@example.com",
                                "city2@example.com", "museums@example.com",
                                "stars@example.com"]
    lead_of = {name: str(msg["Subject"]).split(": ", 1)[1] for name, msg in messages.items()}
    assert lead_of["ada@example.com"] == lead_of["stars@example.com"] == (
        "Harbour bridge reopens after repairs")
    assert lead_of["city1@example.com"] == lead_of["city2@example.com"] == (
        "Harbour bridge reopens after repairs")
    assert lead_of["arts@example.com"] == lead_of["museums@example.com"] == (
        "Museum opens a gallery of ship models")
    for name, msg in messages.items():
        text, html = _parts(msg)
        assert lead_of[name] in text and lead_of[name] in html, name
        assert name in text and name in html  # personal fields filled per reader
    city_text, _ = _parts(messages["city1@example.com"])
    assert "Ferry timetable changes" in city_text and "Museum opens" not in city_text
    general_text, _ = _parts(messages["ada@example.com"])
    assert "Ferry timetable changes" in general_text and "Museum opens" in general_text


def test_a_later_run_keeps_each_variant_as_first_sent(project: Project) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS)
    settings = load_settings(project.settings)
    ledger = SqliteLedger(settings.ledger)
    try:
        run_send(load_inputs(settings), DATE, NOW, ledger)
        first = ledger.variants(f"morning-brief/{ISSUE_DATE}")
        assert first["city"] == ("articles/2026-11-24-bridge.md", "articles/2026-11-24-ferry.md")
        # A newer culture story arrives; readers still waiting get what the others got.
        project.write("articles/2026-11-24-gallery.md", """\
            ---
            title: A new gallery on the quay
            published: 2026-11-24T06:30:00+00:00
            section: culture
            ---
            Paintings.
            """)
        inputs = load_inputs(load_settings(project.settings))
        edition = compose_edition(inputs, inputs.roster.select(None)[0], DATE, ledger)
        lead = edition.by_topics["culture,sport"].lead
        assert lead.title == "Museum opens a gallery of ship models"
        assert ledger.variants(f"morning-brief/{ISSUE_DATE}") == first
    finally:
        ledger.close()


def test_a_variant_is_recorded_only_when_a_reader_gets_it(project: Project) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS.replace("        topics: [city]\n", "")
                  .replace("        topics: [City]\n", ""))
    issue_id = f"morning-brief/{ISSUE_DATE}"
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        run_send(load_inputs(load_settings(project.settings)), DATE, NOW, ledger)
        assert "city" not in ledger.variants(issue_id)
        # city1 chooses city after having had the general issue: no one got a city variant,
        # so tomorrow's city readers must not have its articles counted as sent.
        project.write("config/subscribers.yaml", SUBSCRIBERS.replace(
            "        topics: [City]\n", ""))
        run_send(load_inputs(load_settings(project.settings)), DATE, NOW, ledger)
        assert "city" not in ledger.variants(issue_id)
        assert ledger.articles_sent_before("morning-brief", DATE + dt.timedelta(days=1),
                                           "city") == frozenset()
        # A new reader chose city: now someone gets that variant, and it is recorded.
        project.write("config/subscribers.yaml", SUBSCRIBERS.replace(
            "        topics: [City]\n", "") + "      - email: new@example.com\n"
                                               "        topics: [city]\n")
        run_send(load_inputs(load_settings(project.settings)), DATE, NOW, ledger)
        assert ledger.variants(issue_id)["city"] == (
            "articles/2026-11-24-bridge.md", "articles/2026-11-24-ferry.md")
        assert ledger.statuses(issue_id)["new@example.com"] == "sent"
    finally:
        ledger.close()


def test_compose_explain_shows_variants_and_their_readers(project: Project) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS)
    result = project.run("compose", "--date", ISSUE_DATE, "--explain")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ("3 variant(s) rendered for morning-brief: general (2 readers); topics city "
            "(2 readers); topics culture, sport | museums (2 readers)") in out
    assert "topics astronomy: no new article on them for 2026-11-24" in out
    assert out.count("why:") == 3
    data = json.loads(project.run("compose", "--date", ISSUE_DATE, "--json").stdout)
    assert data["lead"]["title"] == "Harbour bridge reopens after repairs"
    assert [(v["general"], v["subscribers"], v["topics"]) for v in data["variants"]] == [
        (True, 2, [["astronomy"]]), (False, 2, [["city"]]),
        (False, 2, [["culture", "sport"], ["museums"]])]


def test_preview_writes_each_variant(project: Project) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS)
    result = project.run("preview", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (project.outbox / "preview" / "morning-brief").glob("*.html"))
    assert names == ["2026-11-24.city.html", "2026-11-24.culture+sport.html", "2026-11-24.html"]
    one = project.run("preview", "--date", ISSUE_DATE, "--subscriber", "arts@example.com")
    page = (project.outbox / "preview" / "morning-brief" / "2026-11-24.arts@example.com.html"
            ).read_text()
    assert one.returncode == 0 and "Museum opens a gallery" in page and "arts@example.com" in page


def test_topics_must_be_the_lists_sections_when_it_has_some(project: Project) -> None:
    project.write("config/subscribers.yaml", """\
        lists:
          morning-brief:
            sections: [city, culture]
            locale: de_DE
            subscribers:
              - email: a@example.com
                topics: [city]
              - email: b@example.com
                topics: [sprot]
              - email: c@example.com
                topics: {city: yes}
              - email: d@example.com
                timezone: Europe/Londn
          other:
            locale: klingon
            timezone: Mars/Base
            subscribers: [e@example.com]
        """)
    result = project.run("subscribers", "check")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    assert any(":8: unknown topic 'sprot': this list's sections are city, culture" in line
               for line in errors), errors
    assert any(":10: 'topics' must be a list of sections or tags" in line for line in errors)
    assert any(":12: timezone 'Europe/Londn': unknown time zone" in line for line in errors)
    assert any(":15: locale 'klingon': unknown locale" in line for line in errors)
    assert any(":16: timezone 'Mars/Base': unknown time zone" in line for line in errors)


def test_view_in_browser_opens_the_readers_own_variant(project: Project) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS)
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    archive = project.outbox / "archive" / "morning-brief"
    assert sorted(p.name for p in archive.glob("*.html")) == [
        "2026-11-24.city.html", "2026-11-24.culture+sport.html", "2026-11-24.html",
        "index.html"]
    index = (archive / "index.html").read_text()
    assert index.count("<li>") == 1  # the index lists the general issue of each date
    for reader, page, lead in (("city1@example.com", "2026-11-24.city.html", "Harbour bridge"),
                               ("museums@example.com", "2026-11-24.culture+sport.html",
                                "Museum opens"),
                               ("ada@example.com", "2026-11-24.html", "Harbour bridge")):
        text, _ = _parts(_messages(project)[reader])
        assert f"https://news.example.com/archive/morning-brief/{page}" in text, reader
        assert lead in (archive / page).read_text()


def test_a_recorded_story_now_kept_under_another_feeds_id_is_not_added_twice(
        tmp_path: Path) -> None:
    published = dt.datetime(2026, 11, 24, 6, tzinfo=dt.UTC)
    recorded = Article(id="feed:a", title="Ferry timetable changes", published=published)
    now_kept = Article(id="feed:c", title="New ferry times", body="Longer.",
                       published=published, aliases=("feed:a",))
    other = Article(id="feed:gone", title="Gone from its feed", published=published)
    ledger = SqliteLedger(tmp_path / "newsletter.sqlite3")
    try:
        ledger.record_articles("l/2026-11-24", {a.id: a.model_dump_json()
                                                for a in (recorded, other)})
        pool = _with_recorded([now_kept], ledger, "l/2026-11-24")
    finally:
        ledger.close()
    assert [a.id for a in pool] == ["feed:c", "feed:gone"]


def test_a_warning_about_the_settings_is_printed_once_not_once_per_variant(
        project: Project) -> None:
    project.write("config/subscribers.yaml", SUBSCRIBERS)
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    variants = json.loads(project.run("compose", "--date", ISSUE_DATE, "--json").stdout)
    assert len(variants["variants"]) > 1  # several variants, each checked
    assert result.stderr.count("no DKIM key is set") == 1, result.stderr
