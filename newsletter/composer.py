"""Choose an issue's lead article and related headlines. Pure: no files, no clock."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from newsletter.errors import ContentError, NothingNew
from newsletter.models import Article, Decision, Issue, SubscriberList

NEAR_DUPLICATE = 0.7
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that say little about what a story is; they count a quarter in title comparisons
# (so "Crossword: October 18" and "Codeword: October 18" stay two different things).
_WEAK = {
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "and", "or", "by", "with",
    "is", "are", "as", "its", "it", "after", "over", "new",
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
}


def compose(
    articles: Iterable[Article],
    subscriber_list: SubscriberList,
    date: dt.date,
    *,
    headlines: int,
    max_age_days: int,
    tz: ZoneInfo,
    already_sent: frozenset[str] = frozenset(),
    min_new: int = 1,
) -> Issue:
    """Build the issue of `subscriber_list` for `date`; same inputs, same issue.

    Fewer than `min_new` usable articles make a quiet day: `NothingNew`.
    """
    articles = sorted(articles, key=lambda a: a.id)
    if not articles:
        raise ContentError("there are no articles", field="articles.paths",
                           fix="add Markdown (.md) or text (.txt) articles to the folder")
    if subscriber_list.sections:
        articles = [a for a in articles if in_topics(a, subscriber_list.sections)]
        if not articles:
            raise ContentError(
                f"no articles in the sections of list {subscriber_list.id!r} ("
                + ", ".join(subscriber_list.sections) + ")", field="sections",
                fix="add articles with one of those sections, or change the list's sections")
    oldest = date - dt.timedelta(days=max_age_days)
    decisions: dict[str, Decision] = {}
    candidates = []
    for article in articles:
        day = article.published.astimezone(tz).date()
        reason = None
        if day > date:
            reason = f"published {day}, after the issue date"
        elif day < oldest:
            reason = f"published {day}, older than max_age_days ({max_age_days})"
        elif article.id in already_sent or not already_sent.isdisjoint(article.aliases):
            reason = "already sent to this list in an earlier issue"
        if reason:
            decisions[article.id] = Decision(article_id=article.id, title=article.title,
                                             role="dropped", reasons=[reason])
        else:
            candidates.append(article)
    if not candidates:
        repeats = sum(d.reasons == ["already sent to this list in an earlier issue"]
                      for d in decisions.values())
        if repeats:
            raise NothingNew(
                subscriber_list.id, date,
                f"the {repeats} recent article(s) were all in earlier issues",
                f"no new articles for {date}: the {repeats} recent one(s) were all in earlier "
                f"issues of {subscriber_list.id}", field="articles.paths",
                fix="add new articles before the next issue")
        stale = _stale_message(articles, date, tz, max_age_days)
        raise NothingNew(subscriber_list.id, date, stale.partition(": ")[2], stale,
                         field="articles.max_age_days",
                         fix="add newer articles, pick another --date, or raise max_age_days")
    if len(candidates) < min_new:
        raise NothingNew(
            subscriber_list.id, date,
            f"{len(candidates)} new article(s), fewer than articles.min_new ({min_new})",
            f"only {len(candidates)} new article(s) for {date} in list {subscriber_list.id}; "
            f"an issue needs articles.min_new ({min_new})", field="articles.min_new",
            fix="add new articles, or lower articles.min_new")

    lead, lead_reason = _pick_lead(candidates)
    decisions[lead.id] = Decision(article_id=lead.id, title=lead.title, role="lead",
                                  reasons=[lead_reason])
    scored = {a.id: relatedness(a, lead, date, tz, max_age_days)
              for a in candidates if a is not lead}
    ranked = sorted((c for c in candidates if c is not lead),
                    key=lambda a: _rank_key(a, lead, scored[a.id][0]))
    chosen: list[Article] = []
    for article in ranked:
        score, reasons = scored[article.id]
        duplicate = _near_duplicate_of(article, [lead, *chosen])
        if duplicate is not None:
            role, reasons = "dropped", [f"near-duplicate of {duplicate.title!r}"]
        elif len(chosen) >= headlines:
            role, reasons = "dropped", [f"beyond the {headlines}-headline limit", *reasons]
        else:
            role = "headline"
            chosen.append(article)
        decisions[article.id] = Decision(article_id=article.id, title=article.title,
                                         role=role, score=round(score, 3), reasons=reasons)
    order = {a.id: i for i, a in enumerate([lead, *chosen])}
    return Issue(
        list_id=subscriber_list.id,
        list_title=subscriber_list.title,
        date=date,
        lead=lead,
        headlines=tuple(chosen),
        decisions=tuple(sorted(decisions.values(),
                               key=lambda d: (order.get(d.article_id, len(order)),
                                              -(d.score or 0), d.title))),
    )


def in_topics(article: Article, topics: Iterable[str]) -> bool:
    """Whether the article's section or one of its tags is among `topics` (any case)."""
    wanted = {t.lower() for t in topics}
    return ((article.section or "").lower() in wanted
            or any(tag.lower() in wanted for tag in article.tags))


def compose_for_topics(
    articles: Iterable[Article],
    subscriber_list: SubscriberList,
    date: dt.date,
    topics: tuple[str, ...],
    general: Issue,
    **options: Any,
) -> Issue:
    """The variant for readers who chose `topics`: lead and headlines among those topics.

    When no usable article matches, it is the general issue (`fallback`), so nobody ever
    gets an empty email. `options` are `compose`'s keyword arguments.
    """
    matching = [a for a in articles if in_topics(a, topics)]
    try:
        issue = compose(matching, subscriber_list, date, **options) if matching else None
    except ContentError:
        issue = None
    if issue is None:
        return general.model_copy(update={"topics": topics, "fallback": True})
    return issue.model_copy(update={"topics": topics})


def _pick_lead(candidates: list[Article]) -> tuple[Article, str]:
    def newest(a: Article) -> tuple:
        return (-a.published.timestamp(), a.title, a.id)

    marked = [a for a in candidates if a.lead]
    if marked:
        best = min(marked, key=lambda a: (-a.priority, *newest(a)))
        return best, "marked lead: true" + (f" (of {len(marked)}, highest priority, newest)"
                                            if len(marked) > 1 else "")
    top = max(a.priority for a in candidates)
    if top > 0:
        best = min((a for a in candidates if a.priority == top), key=newest)
        return best, f"highest priority ({top})"
    with_body = [a for a in candidates if a.body.strip()]
    if with_body:
        return min(with_body, key=newest), "most recent article with a body"
    return min(candidates, key=newest), "most recent article (none has a body)"


def relatedness(article: Article, lead: Article, date: dt.date, tz: ZoneInfo,
                max_age_days: int) -> tuple[float, list[str]]:
    """Score how well `article` goes with `lead` (0–1), with the reasons that add up to it."""
    reasons = []
    score = 0.0
    if article.section and article.section == lead.section:
        score += 0.3
        reasons.append(f"same section ({article.section}) +0.3")
    shared_tags = set(article.tags) & set(lead.tags)
    if shared_tags:
        part = 0.3 * len(shared_tags) / len(set(article.tags) | set(lead.tags))
        score += part
        reasons.append(f"shared tags ({', '.join(sorted(shared_tags))}) +{part:.2f}")
    similarity = _jaccard(_words(f"{article.title} {article.summary}"),
                          _words(f"{lead.title} {lead.summary}"))
    if similarity:
        score += 0.3 * similarity
        reasons.append(f"similar wording +{0.3 * similarity:.2f}")
    age = (date - article.published.astimezone(tz).date()).days
    recency = 0.1 * (1 - age / (max_age_days + 1))
    score += recency
    reasons.append(f"{age} day(s) old +{recency:.2f}")
    if article.related_to == lead.id:
        reasons.insert(0, f"listed as related on the lead's page (#{article.related_position})")
    return score, reasons


def _rank_key(article: Article, lead: Article, score: float) -> tuple:
    # Headlines the lead's own page lists as related keep the page's order: an editor chose it.
    listed = article.related_to == lead.id
    return (not listed, article.related_position if listed else 0, -round(score, 9),
            -article.published.timestamp(), article.title, article.id)


def _near_duplicate_of(article: Article, kept: list[Article]) -> Article | None:
    for other in kept:
        if article.url and article.url == other.url:
            return other
        if title_similarity(article.title, other.title) >= NEAR_DUPLICATE:
            return other
    return None


def title_similarity(a: str, b: str) -> float:
    """Weighted word overlap of two titles (0–1); dates and small words count little."""
    words_a, words_b = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))

    def weight(words: set[str]) -> float:
        return sum(0.25 if w in _WEAK or w.isdigit() else 1.0 for w in words)

    union = weight(words_a | words_b)
    return weight(words_a & words_b) / union if union else 0.0


def strong_words(title: str) -> set[str]:
    """The words of a title that count fully in `title_similarity` (not small, not numbers)."""
    return {w for w in _WORD.findall(title.lower()) if w not in _WEAK and not w.isdigit()}


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _WEAK}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _stale_message(articles: list[Article], date: dt.date, tz: ZoneInfo, max_age: int) -> str:
    days = sorted(a.published.astimezone(tz).date() for a in articles)
    if days[0] > date:
        return f"no articles for {date}: all {len(days)} are dated later (first {days[0]})"
    newest = max(d for d in days if d <= date)
    return (f"no articles for {date}: the newest ({newest}) is older than "
            f"max_age_days ({max_age})")


def recompose(articles: Iterable[Article], subscriber_list: SubscriberList, date: dt.date,
              article_ids: tuple[str, ...]) -> Issue:
    """The issue the ledger recorded when it was first sent: same lead, same headlines."""
    by_id = {a.id: a for a in articles}
    missing = [a for a in article_ids if a not in by_id]
    if missing or not article_ids:
        raise ContentError(
            f"issue {subscriber_list.id}/{date} was recorded with articles that are gone: "
            + ", ".join(missing), field="articles.paths",
            fix="restore them: readers still waiting must get the issue the others got")
    lead, *headlines = (by_id[a] for a in article_ids)
    return Issue(
        list_id=subscriber_list.id, list_title=subscriber_list.title, date=date, lead=lead,
        headlines=tuple(headlines),
        decisions=tuple(Decision(article_id=a.id, title=a.title,
                                 role="lead" if a is lead else "headline",
                                 reasons=["recorded when this issue was first sent"])
                        for a in (lead, *headlines)),
    )
