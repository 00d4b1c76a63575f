"""What the rows of an import mean: our columns and those of the common exports, checked
like the subscriber file (`newsletter/subscribers.py`), every problem with its line.

Our columns: email, name, topics, timezone, status (what `subscribers export` writes).
Also understood, from the exports of other tools:

- Mailchimp: "Email Address", "First Name", "Last Name", TAGS, TIMEZONE, OPTIN_TIME,
  CONFIRM_TIME; its unsubscribed and cleaned exports carry UNSUB_TIME and CLEAN_TIME.
- Substack: email, name, email_disabled (true: they turned the emails off), created_at.
- Buttondown: email (or email_address), tags, subscriber_type (unactivated, unsubscribed,
  removed, spammy…), creation_date.
- Ghost: email, name, labels, subscribed_to_emails (false: not mailed), created_at.

Tags and labels are another tool's and free-form: those that are sections of the list
become topics, the others are reported and left. Our own `topics` column is checked as
the file's topics are: an unknown one is a mistake. A row whose status says the reader left
(unsubscribed, cleaned, …) is a suppression, never a reader: moving tools must not mail
people who left. Column names match whatever their case, spaces, `_` or `-`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from newsletter.addresses import InvalidAddress, normalize_address
from newsletter.errors import Problem
from newsletter.models import SubscriberList
from newsletter.readers.csvfile import Table
from newsletter.readers.store import NewReader, ReaderState
from newsletter.settings import check_timezone
from newsletter.suppressions import REASONS

Field = Literal["email", "name", "first_name", "last_name", "topics", "tags", "timezone",
                "status", "subscribed", "email_disabled", "unsub_time", "clean_time",
                "joined", "confirmed", "reason"]
# Normalised header (lower case, letters and digits only) → what it holds.
ALIASES: dict[str, Field] = {
    "email": "email", "emailaddress": "email",
    "name": "name", "fullname": "name",
    "firstname": "first_name", "fname": "first_name",
    "lastname": "last_name", "lname": "last_name",
    "topics": "topics",
    "tags": "tags", "labels": "tags",
    "timezone": "timezone",
    "status": "status", "subscribertype": "status",
    "subscribedtoemails": "subscribed",
    "emaildisabled": "email_disabled",
    "unsubtime": "unsub_time",
    "cleantime": "clean_time",
    "joined": "joined", "createdat": "joined", "creationdate": "joined",
    "optintime": "joined",
    "confirmed": "confirmed", "confirmtime": "confirmed",
    "suppressedreason": "reason",  # our export's: a complaint stays a complaint
}
PENDING = frozenset({"pending", "unconfirmed", "unactivated"})
READING = frozenset({"confirmed", "active", "subscribed", "regular", "premium", "free",
                     "paid", "comped", "gifted", "trialed", "unpaid", "churning", "paused",
                     "pastdue"})
LEFT = frozenset({"unsubscribed", "cleaned", "bounced", "removed", "spammy",
                  "undeliverable", "complained"})
_TRUE, _FALSE = frozenset({"true", "yes", "1", "t", "y"}), frozenset({"false", "no", "0",
                                                                      "f", "n"})
# Reader-typed names reach the To header and the greeting (see subscribers._CONTROL).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_ESCAPED = ("=", "+", "-", "@", "\t", "\r")  # what export.py guards with an apostrophe
LONGEST_NAME = 200


@dataclass(frozen=True)
class Left:
    """A row of someone who left in the old tool: suppressed here, never a reader."""

    address: str
    line: int
    why: str
    reason: str = "unsubscribed"  # our export's suppressed_reason, when it names one


@dataclass
class Plan:
    """What an import would do; nothing is written until it is complete and clean."""

    readers: list[tuple[NewReader, ReaderState, int]] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)
    used: dict[str, Field] = field(default_factory=dict)  # header → field
    ignored: list[str] = field(default_factory=list)
    ignored_tags: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def normalised(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def map_columns(header: tuple[str, ...], plan: Plan, name: str) -> dict[Field, int]:
    """Which cell holds what; the first column for a field wins, the rest are ignored."""
    where: dict[Field, int] = {}
    for index, title in enumerate(header):
        known = ALIASES.get(normalised(title))
        if known is None or known in where:
            plan.ignored.append(title or f"(column {index + 1}, no name)")
            continue
        where[known] = index
        plan.used[title] = known
    if "email" not in where:
        plan.problems.append(Problem(
            "no column of addresses", name, 1, fix="name one column 'email' (or 'Email "
            "Address'); the columns are: " + ", ".join(header)))
    return where


def plan_import(table: Table, lst: SubscriberList, state: ReaderState) -> Plan:
    """Check every row of `table` for list `lst`; readers get `state` unless their row
    says they are pending (a row never makes a reader more confirmed than `state`)."""
    plan = Plan()
    where = map_columns(table.header, plan, table.name)
    if plan.problems:
        return plan
    first_seen: dict[str, int] = {}
    for line, cells in table.rows:
        row = {key: _unescaped(cells[i]).strip() if i < len(cells) else ""
               for key, i in where.items()}
        _read_row(table.name, line, row, lst, state, plan, first_seen)
    return plan


def _read_row(name: str, line: int, row: dict[Field, str], lst: SubscriberList,
              state: ReaderState, plan: Plan, first_seen: dict[str, int]) -> None:
    problems = plan.problems
    before = len(problems)

    def problem(what: str, column: Field, fix: str | None = None) -> None:
        problems.append(Problem(what, name, line, field=column, fix=fix))

    raw = row.get("email", "")
    address = ""
    if not raw:
        problem("missing address", "email")
    else:
        try:
            address = normalize_address(raw)
        except InvalidAddress as err:
            problem(f"invalid address {raw!r}: {err}", "email")
    reader_name = row.get("name") or " ".join(
        part for part in (row.get("first_name", ""), row.get("last_name", "")) if part)
    if control := _CONTROL.search(reader_name):
        problem(f"the name holds a control character (U+{ord(control.group()):04X})", "name",
                "write it on one line")
    elif len(reader_name) > LONGEST_NAME:
        problem(f"the name is longer than {LONGEST_NAME} characters", "name")
    topics = _topics(row.get("topics", ""))
    if lst.sections and (unknown := [t for t in topics if t not in lst.sections]):
        problem(f"unknown topic {unknown[0]!r}: this list's sections are "
                + ", ".join(lst.sections), "topics", "pick topics from the list's 'sections'")
    for tag in _topics(row.get("tags", "")):
        if tag in lst.sections:
            topics = (*topics, tag) if tag not in topics else topics
        else:
            plan.ignored_tags[tag] += 1
    timezone = row.get("timezone") or None
    if timezone is not None:
        try:
            check_timezone(timezone)
        except ValueError as err:
            problem(f"timezone {timezone!r}: {err}", "timezone")
    why, pending = _status(row, problem)
    if len(problems) > before:
        return
    key = address.lower()
    if key in first_seen:
        plan.duplicates += 1
        plan.warnings.append(Problem(f"duplicate address {address} (ignored; the row on line "
                                     f"{first_seen[key]} wins)", name, line))
        return
    first_seen[key] = line
    if why is not None:
        reason = row.get("reason", "").lower()
        plan.left.append(Left(address, line, why, reason if reason in REASONS
                              else "unsubscribed"))
        return
    consent = {"via": "import", "file": name, "line": line}
    for stamp in ("joined", "confirmed"):
        if row.get(stamp):
            consent[f"{stamp}_before"] = row[stamp][:40]
    reader = NewReader(lst.id, address, " ".join(reader_name.split()) or None,
                       tuple(dict.fromkeys(topics)), timezone, consent)
    plan.readers.append((reader, "pending" if pending else state, line))


def _status(row: dict[Field, str], report: Callable[..., None]) -> tuple[str | None, bool]:
    """(why they left, or None; whether the row says pending)."""
    status = normalised(row.get("status", ""))
    why: str | None = None
    pending = False
    if status in LEFT:
        why = f"status {status} in the export"
    elif status in PENDING:
        pending = True
    elif status and status not in READING:
        report(f"unknown status {row['status']!r}", "status",
               "use pending, confirmed or unsubscribed (the exports' subscribed, "
               "unsubscribed, cleaned, unactivated… are understood too)")
    flags: tuple[tuple[Field, bool], ...] = (("subscribed", False), ("email_disabled", True))
    for column, left_when in flags:
        value = row.get(column, "").lower()
        if not value:
            continue
        if value not in _TRUE | _FALSE:
            report(f"{value!r} is neither true nor false", column)
        elif (value in _TRUE) == left_when and why is None:
            why = f"{column} {value} in the export"
    times: tuple[tuple[Field, str], ...] = (("unsub_time", "unsubscribed"),
                                            ("clean_time", "cleaned"))
    for column, label in times:
        if row.get(column) and why is None:
            why = f"{label} on {row[column][:40]} in the export"
    return why, pending


def _topics(cell: str) -> tuple[str, ...]:
    """`city, Culture` or Mailchimp's `"city","culture"` → ("city", "culture")."""
    words = (" ".join(part.strip().strip('"').split()).lower()
             for part in re.split(r"[,;|]", cell))
    return tuple(dict.fromkeys(w for w in words if w))


def _unescaped(cell: str) -> str:
    """A cell `subscribers export` guarded against spreadsheet formulas, as it was."""
    if cell.startswith("'") and cell[1:2] in _ESCAPED and cell[1:2]:
        return cell[1:]
    return cell
