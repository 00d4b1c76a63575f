"""The records that cross stage boundaries: articles, subscribers, issues."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass


class Article(BaseModel):
    """One story, from any source. `body` is plain text; `body_html` the same as HTML."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    url: str | None = None
    summary: str = ""
    body: str = ""
    body_html: str = ""
    author: str | None = None
    published: dt.datetime
    section: str | None = None
    tags: tuple[str, ...] = ()
    image: str | None = None
    image_alt: str = ""
    lead: bool = False
    priority: int = 0
    source: Path | None = Field(default=None, exclude=True)
    # Set for headlines that a page lists as related to its own story: (story id, position).
    related_to: str | None = None
    related_position: int | None = None
    # Ids of the same story in other feeds (merged into this one): sent under any of them
    # is sent.
    aliases: tuple[str, ...] = ()


Status = Literal["active", "unsubscribed"]
# Where a reader came from: the publisher's file, the sign-up form, or an import.
Origin = Literal["file", "signup", "import"]


@pydantic_dataclass(frozen=True, slots=True)
class Subscriber:
    """One reader. A slotted dataclass, not a BaseModel: lists hold 100,000 of them."""

    email: str
    name: str | None = None
    status: Status = "active"
    line: int | None = None
    # Sections or tags the reader wants (lowercase); empty means the whole issue.
    topics: tuple[str, ...] = ()
    # IANA zone for local-time delivery; None means the list's (or the schedule's).
    timezone: str | None = None
    origin: Origin = "file"
    # The reader's own pause: no issue dated before this day.
    paused_until: dt.date | None = None

    def paused_on(self, day: dt.date) -> bool:
        return self.paused_until is not None and day < self.paused_until


class SubscriberList(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    subscribers: tuple[Subscriber, ...] = ()
    # Only articles in these sections (lowercase) go to this list; empty means all.
    sections: tuple[str, ...] = ()
    locale: str | None = None  # None: the settings' newsletter.locale
    timezone: str | None = None  # None: schedule.timezone
    double_opt_in: bool | None = None  # None: signup.double_opt_in

    @property
    def active(self) -> list[Subscriber]:
        return [s for s in self.subscribers if s.status == "active"]


class Decision(BaseModel):
    """Why the composer chose or dropped one article."""

    article_id: str
    title: str
    role: Literal["lead", "headline", "dropped"]
    score: float | None = None
    reasons: list[str] = Field(default_factory=list)


class Issue(BaseModel):
    """One composed digest: a list's lead article and related headlines for one date."""

    model_config = ConfigDict(frozen=True)

    list_id: str
    list_title: str
    date: dt.date
    lead: Article
    headlines: tuple[Article, ...] = ()
    decisions: tuple[Decision, ...] = ()
    # The topics this variant was chosen for; empty for the general issue.
    topics: tuple[str, ...] = ()
    # True when no article matched `topics` and the variant is the general issue.
    fallback: bool = False

    @property
    def id(self) -> str:
        """Stable for a list and date, e.g. `morning-brief/2026-11-24`; shared by variants."""
        return f"{self.list_id}/{self.date.isoformat()}"

    @property
    def article_ids(self) -> tuple[str, ...]:
        """Lead first, then the headlines: what tells two variants apart."""
        return (self.lead.id, *(a.id for a in self.headlines))


def topic_key(topics: tuple[str, ...]) -> str:
    """One name for a set of topics, whatever their order: `city,culture`."""
    return ",".join(sorted(topics))


class Edition(BaseModel):
    """A list's issue for one date: the general issue and one variant per topic choice."""

    model_config = ConfigDict(frozen=True)

    general: Issue
    # topic_key(topics) → the issue readers with those topics get (the general one if none fit).
    by_topics: dict[str, Issue] = Field(default_factory=dict)

    def issue_for(self, subscriber: Subscriber) -> Issue:
        if not subscriber.topics:
            return self.general
        return self.by_topics.get(topic_key(subscriber.topics), self.general)

    def variants(self) -> list[Issue]:
        """The distinct choices of articles, general first: each is rendered once."""
        seen: dict[tuple[str, ...], Issue] = {self.general.article_ids: self.general}
        for key in sorted(self.by_topics):
            seen.setdefault(self.by_topics[key].article_ids, self.by_topics[key])
        return list(seen.values())
