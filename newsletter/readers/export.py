"""`subscribers export`: a list's every reader as CSV or as a subscriber file.

What the tool knows of a list, merged: the file's readers with their own choices, confirmed
sign-ups and imports, pending ones, and the suppressions with their reasons, also of
addresses that are no reader (any more). The CSV imports back with `subscribers import`;
the YAML loads back as `subscribers.yaml` (suppressed readers as `status: unsubscribed`,
pending ones as comments, since a subscriber file has no "pending": they would be mailed).

Names are reader-typed: a CSV cell that a spreadsheet would run as a formula gets a
leading apostrophe (OWASP's advice), which `subscribers import` takes off again.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

from newsletter.ledger import ALL_LISTS
from newsletter.models import SubscriberList
from newsletter.readers.store import ReaderRow
from newsletter.suppressions import Suppression

COLUMNS = ("list", "email", "name", "topics", "timezone", "status", "origin", "state",
           "paused_until", "suppressed_reason", "suppressed_since", "joined", "confirmed")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Entry:
    """One address of one list, as exported."""

    list_id: str
    email: str
    name: str = ""
    topics: tuple[str, ...] = ()
    timezone: str = ""
    status: str = "confirmed"  # confirmed | pending | unsubscribed: what import reads
    origin: str = ""  # file | signup | import; "" for a suppression alone
    state: str = "confirmed"  # confirmed | pending | paused | suppressed | unsubscribed
    paused_until: str = ""
    reason: str = ""
    since: str = ""
    joined: str = ""
    confirmed: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.list_id, self.email, self.name, ",".join(self.topics), self.timezone,
                self.status, self.origin, self.state, self.paused_until, self.reason,
                self.since, self.joined, self.confirmed)


def entries(merged: SubscriberList, rows: Iterable[ReaderRow],
            suppressions: Iterable[Suppression], day: dt.date,
            elsewhere: frozenset[str] = frozenset()) -> list[Entry]:
    """Every address of list `merged` (the file merged with the database), its database
    rows and the suppressions of this list and of every list. A suppression of every
    list is left out for an address that is a reader of another list (`elsewhere`) and
    not of this one: that is the other list's data."""
    rows = list(rows)
    mine = {s.email.lower() for s in merged.subscribers} | {r.email for r in rows}
    gone: dict[str, Suppression] = {}
    for sup in suppressions:
        if sup.list_id == ALL_LISTS and sup.email in elsewhere and sup.email not in mine:
            continue
        # This list's own reason before one of every list: it says more.
        if sup.list_id == merged.id or (sup.list_id == ALL_LISTS and sup.email not in gone):
            gone[sup.email] = sup
    by_email = {r.email: r for r in rows}
    out: list[Entry] = []
    seen: set[str] = set()
    for s in merged.subscribers:
        key = s.email.lower()
        seen.add(key)
        row = by_email.get(key)
        state, status = "confirmed", "confirmed"
        if key in gone:
            state, status = "suppressed", "unsubscribed"
        elif s.status == "unsubscribed":
            state, status = "unsubscribed", "unsubscribed"
        elif s.paused_on(day):
            state = "paused"
        out.append(_entry(merged.id, s.email, s.name or "", s.topics, s.timezone or "",
                          status, s.origin, state, s.paused_until, gone.get(key), row))
    for row in by_email.values():
        if row.state != "pending" or row.email in seen:
            continue
        seen.add(row.email)
        suppressed = gone.get(row.email)
        out.append(_entry(merged.id, row.address, row.name or "", row.topics or (),
                          row.timezone or "", "unsubscribed" if suppressed else "pending",
                          row.origin, "suppressed" if suppressed else "pending", None,
                          suppressed, row))
    for key, sup in gone.items():
        if key not in seen:
            out.append(_entry(merged.id, sup.email, "", (), "", "unsubscribed", "",
                              "suppressed", None, sup, None))
    return out


def _entry(list_id: str, email: str, name: str, topics: tuple[str, ...], timezone: str,
           status: str, origin: str, state: str, paused: dt.date | None,
           suppression: Suppression | None, row: ReaderRow | None) -> Entry:
    consent = row.consent if row is not None else {}
    return Entry(list_id, email, name, topics, timezone, status, origin, state,
                 paused.isoformat() if paused else "",
                 suppression.reason if suppression else "",
                 suppression.created if suppression else "",
                 str(consent.get("joined", "")), str(consent.get("confirmed", "")))


def guarded(cell: str) -> str:
    """A cell no spreadsheet runs as a formula."""
    return f"'{cell}" if cell.startswith(_FORMULA) else cell


def to_csv(items: Iterable[Entry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for item in items:
        writer.writerow([guarded(cell) for cell in item.cells()])
    return out.getvalue()


def quoted(value: str) -> str:
    """`value` as a YAML double-quoted scalar (JSON's escapes are YAML's), anything a
    terminal or editor would not print as itself escaped."""
    text = json.dumps(value, ensure_ascii=False)
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
                   else f"\\U{ord(ch):08x}" for ch in text)


def _flow(values: Iterable[str]) -> str:
    return "[" + ", ".join(quoted(v) for v in values) + "]"


def to_yaml(lists: Iterable[tuple[SubscriberList, list[Entry]]], stamp: str) -> str:
    """A subscriber file of `lists`, each with its exported entries."""
    lines = [f"# newsletter subscribers export, {stamp}: subscribers.yaml merged with "
             "sign-ups, imports and",
             "# readers' own choices. Suppressed readers are `status: unsubscribed`; pending "
             "ones (not",
             "# confirmed, so never mailed) are comments.", "lists:"]
    for lst, items in lists:
        lines.append(f"  {lst.id}:")
        lines.append(f"    title: {quoted(lst.title)}")
        if lst.sections:
            lines.append(f"    sections: {_flow(lst.sections)}")
        if lst.locale:
            lines.append(f"    locale: {quoted(lst.locale)}")
        if lst.timezone:
            lines.append(f"    timezone: {quoted(lst.timezone)}")
        if lst.double_opt_in is not None:
            lines.append(f"    double_opt_in: {'true' if lst.double_opt_in else 'false'}")
        written = [i for i in items if i.state != "pending"]
        lines.append("    subscribers:" if written else "    subscribers: []")
        for item in items:
            lines.extend(_yaml_entry(item))
    return "\n".join(lines) + "\n"


def _yaml_entry(item: Entry) -> list[str]:
    about = [f"origin {item.origin}" if item.origin else "no reader",
             item.state] + [f"{label} {value}" for label, value in (
                 ("until", item.paused_until), ("reason", item.reason),
                 ("since", item.since), ("joined", item.joined),
                 ("confirmed", item.confirmed)) if value]
    # Our own words and stamps only, but a comment ends at a line break: keep it one line.
    note = "  # " + "".join(ch if ch.isprintable() else "?" for ch in ", ".join(about))
    if item.state == "pending":
        return [f"      # pending, gets no issue before confirming: {item.email}"]
    lines = [f"      - email: {quoted(item.email)}{note}"]
    if item.name:
        lines.append(f"        name: {quoted(item.name)}")
    if item.topics:
        lines.append(f"        topics: {_flow(item.topics)}")
    if item.timezone:
        lines.append(f"        timezone: {quoted(item.timezone)}")
    if item.status == "unsubscribed":
        lines.append("        status: unsubscribed")
    return lines
