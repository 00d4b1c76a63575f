"""Plain-text article pages, including the real sample from ../shared (skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.errors import ContentError
from newsletter.sources.textpage import read_textpage
from tests.conftest import SHARED_SAMPLE, Project

TZ = ZoneInfo("Europe/London")
RELATED = [
    ("President Trump: ‘waging war’ on Chicago", "Talking Point",
     "Federal agents are carrying out ‘increasingly aggressive’ immigration raids – but have "
     "sanctuary cities like Chicago brought it on themselves?"),
    ("Crossword: October 18, 2025", None, "The Week's daily crossword puzzle"),
    ("Codeword: October 18, 2025", None, "The Week's daily codeword puzzle"),
    ("DOJ indicts John Bolton over classified files", "Speed Read",
     "Continuing the trend of going after his political enemies, Trump prosecutes his former "
     "national security adviser"),
    ("Trump, Putin set summit as Zelenskyy lands in DC", "Speed Read",
     "Trump and Putin have agreed to meet in Budapest soon to discuss ending the war in Ukraine"),
    ("Courts deal setbacks to Trump’s Chicago operations", "Speed Read",
     "President Donald Trump cannot deploy the National Guard in Illinois"),
    ("Pentagon reporters turn in badges after refusing rules", "Speed Read",
     "They refused to sign a restrictive new press policy imposed by Defense Secretary "
     "Pete Hegseth"),
    ("Supreme Court points to gutting Voting Rights Act", "Speed Read",
     "States would no longer be required to consider race when drawing congressional maps"),
    ("Trump says he authorized covert CIA ops in Venezuela", "Speed Read",
     "He is also considering military strikes inside the country"),
    ("‘Vile, racist’ leaked chats roil Young Republicans", "Speed Read",
     "Leaders of Young Republican groups made racist, antisemitic and violent comments in "
     "private chats"),
    ("Trump ties $20B Argentina bailout to Milei votes", "Speed Read",
     "Trump will boost Argentina’s economy — if the country’s right-wing president wins "
     "upcoming elections"),
]

needs_sample = pytest.mark.skipif(not SHARED_SAMPLE.exists(), reason="../shared is absent")


@needs_sample
def test_sample_page_story_byline_and_body() -> None:
    story, *_ = read_textpage(SHARED_SAMPLE, TZ)
    assert story.title == "North Korea squashes Trump's hopes for diplomacy"
    assert story.author == "Kelly O'Meara Morales"
    paragraphs = story.body.split("\n\n")
    assert len(paragraphs) == 3
    assert paragraphs[0].startswith("President Trump may want to be friends")
    assert paragraphs[2].endswith('called Kim "short and fat."')
    for boilerplate in ("The Week", "Sign up", "newsletter", "staff writer", "Escape your"):
        assert boilerplate not in story.body
    assert len(set(paragraphs)) == 3
    assert story.body_html.count("<p>") == 3


@needs_sample
def test_sample_page_related_headlines_with_section_labels_split() -> None:
    story, *related = read_textpage(SHARED_SAMPLE, TZ)
    assert [(a.title, a.section, a.summary) for a in related] == RELATED
    assert all(a.related_to == story.id for a in related)
    assert [a.related_position for a in related] == list(range(1, 12))


@needs_sample
def test_compose_json_on_the_sample_keeps_the_page_order(project: Project) -> None:
    (project.articles).mkdir(exist_ok=True)
    for old in project.articles.iterdir():
        old.unlink()
    target = project.articles / "page.txt"
    target.write_bytes(SHARED_SAMPLE.read_bytes())
    settings = project.settings.read_text().replace("headlines: 8", "headlines: 12")
    project.settings.write_text(settings)
    result = project.run("compose", "--json")  # the copy is dated today: its mtime
    assert result.returncode == 0, result.stderr
    issue = json.loads(result.stdout)
    assert issue["lead"]["title"] == "North Korea squashes Trump's hopes for diplomacy"
    assert issue["lead"]["author"] == "Kelly O'Meara Morales"
    assert [(h["title"], h["section"], h["summary"]) for h in issue["headlines"]] == RELATED


def test_labels_are_learned_from_the_page_and_byline_from_bio(tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text(
        "Council votes on the new harbour wall\n\n"
        "The council voted on Tuesday to build a new harbour wall before next winter.\n"
        "The vote was close. Seven members voted for it and six against.\n"
        "Harbourton Herald\n"
        "Get our free newsletter every morning.\n"
        "Get our free newsletter every morning.\n"
        "Mara Quinn is a reporter covering local politics for the Herald.\n"
        "-\nMarket hall reopens\nCity Desk Traders return to the restored hall on Saturday\n"
        "-\nSchool bus routes change\ncity desk Three routes are merged from January\n"
        "-\nThe Herald quiz\nThe Herald's weekly quiz\n"
        "-\nLifeboat crew honoured\nhttps://herald.example.com/lifeboat\n",
        encoding="utf-8")
    story, *related = read_textpage(page, TZ)
    assert story.author == "Mara Quinn"
    assert story.body == ("The council voted on Tuesday to build a new harbour wall before next "
                          "winter.\n\nThe vote was close. Seven members voted for it and six "
                          "against.")
    assert [(a.title, a.section, a.summary, a.url) for a in related] == [
        ("Market hall reopens", "City Desk", "Traders return to the restored hall on Saturday",
         None),
        ("School bus routes change", "City Desk", "Three routes are merged from January", None),
        ("The Herald quiz", None, "The Herald's weekly quiz", None),
        ("Lifeboat crew honoured", None, "", "https://herald.example.com/lifeboat"),
    ]


def test_page_without_a_story_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.txt"
    page.write_text("Just a headline\n-\nRelated\nSpeed Read Something\n", encoding="utf-8")
    with pytest.raises(ContentError, match="no story paragraphs"):
        read_textpage(page, TZ)
