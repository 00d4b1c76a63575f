"""The composer: lead choice, related ranking, near-duplicates, determinism, explain."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest

from newsletter.composer import compose, title_similarity
from newsletter.errors import ContentError
from newsletter.models import Article, SubscriberList

TZ = ZoneInfo("Europe/London")
DATE = dt.date(2026, 11, 24)
LIST = SubscriberList(id="brief", title="The Brief")


def art(id_: str, *, day: int = 24, hour: int = 6, body: str = "Text.", **kw) -> Article:
    return Article(id=id_, title=kw.pop("title", id_.title()), body=body,
                   published=dt.datetime(2026, 11, day, hour, tzinfo=dt.UTC), **kw)


def run(articles, headlines=8, max_age_days=2, **kw):
    return compose(articles, LIST, DATE, headlines=headlines, max_age_days=max_age_days,
                   tz=TZ, **kw)


def test_marked_lead_wins_over_newer_and_higher_priority() -> None:
    issue = run([art("new", hour=9), art("marked", hour=1, lead=True),
                 art("prio", priority=5)])
    assert issue.lead.id == "marked"


def test_highest_priority_wins_without_a_marked_lead() -> None:
    assert run([art("new", hour=9), art("prio", hour=1, priority=2)]).lead.id == "prio"


def test_otherwise_the_most_recent_article_with_a_body_leads() -> None:
    issue = run([art("newest-no-body", hour=9, body=""), art("older", hour=5),
                 art("oldest", day=23)])
    assert issue.lead.id == "older"
    assert issue.decisions[0].reasons == ["most recent article with a body"]


def test_related_ranking_prefers_shared_section_and_tags() -> None:
    lead = art("lead", lead=True, section="city", tags=("harbour", "transport"),
               title="Harbour bridge reopens")
    issue = run([
        lead,
        art("unrelated", hour=9, section="sport", title="Rowing club wins"),
        art("same-section", section="city", title="Council budget agreed"),
        art("same-tags", section="city", tags=("harbour", "transport"),
            title="Ferry timetable changes"),
    ])
    assert [a.id for a in issue.headlines] == ["same-tags", "same-section", "unrelated"]
    scores = {d.article_id: d.score for d in issue.decisions}
    assert scores["same-tags"] > scores["same-section"] > scores["unrelated"]


def test_candidates_exclude_future_stale_and_already_sent_articles() -> None:
    issue = run([art("today"), art("future", day=25), art("stale", day=20),
                 art("sent", day=23)], already_sent=frozenset({"sent"}))
    assert issue.lead.id == "today" and issue.headlines == ()
    reasons = {d.article_id: d.reasons[0] for d in issue.decisions if d.role == "dropped"}
    assert reasons == {
        "future": "published 2026-11-25, after the issue date",
        "stale": "published 2026-11-20, older than max_age_days (2)",
        "sent": "already sent to this list in an earlier issue",
    }


def test_near_duplicate_titles_are_dropped_but_similar_puzzles_kept() -> None:
    issue = run([
        art("lead", lead=True, title="Harbour bridge reopens"),
        art("ferry-1", hour=5, title="Harbour ferry timetable changes from Monday"),
        art("ferry-2", hour=4, title="Harbour ferry timetable changes start Monday"),
        art("crossword", title="Crossword: November 24, 2026"),
        art("codeword", title="Codeword: November 24, 2026"),
    ])
    ids = [a.id for a in issue.headlines]
    assert "ferry-1" in ids and "ferry-2" not in ids
    assert {"crossword", "codeword"} <= set(ids)
    dropped = next(d for d in issue.decisions if d.article_id == "ferry-2")
    assert dropped.reasons == ["near-duplicate of 'Harbour ferry timetable changes from Monday'"]


def test_headline_limit_is_explained() -> None:
    issue = run([art("lead", lead=True)] + [art(f"a{i}", hour=i) for i in range(5)],
                headlines=3)
    assert len(issue.headlines) == 3
    over = [d for d in issue.decisions if d.role == "dropped"]
    assert len(over) == 2 and all("beyond the 3-headline limit" in d.reasons[0] for d in over)


def test_same_inputs_in_any_order_give_the_same_issue() -> None:
    articles = [art(f"a{i}", day=23 + i % 2, hour=i % 3, section=["x", "y"][i % 2],
                    title=f"Story number {i} about {['boats', 'bridges'][i % 2]}")
                for i in range(12)]
    first = run(articles)
    for seed in range(5):
        shuffled = articles[:]
        random.Random(seed).shuffle(shuffled)
        again = run(shuffled)
        assert again == first


def test_no_articles_and_stale_articles_are_errors() -> None:
    with pytest.raises(ContentError, match="there are no articles"):
        run([])
    with pytest.raises(ContentError, match=r"newest \(2026-11-10\) is older than max_age_days"):
        run([art("old", day=10)])


def test_title_similarity_weights_dates_lightly() -> None:
    assert title_similarity("Crossword: October 18, 2025", "Codeword: October 18, 2025") < 0.5
    assert title_similarity("Ferry changes from Monday", "Ferry changes start Monday") >= 0.7
