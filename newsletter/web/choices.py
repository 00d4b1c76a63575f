"""What a reader posted on the preference page, checked: name, topics, time zone, pause.

Everything here is untrusted. A name reaches the To header and the greeting of every
issue, so it is refused when it holds a control character or a bidirectional override
(white space, line breaks included, is folded into single spaces first), and it is short.
Topics must be the list's sections; a time zone must be in the tz database; a pause is 0
to 12 weeks. Messages are msgids with their values, translated by the page.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from newsletter.models import Subscriber
from newsletter.readers.store import Choices
from newsletter.settings import check_timezone
from newsletter.web.forms import Form

MAX_NAME = 200
MAX_WEEKS = 12
# Embeddings, overrides and isolates: they reorder what the reader, or whoever reads the
# publisher's logs, sees ("Ada" that displays as something else).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                  "\u200e\u200f\u061c"  # direction marks
                  "\u200b\u2060\ufeff")  # zero-width: "Ad\u200bmin" shows as "Admin"
_WEEKS = re.compile(r"0|[1-9]|1[0-2]")
Action = Literal["save", "leave", "resume"]
# A message for the page: a msgid of ours and the values it names (escaped by the page).
Note = tuple[str, dict[str, str]]


@dataclass(frozen=True)
class Current:
    """A reader's values as the next issue sees them."""

    name: str
    topics: tuple[str, ...]
    timezone: str  # "" the list's
    paused_until: dt.date | None

    @classmethod
    def of(cls, reader: Subscriber) -> Current:
        return cls(reader.name or "", reader.topics, reader.timezone or "",
                   reader.paused_until)

    def paused_on(self, day: dt.date) -> bool:
        return self.paused_until is not None and day < self.paused_until


@dataclass
class Posted:
    """The fields of one post, as typed (for showing the form again) and checked."""

    action: Action = "save"
    name: str = ""
    topics: tuple[str, ...] | None = None  # None: the list has no sections to choose
    timezone: str = ""
    weeks: int | None = None  # None: keep the pause as it is
    weeks_typed: str = ""
    errors: dict[str, Note] = field(default_factory=dict)


def read_posted(form: Form, sections: tuple[str, ...]) -> Posted:
    """The checked fields of `form`; `errors` names each field that is wrong."""
    posted = Posted()
    action = form.get("action", "save")
    if action in ("save", "leave", "resume"):
        posted.action = action  # type: ignore[assignment]
    else:
        posted.errors["action"] = ("Use one of the buttons of the form.", {})
    posted.name, name_error = clean_name(form.get("name"))
    if name_error:
        posted.errors["name"] = name_error
    chosen = form.getlist("topics")
    if sections:
        unknown = [t for t in chosen if t not in sections]
        if unknown:
            posted.errors["topics"] = ("%(topic)s is not a topic of this newsletter.",
                                       {"topic": unknown[0][:80]})
        posted.topics = tuple(s for s in sections if s in chosen)
    elif chosen:
        posted.errors["topics"] = ("This newsletter has no topics to choose.", {})
    posted.timezone = form.get("timezone").strip()
    if posted.timezone:
        try:
            check_timezone(posted.timezone)
        except ValueError:
            posted.errors["timezone"] = (
                "%(zone)s is not a time zone: use a name such as Europe/Berlin or "
                "America/New_York, or leave it empty.", {"zone": posted.timezone[:80]})
    posted.weeks_typed = form.get("pause_weeks")
    if posted.action == "resume":
        posted.weeks = 0
    elif posted.weeks_typed:
        if _WEEKS.fullmatch(posted.weeks_typed):
            posted.weeks = int(posted.weeks_typed)
        else:
            posted.errors["pause_weeks"] = ("Choose a pause of 0 to 12 weeks.", {})
    return posted


def clean_name(typed: str) -> tuple[str, Note | None]:
    """`typed` with its white space folded; and why it is refused, if it is."""
    name = " ".join(typed.split())
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI:
            return name, ("The name holds a character that cannot be shown (%(char)s).",
                          {"char": f"U+{ord(char):04X}"})
    if len(name) > MAX_NAME:
        return name, ("The name is too long: at most %(most)s characters.",
                      {"most": str(MAX_NAME)})
    return name, None


def choices_of(posted: Posted, now: Current, today: dt.date) -> Choices | None:
    """What to store for `posted` (only what differs from `now`); None for nothing."""
    name = posted.name if posted.name != now.name else None
    topics = (posted.topics if posted.topics is not None
              and set(posted.topics) != set(now.topics) else None)
    zone = posted.timezone if posted.timezone != now.timezone else None
    until: dt.date | None = None
    resume = False
    if posted.weeks == 0:
        resume = now.paused_until is not None
    elif posted.weeks is not None:
        until = today + dt.timedelta(weeks=posted.weeks)
    if name is None and topics is None and zone is None and until is None and not resume:
        return None
    return Choices(name=name, topics=topics, timezone=zone, paused_until=until, resume=resume)


def changes(before: Current, after: Current, today: dt.date) -> list[Note]:
    """What changed, for the page that says so. Dates are ISO here; the page formats."""
    notes: list[Note] = []
    if after.name != before.name:
        notes.append(("Name: %(name)s", {"name": after.name}) if after.name
                     else ("Name: none", {}))
    if after.topics != before.topics:
        notes.append(("Topics: %(topics)s", {"topics": ", ".join(after.topics)})
                      if after.topics else ("Topics: the whole issue", {}))
    if after.timezone != before.timezone:
        notes.append(("Time zone: %(zone)s", {"zone": after.timezone}) if after.timezone
                     else ("Time zone: the newsletter's own", {}))
    if after.paused_until != before.paused_until:
        if after.paused_on(today):
            notes.append(("Paused until %(date)s", {"date": str(after.paused_until)}))
        elif before.paused_on(today):
            notes.append(("Pause ended: the next issue comes as usual", {}))
    return notes
