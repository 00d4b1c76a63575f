"""`newsletter bounces fetch`: read the bounce mailbox once and act on what came back.

Each mail is read, classified (`classify.classify`), and each of its events goes through
`policy.apply_event`, which records it in the ledger in its own transaction. Then:

- handled mail (every event recorded, or on record already; or an auto-reply or a delay
  notice, which are ignored) is let go of: moved to the processed folder, flagged or
  deleted, as the settings say. Only after its events are committed: a crash in between
  leaves it in the mailbox, the next fetch reads it again, and its events, on record by
  their ids, change nothing (they count as duplicates);
- mail that is not understood (a stranger's, a newsletter, a reply), or whose events
  name no delivery of ours (a forged or foreign token), or that cannot be read (too
  large), is left where it is, untouched, and reported with the reason.

So a second fetch changes nothing. Mail left in place is there again the next time, and
`bounces fetch` lists it again each time: it is a report of what is in the mailbox for a
person to read, not an error. (The scheduler logs such mail once, when it first sees it.)

A ledger that cannot be written stops the fetch at once (`LedgerError`): the mail being
handled stays in the mailbox.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Literal

from newsletter.db import open_ledger
from newsletter.errors import Problem
from newsletter.inbound.classify import classify
from newsletter.inbound.mailbox import Mail, Mailbox, Unreadable, not_configured, open_mailbox
from newsletter.inbound.policy import apply_event
from newsletter.ledger import LedgerError, SqliteLedger
from newsletter.lock import ProcessLock
from newsletter.secret import existing_secret
from newsletter.settings import Settings

log = logging.getLogger("newsletter.bounces")

# What the report counts, in the order it shows them.
COUNTS = ("hard", "soft", "complaint", "unsubscribe", "delivered", "ignored", "duplicate",
          "unmatched", "unknown")
_BY_EVENT = {"bounce-hard": "hard", "bounce-soft": "soft", "complaint": "complaint",
             "unsubscribed": "unsubscribe", "delivered": "delivered"}
_IGNORED = ("auto-reply", "delayed")
_SEND_NOTE = "; whoever was not recorded as sent is still pending"
NO_ADDRESS = ("bounces.address is not set: messages go out without a VERP Return-Path, so "
              "bounces cannot be attributed to a reader (mailto unsubscribes and complaints "
              "that quote our headers still can); set it, e.g. bounces@bounce.example.com")


@dataclass(frozen=True)
class Left:
    """A mail left where it is, and why."""

    label: str  # "UID 17", "new/1700000000.M1P2.host"
    why: Literal["unknown", "unmatched", "unreadable"]
    reason: str
    sender: str = ""
    subject: str = ""

    def line(self, folder: str) -> str:
        about = "".join(f" {name} {value!r}" for name, value in (
            ("from", self.sender), ("subject", self.subject)) if value)
        return f"left in {folder}: {self.label}{about}: {self.reason}"


@dataclass
class FetchReport:
    source: str  # "INBOX on mail.example.com:993", "Maildir /var/mail/bounces"
    folder: str
    read: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    handled: int = 0
    left: list[Left] = field(default_factory=list)
    gone: int = 0  # taken by another client between listing and reading
    warnings: list[str] = field(default_factory=list)
    stopped: bool = False  # stopped early on SIGTERM; the rest waits for the next fetch

    def summary(self) -> str:
        """One line: what was read and what each mail was."""
        c = self.counts
        parts = [_n(c["hard"], "hard bounce"), _n(c["soft"], "soft bounce"),
                 _n(c["complaint"], "complaint"), _n(c["unsubscribe"], "unsubscribe")]
        if c["delivered"]:
            parts.append(f"{c['delivered']} delivered")
        parts += [f"{c['ignored']} ignored (auto-replies, delays)",
                  _n(c["duplicate"], "duplicate")]
        line = f"{_n(self.read, 'mail')} in {self.source}: {', '.join(parts)}"
        if self.suppressed:
            line += f"; {_n(self.suppressed, 'reader')} suppressed"
        if self.left:
            why = Counter(left.why for left in self.left)
            kinds = [f"{why['unknown']} not understood" if why["unknown"] else "",
                     f"{why['unmatched']} not ours" if why["unmatched"] else "",
                     f"{why['unreadable']} unreadable" if why["unreadable"] else ""]
            line += f"; {len(self.left)} left in {self.folder} ({', '.join(k for k in kinds if k)})"
        else:
            line += f"; nothing left in {self.folder}"
        if self.gone:
            line += f"; {self.gone} taken by another client meanwhile"
        if self.stopped:
            line += "; stopped early, the rest is read by the next fetch"
        return line

    def left_lines(self) -> list[str]:
        return [left.line(self.folder) for left in self.left]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def fetch(settings: Settings, ledger: SqliteLedger, mailbox: Mailbox, secret: str, *,
          stop: threading.Event | None = None) -> FetchReport:
    """Read every mail waiting in `mailbox` once; see the module docstring."""
    report = FetchReport(mailbox.name, mailbox.folder)
    if not settings.bounces.address:
        report.warnings.append(NO_ADDRESS)
    for mail in mailbox.messages():
        if stop is not None and stop.is_set():
            report.stopped = True
            break
        try:
            _one(settings, ledger, mailbox, secret, mail, report)
        except LedgerError as err:
            raise LedgerError(problems=[_for_fetch(p) for p in err.problems]) from err
    return report


def _for_fetch(problem: Problem) -> Problem:
    """The ledger's words are about sending; say what it means for the mailbox."""
    fix = (problem.fix or "").removesuffix(_SEND_NOTE)
    return replace(problem, fix=f"{fix}; the mail not handled yet stays in the mailbox for "
                                "the next fetch")


def _one(settings: Settings, ledger: SqliteLedger, mailbox: Mailbox, secret: str, mail: Mail,
         report: FetchReport) -> None:
    try:
        raw = mailbox.read(mail)
    except Unreadable as err:
        if err.gone:
            report.gone += 1
        else:
            report.read += 1
            report.counts["unknown"] += 1
            report.left.append(Left(mailbox.label(mail), "unreadable", str(err)))
        return
    report.read += 1
    try:
        found = classify(raw, secret=secret, bounces_address=settings.bounces.address)
    except Exception as err:  # hostile bytes must never stop the fetch
        log.debug("the classifier failed on %s", mailbox.label(mail), exc_info=True)
        report.counts["unknown"] += 1
        report.left.append(_left(mailbox, mail, raw, "unknown",
                                 f"not understood (the classifier failed: "
                                 f"{type(err).__name__})"))
        return
    if found.kind in _IGNORED:
        report.counts["ignored"] += 1
        mailbox.mark_handled(mail)
        report.handled += 1
        return
    if found.kind == "unknown" or not found.events:
        report.counts["unknown"] += 1
        report.left.append(_left(mailbox, mail, raw, "unknown",
                                 f"not understood ({_flat(found.summary)})"))
        return
    unmatched: list[str] = []
    for event in found.events:
        applied = apply_event(ledger, event, settings.bounces)  # committed when it returns
        if applied.outcome == "duplicate":
            report.counts["duplicate"] += 1
        elif applied.outcome == "unmatched":
            unmatched.append(applied.detail)
        else:
            report.counts[_BY_EVENT[event.kind]] += 1
            report.suppressed += applied.outcome == "suppressed"
    if unmatched:
        report.counts["unmatched"] += 1
        report.left.append(_left(mailbox, mail, raw, "unmatched",
                                 f"{_flat(found.summary)}, but not ours: {unmatched[0]}"))
        return
    mailbox.mark_handled(mail)
    report.handled += 1


def _left(mailbox: Mailbox, mail: Mail, raw: bytes, why: Literal["unknown", "unmatched"],
          reason: str) -> Left:
    sender, subject = _headers(raw)
    return Left(mailbox.label(mail), why, reason, sender, subject)


def _headers(raw: bytes) -> tuple[str, str]:
    """From and Subject, decoded, for a person to find the mail; "" when unreadable."""
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:64 * 1024])
        found = []
        for name in ("From", "Subject"):
            value = headers.get(name)
            if value is None:
                found.append("")
                continue
            try:
                text = str(make_header(decode_header(str(value))))
            except (LookupError, UnicodeError, ValueError):
                text = str(value)
            found.append(_flat(text, 80))
        return found[0], found[1]
    except Exception:  # a header that cannot be shown is left out
        return "", ""


def _flat(text: str, most: int = 300) -> str:
    """One printable line: no control characters (a terminal must not obey a mail)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= most else flat[:most - 1] + "…"


class LeftLogged:
    """What the scheduler already logged as left in the mailbox, per settings file: each
    such mail is logged when first seen, not at every fetch (it is still in the counts)."""

    def __init__(self) -> None:
        self._lines: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def new(self, key: str, report: FetchReport) -> list[str]:
        lines = report.left_lines()
        with self._lock:
            before = self._lines.get(key, set())
            self._lines[key] = set(lines)  # mail gone and back is news again
        return [line for line in lines if line not in before]


LEFT_LOGGED = LeftLogged()


def fetch_lock(settings: Settings) -> ProcessLock:
    """One fetch at a time (the scheduler's and one by hand; with PostgreSQL, on any
    machine)."""
    if settings.database_config.is_postgres:
        from newsletter.db.locks import DatabaseLock

        return DatabaseLock(settings.database_config, "bounces-fetch", "bounces fetch")
    return ProcessLock(settings.ledger.parent / "bounces-fetch.lock", "bounces fetch")


def run_fetch(settings: Settings, *, stop: threading.Event | None = None) -> FetchReport:
    """Open the mailbox and the ledger, fetch once, close both: what the command and the
    scheduler's job do. Errors are `NewsletterError`s (one line each); nothing is changed
    when the mailbox cannot be opened."""
    if settings.bounces.source is None:
        raise not_configured()
    # No secret yet means no token was ever sent: one nobody knows matches nothing.
    secret = existing_secret(settings) or secrets.token_urlsafe(32)
    lock = fetch_lock(settings)
    lock.acquire()
    try:
        with open_mailbox(settings.bounces) as mailbox:
            ledger = open_ledger(settings)
            try:
                return fetch(settings, ledger, mailbox, secret, stop=stop)
            finally:
                ledger.close()
    finally:
        lock.release()
