"""The records that cross stage boundaries: articles, subscribers, issues."""

from __future__ import annotations

import abc
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Generic, Literal, TypeVar

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


class ReaderSource(abc.ABC):
    """Readers kept out of memory (a file's list may hold millions): each pass over them
    reads them again, one at a time, so only the readers in hand are objects."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Subscriber]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def __bool__(self) -> bool:
        return len(self) > 0


T = TypeVar("T")
SAMPLE = 1000  # readers a report keeps by name, of each kind


class Sample(Generic[T]):
    """Every item counted, the first `keep` kept: a report's readers, flat however many.
    `len()` is the count; iterating gives the kept ones (all of them on a short list)."""

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self, items: Iterable[T] = (), keep: int = SAMPLE) -> None:
        self.kept: list[T] = []
        self.total = 0
        self.keep = keep
        self.extend(items)

    def append(self, item: T) -> None:
        self.total += 1
        if len(self.kept) < self.keep:
            self.kept.append(item)

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.append(item)

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[T]:
        return iter(self.kept)

    def __contains__(self, item: object) -> bool:
        return item in self.kept

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sample):
            return self.total == other.total and self.kept == other.kept
        if isinstance(other, list | tuple):
            return self.total == len(other) and self.kept == list(other[:self.keep])
        return NotImplemented

    def __repr__(self) -> str:
        return f"Sample({self.kept!r}, total={self.total})"


class Skipped(Sample[tuple["Subscriber", str]]):
    """Readers left out of a send with the reason, counted by kind of reason."""

    def __init__(self, items: Iterable[tuple[Subscriber, str]] = (), keep: int = SAMPLE) -> None:
        self.kinds: Counter[str] = Counter()
        super().__init__(items, keep)

    def append(self, item: tuple[Subscriber, str]) -> None:
        reason = item[1]
        self.kinds["unsubscribed" if reason == "unsubscribed" else
                   "paused" if reason.startswith("paused") else "other"] += 1
        super().append(item)


class SubscriberList(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    title: str
    # A tuple for a list built in memory; a `ReaderSource` for one read from a file. The
    # source is tried first: a "smart" union would also try to read it into a tuple.
    subscribers: ReaderSource | tuple[Subscriber, ...] = Field(default=(),
                                                               union_mode="left_to_right")
    # Only articles in these sections (lowercase) go to this list; empty means all.
    sections: tuple[str, ...] = ()
    locale: str | None = None  # None: the settings' newsletter.locale
    timezone: str | None = None  # None: schedule.timezone
    double_opt_in: bool | None = None  # None: signup.double_opt_in

    @property
    def active(self) -> list[Subscriber]:
        """The active readers, as a list: for small lists (iterate `subscribers` otherwise)."""
        return [s for s in self.subscribers if s.status == "active"]

    def count_active(self) -> int:
        """How many readers are active, in one pass."""
        return sum(s.status == "active" for s in self.subscribers)


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
