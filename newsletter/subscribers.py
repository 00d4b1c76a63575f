"""Load `subscribers.yaml`: validate every entry, report every problem with its line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from newsletter.addresses import InvalidAddress, normalize_address
from newsletter.errors import ConfigError, Problem
from newsletter.models import Status, Subscriber, SubscriberList
from newsletter.settings import check_locale, check_timezone
from newsletter.spool import ReaderSpool
from newsletter.yamlfile import Location, YamlDocument, load_yaml

# List ids become folder names and the List-Id label, so keep them DNS-label friendly.
LIST_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LIST_KEYS = ("title", "subscribers", "sections", "locale", "timezone", "double_opt_in")
ENTRY_KEYS = ("email", "name", "status", "topics", "timezone")
STATUSES: tuple[str, ...] = get_args(Status)
# C0 and C1 controls and DEL (a tab is only white space). A list title reaches the List-Id
# header and the Subject, a reader's name the To header and the greeting: a CR or LF could
# start a header of its own, and the others garble what the reader sees.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


@dataclass
class Roster:
    """All subscriber lists of one file, plus the warnings found while reading it."""

    path: Path
    lists: dict[str, SubscriberList]
    warnings: list[Problem] = field(default_factory=list)

    def select(self, list_id: str | None) -> list[SubscriberList]:
        """The named list, or every list when `list_id` is None."""
        if list_id is None:
            return list(self.lists.values())
        if list_id not in self.lists:
            raise ConfigError(f"unknown list {list_id!r}", file=self.path, field="--list",
                              fix="lists in this file: " + ", ".join(self.lists))
        return [self.lists[list_id]]


def load_roster(path: Path) -> Roster:
    """Read the subscriber file; raise one `ConfigError` listing every problem in it.

    The entries are read one at a time as the parser reaches them, validated, and kept in
    a `ReaderSpool` on disk, so memory does not grow with the list.
    """
    if not path.exists():
        raise ConfigError("subscriber file not found", file=path,
                          fix="create it (see README) or set 'subscribers:' in the settings")
    entries = _Entries(path)
    # Entries: their own line is enough.
    doc = load_yaml(path, "subscriber file", key_depth=4, stream=_is_entries,
                    on_item=entries.add)
    entries.spool.done()
    problems: list[Problem] = list(doc.duplicate_keys) + entries.problems
    warnings: list[Problem] = []
    top = doc.data
    if not isinstance(top, dict) or not isinstance(top.get("lists"), dict) or not top["lists"]:
        raise ConfigError("expected a 'lists:' mapping with at least one list", file=path,
                          line=doc.line_of(("lists",)) or 1,
                          fix="see the example in README.md")
    lists: dict[str, SubscriberList] = {}
    for list_id, body in top["lists"].items():
        loaded = _read_list(doc, str(list_id), body, problems, warnings, entries)
        if loaded is not None:
            lists[loaded.id] = loaded
    for key in top:
        if key != "lists":
            problems.append(Problem(f"unknown key {key!r}", path, doc.line_of((key,)),
                                    fix="the file has one top-level key, 'lists'"))
    if problems:
        raise ConfigError(problems=sorted(problems, key=lambda p: p.line or 0))
    return Roster(path, lists, warnings)


def _is_entries(location: Location) -> bool:
    """`lists: {<id>: {subscribers: [...]}}`: the sequence whose items are streamed."""
    return len(location) == 3 and location[0] == "lists" and location[2] == "subscribers"


class _Entries:
    """The entries of every list, validated as the parser hands them over, into a spool."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spool = ReaderSpool()
        self.problems: list[Problem] = []
        self.items: dict[str, int] = {}  # entries seen per list, good or bad
        self.duplicates: dict[str, list[Problem]] = {}

    def add(self, location: Location, entry: Any, line: int) -> None:
        list_id = str(location[1])
        self.items[list_id] = self.items.get(list_id, 0) + 1
        if not LIST_ID.match(list_id):
            return  # the list itself is refused (by _read_list)
        # Topics are checked against the list's sections once the whole list is read: the
        # sections may come after the entries.
        subscriber = _read_entry(self.path, line, entry, self.problems)
        if subscriber is None:
            return
        first = self.spool.add(list_id, subscriber)
        if first is not None:
            self.duplicates.setdefault(list_id, []).append(Problem(
                f"duplicate address {subscriber.email} in list {list_id!r} (ignored; the "
                f"entry on line {first or None} wins)", self.path, line))

    def check_topics(self, list_id: str, sections: tuple[str, ...],
                     problems: list[Problem]) -> None:
        if not sections:
            return
        for line, topics in self.spool.topics(list_id):
            if unknown := [t for t in topics if t not in sections]:
                problems.append(Problem(f"unknown topic {unknown[0]!r}: this list's sections "
                                        "are " + ", ".join(sections), self.path, line,
                                        fix="pick topics from the list's 'sections'"))


def _read_list(doc: YamlDocument, list_id: str, body: Any, problems: list[Problem],
               warnings: list[Problem], entries: _Entries) -> SubscriberList | None:
    loc = ("lists", list_id)
    here = doc.line_of(loc)
    if not LIST_ID.match(list_id):
        problems.append(Problem(f"list name {list_id!r} is not allowed", doc.path, here,
                                fix="use lowercase letters, digits and '-', e.g. morning-brief"))
        return None
    if not isinstance(body, dict):
        problems.append(Problem(f"list {list_id!r} must be a mapping with 'subscribers:'",
                                doc.path, here))
        return None
    for key in body:
        if key not in LIST_KEYS:
            problems.append(Problem(f"unknown key {key!r} in list {list_id!r}", doc.path,
                                    doc.line_of((*loc, key)),
                                    fix="allowed keys: " + ", ".join(LIST_KEYS)))
    title = body.get("title", list_id)
    if not isinstance(title, str) or not title.strip():
        problems.append(Problem("title must be text", doc.path, doc.line_of((*loc, "title"))))
        title = list_id
    elif bad := _CONTROL.search(title):
        problems.append(Problem(
            f"the title of list {list_id!r} holds a control character ({_name(bad.group())})",
            doc.path, doc.line_of((*loc, "title")), field="title",
            fix="write it on one line, without escapes such as \\n or \\r"))
        title = list_id
    sections = _words_list(body.get("sections"))
    if sections is None:
        problems.append(Problem("'sections' must be a list of section names", doc.path,
                                doc.line_of((*loc, "sections")),
                                fix="e.g. sections: [city, culture]"))
        sections = ()
    locale = _checked(body.get("locale"), check_locale, "locale", doc.path,
                      doc.line_of((*loc, "locale")), problems)
    timezone = _checked(body.get("timezone"), check_timezone, "timezone", doc.path,
                        doc.line_of((*loc, "timezone")), problems)
    double_opt_in = body.get("double_opt_in")
    if double_opt_in is not None and not isinstance(double_opt_in, bool):
        problems.append(Problem("double_opt_in must be true or false", doc.path,
                                doc.line_of((*loc, "double_opt_in")), field="double_opt_in"))
        double_opt_in = None
    streamed = body.get("subscribers")
    if streamed and not isinstance(streamed, list):
        problems.append(Problem("'subscribers' must be a list of addresses", doc.path,
                                doc.line_of((*loc, "subscribers"))))
    entries.check_topics(list_id, sections, problems)
    warnings.extend(entries.duplicates.get(list_id, ()))
    if not entries.items.get(list_id):
        warnings.append(Problem(f"list {list_id!r} has no subscribers", doc.path, here))
    return SubscriberList(id=list_id, title=title.strip(),
                          subscribers=entries.spool.source(list_id), sections=sections,
                          locale=locale,
                          timezone=timezone and str(body["timezone"]),
                          double_opt_in=double_opt_in)


# Readers share a handful of topic choices and zones: one object each, not one per reader
# (100,000 readers would otherwise hold 100,000 copies).
_SHARED: dict[Any, Any] = {}


def _words_list(value: Any) -> tuple[str, ...] | None:
    """`[City, culture]` or `"city, culture"` → `("city", "culture")`; None if malformed."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    words: list[str] = []
    for v in value:
        word = " ".join(v.split()).lower()
        if word and word not in words:
            words.append(word)
    return _shared(tuple(words))


def _name(char: str) -> str:
    return {"\r": "CR", "\n": "LF"}.get(char, f"U+{ord(char):04X}")


def _shared(value: Any) -> Any:
    return _SHARED.setdefault(value, value)


def _checked(value: Any, check: Any, key: str, path: Path, line: int | None,
             problems: list[Problem]) -> Any:
    if value is None:
        return None
    try:
        return check(str(value))
    except ValueError as err:
        problems.append(Problem(f"{key} {value!r}: {err}", path, line))
        return None


def _read_entry(path: Path, line: int | None, entry: Any, problems: list[Problem],
                sections: tuple[str, ...] = ()) -> Subscriber | None:
    if isinstance(entry, str):
        entry = {"email": entry}
    if not isinstance(entry, dict):
        problems.append(Problem("an entry must be an address or a mapping with 'email:'",
                                path, line))
        return None
    bad = False
    for key in entry:
        if key not in ENTRY_KEYS:
            problems.append(Problem(f"unknown key {key!r}", path, line,
                                    fix="allowed keys: " + ", ".join(ENTRY_KEYS)))
            bad = True
    email, name, status = entry.get("email"), entry.get("name"), entry.get("status", "active")
    if not isinstance(email, str) or not email.strip():
        problems.append(Problem("missing 'email'", path, line))
        return None
    try:
        email = normalize_address(email)
    except InvalidAddress as err:
        problems.append(Problem(f"invalid address {entry['email']!r}: {err}", path, line))
        bad = True
    if name is not None and not isinstance(name, str):
        problems.append(Problem(f"name must be text, not {name!r}", path, line,
                                fix="quote it"))
        bad = True
    elif name is not None and (control := _CONTROL.search(name)):
        # Refused, not mended: the file is the publisher's, and a name that carries a
        # line break or an escape sequence is a mistake (or an attack) they should see.
        problems.append(Problem(f"name holds a control character ({_name(control.group())})",
                                path, line, field="name",
                                fix="write it on one line, without escapes such as \\n"))
        bad = True
    if status not in STATUSES:
        problems.append(Problem(f"unknown status {status!r}", path, line,
                                fix="use one of: " + ", ".join(STATUSES)))
        bad = True
    topics = _words_list(entry.get("topics"))
    if topics is None:
        problems.append(Problem("'topics' must be a list of sections or tags", path, line,
                                fix="e.g. topics: [city, culture]"))
        bad = True
    elif sections and (unknown := [t for t in topics if t not in sections]):
        problems.append(Problem(f"unknown topic {unknown[0]!r}: this list's sections are "
                                + ", ".join(sections), path, line,
                                fix="pick topics from the list's 'sections'"))
        bad = True
    timezone = entry.get("timezone")
    if timezone is not None and _checked(timezone, check_timezone, "timezone", path, line,
                                         problems) is None:
        bad = True
    if bad:
        return None
    clean_name = " ".join(name.split()) if name else None
    return Subscriber(email=email, name=clean_name or None, status=status, line=line,
                      topics=topics or (), timezone=timezone and _shared(str(timezone)))
